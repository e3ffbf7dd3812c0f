import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { splitArgv } from '../../cli/split-argv.js';
import { builtinPlugins, findPlugin } from '../../plugins/index.js';
import { DEFAULT_RENDERER, RENDERER_NAMES } from '../../output/registry.js';
import { writeOutput } from '../../output/write.js';
import { parsePluginArgs } from '../../runner/plugin-args.js';
import { runPluginsOnGuest } from '../../runner/run-plugins.js';
import { resolveLiveTarget } from '../../runner/target.js';
import { describePlugins } from '../../runner/plugin-list.js';

export default class PluginsRun extends VmiCommand {
  static override summary = 'Run introspection plugins against a guest (Volatility-style names and columns)';

  static override description = `Each plugin's system calls run inside the guest, in a short-lived shadow process that the
guest's own kernel serves, so no symbol table or profile is needed. Plugin options follow the
plugin name, Volatility-style. Several plugins share one attach.

Without --guest the built-in lab guest is used (booted first if it is not running).`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> pslist',
    '<%= config.bin %> <%= command.id %> pslist --threads --pid 1',
    '<%= config.bin %> <%= command.id %> pslist -r json',
    '<%= config.bin %> <%= command.id %> pslist -r arrow -o pslist.arrow',
    '<%= config.bin %> <%= command.id %> --list',
  ];

  static override strict = false;

  static override flags = {
    guest: Flags.string({ char: 'g', description: 'lab guest to inspect (default: lab, booted if needed)' }),
    renderer: Flags.string({
      char: 'r',
      description: 'output format',
      options: [...RENDERER_NAMES],
      default: DEFAULT_RENDERER,
    }),
    output: Flags.string({
      char: 'o',
      description: 'write to this file (or directory, one file per plugin)',
    }),
    transport: Flags.string({
      description:
        'how batches reach the shadow: doorbell (shared RAM, VM keeps running) or trap (VM stopped)',
      options: ['auto', 'doorbell', 'trap'],
      default: 'auto',
    }),
    list: Flags.boolean({ description: 'list the available plugins with their columns and options' }),
    timing: Flags.boolean({ description: 'print attach, per-plugin and total times to stderr' }),
  };

  async run(): Promise<void> {
    const started = performance.now();
    const { own, rest } = splitArgv(
      this.argv,
      new Set(['guest', 'g', 'renderer', 'r', 'output', 'o', 'transport']),
      new Set(['list', 'timing', 'help']),
    );
    const { flags } = await this.parse(PluginsRun, own);
    if (flags.list) {
      this.log(describePlugins(builtinPlugins));
      return;
    }
    try {
      const requests = parsePluginArgs(rest, findPlugin);
      if (requests.length === 0) throw new Error('name at least one plugin (see `vmi plugins:run --list`)');
      const progress = (m: string): void => this.progress(m);
      const guest = await resolveLiveTarget({ guest: flags.guest, progress });
      const run = await runPluginsOnGuest(guest, requests, {
        transport: flags.transport as 'auto' | 'doorbell' | 'trap',
        progress: flags.timing ? progress : undefined,
      });
      await writeOutput(run.tables, { format: flags.renderer, output: flags.output });
      for (const t of run.tables) {
        for (const e of t.errors) process.stderr.write(`vmi: ${t.plugin}: ${e}\n`);
      }
      if (flags.timing) {
        const s = run.session;
        const plugins = Object.entries(run.pluginMs)
          .map(([n, ms]) => `${n} ${ms.toFixed(1)} ms`)
          .join(', ');
        process.stderr.write(
          `vmi: attach ${s.attachMs.toFixed(1)} ms (${s.transport}, shadow pid ${s.shadowPid}, borrowed pid ${s.victimPid}); ${plugins}; ` +
            `${s.batches} batches, ${s.calls} syscalls; total ${(performance.now() - started).toFixed(1)} ms\n`,
        );
      }
    } catch (err) {
      this.fail(err);
    }
  }
}
