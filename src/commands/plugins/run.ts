import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { splitArgv } from '../../cli/split-argv.js';
import { builtinPlugins } from '../../plugins/index.js';
import { loadPluginRegistry } from '../../plugins/registry.js';
import { DEFAULT_RENDERER, RENDERER_NAMES } from '../../output/registry.js';
import { writeOutput } from '../../output/write.js';
import { parsePluginArgs } from '../../runner/plugin-args.js';
import { withForeignGuest } from '../../qemu/foreign.js';
import { withReplay } from '../../capture/replay.js';
import { runPluginsOnGuests } from '../../runner/multi-guest.js';
import { runPluginsOnGuest, type PluginsRun as GuestRun } from '../../runner/run-plugins.js';
import { resolveLiveTarget, resolveLiveTargets } from '../../runner/target.js';
import { describePlugins } from '../../runner/plugin-list.js';

export default class PluginsRun extends VmiCommand {
  static override summary = 'Run introspection plugins against a guest (Volatility-style names and columns)';

  // Paragraphs are single lines: oclif wraps them to the terminal width.
  static override description = `Each plugin's system calls run inside the guest, in a short-lived shadow process that the guest's own kernel serves, so no symbol table or profile is needed. Plugin options follow the plugin name, Volatility-style.

Several plugins share one attach; with -o DIR each table goes to DIR/<plugin>.<ext>. A plugin that fails is reported on stderr (\`vmi: error: PLUGIN: ...\`), the other plugins' tables are still written, and the exit code is 3.

Built-in plugins: ${builtinPlugins.map((p) => p.name).join(', ')}. --all runs every one of them with default options; \`vmi plugins available\` lists their columns and options (and the plugins of installed packs).

Without --guest the built-in lab guest is used (booted first if it is not running).
With several --guest flags or --all-guests the guests are inspected concurrently and every
table gets a leading GUEST column; a guest that fails is reported on stderr
(\`vmi: error: guest NAME: ...\`), the others' rows are kept, and the exit code is 3.
--qmp attaches to a QEMU that vmi did not start, through its QMP socket only: the gdbstub is
switched on for the run and off again afterwards (memory is read through it, so batches
use the trap transport).
--capture FILE inspects a capture instead: its parts are verified (sha256), then it is resumed in a disposable QEMU clone (no network, TCG, RAM copied to /dev/shm; the capture is never written) that every named plugin shares, and the clone is destroyed afterwards.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> pslist',
    '<%= config.bin %> <%= command.id %> pslist --threads --pid 1',
    '<%= config.bin %> <%= command.id %> pslist -r json',
    '<%= config.bin %> <%= command.id %> pslist -r arrow -o pslist.arrow',
    '<%= config.bin %> <%= command.id %> pslist psaux lsmod',
    '<%= config.bin %> <%= command.id %> pslist psaux -r parquet -o out/',
    '<%= config.bin %> <%= command.id %> --all -r parquet -o out/',
    '<%= config.bin %> <%= command.id %> pslist --guest a --guest b',
    '<%= config.bin %> <%= command.id %> pslist --all-guests',
    '<%= config.bin %> <%= command.id %> pslist --qmp /run/my-vm/qmp.sock',
    '<%= config.bin %> <%= command.id %> pslist psaux --capture lab.vmicap',
    '<%= config.bin %> <%= command.id %> --list',
  ];

  static override strict = false;

  static override flags = {
    guest: Flags.string({
      char: 'g',
      description: 'lab guest to inspect (default: lab, booted if needed); repeat for several',
      multiple: true,
      exclusive: ['qmp'],
    }),
    'all-guests': Flags.boolean({ description: 'inspect every running lab guest', exclusive: ['qmp'] }),
    qmp: Flags.string({ description: 'QMP socket of a QEMU that vmi did not start (attach through it)' }),
    capture: Flags.string({
      description:
        'inspect a capture (vmi capture create) instead of a live guest: verified, then replayed in a disposable clone',
      exclusive: ['guest', 'qmp', 'all-guests'],
    }),
    renderer: Flags.string({
      char: 'r',
      description:
        'output format: quick or pretty (Volatility text), csv, json, jsonl, arrow (Arrow IPC file), ' +
        'arrows (Arrow IPC stream), parquet; binary formats need -o or a pipe',
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
    all: Flags.boolean({
      description: 'run every built-in plugin with its default options (with -o DIR: one file each)',
    }),
    timing: Flags.boolean({ description: 'print attach, per-plugin and total times to stderr' }),
    'allow-write': Flags.boolean({
      description:
        'let plugins that declare write needs (e.g. unlink) make those calls; all others stay read-only',
    }),
  };

  async run(): Promise<void> {
    const started = performance.now();
    const { own, rest } = splitArgv(
      this.argv,
      new Set(['guest', 'g', 'renderer', 'r', 'output', 'o', 'transport', 'qmp', 'capture']),
      new Set(['list', 'timing', 'help', 'all-guests', 'allow-write', 'all']),
    );
    const { flags } = await this.parse(PluginsRun, own);
    // Built-ins plus installed plugin packs; broken packs and clashes are warnings on stderr.
    const registry = await loadPluginRegistry(this.config);
    if (flags.list) {
      this.log(describePlugins(registry.plugins, (n) => registry.packOf(n)));
      return;
    }
    let exitCode = 0;
    try {
      if (flags.all && rest.length > 0) {
        throw new Error(`--all runs every built-in plugin with default options; drop '${rest.join(' ')}'`);
      }
      const requests = flags.all
        ? registry.entries.filter((e) => e.pack === undefined).map((e) => ({ plugin: e.plugin, options: {} }))
        : parsePluginArgs(rest, (n) => registry.find(n));
      if (requests.length === 0)
        throw new Error('name at least one plugin, or --all (see `vmi plugins available`)');
      const progress = (m: string): void => this.progress(m);
      const runOpts = {
        transport: flags.transport as 'auto' | 'doorbell' | 'trap',
        progress: flags.timing ? progress : undefined,
        allowWrite: flags['allow-write'],
      };
      const guests = flags.guest ?? [];
      if (flags['all-guests'] || guests.length > 1) {
        const targets = await resolveLiveTargets({ guests, allGuests: flags['all-guests'] });
        const multi = await runPluginsOnGuests(targets, requests, runOpts);
        await writeOutput(multi.tables, { format: flags.renderer, output: flags.output });
        for (const t of multi.tables) {
          for (const e of t.errors) process.stderr.write(`vmi: ${t.plugin}: ${e}\n`);
        }
        for (const o of multi.outcomes) {
          if (o.error)
            process.stderr.write(
              `vmi: error: guest ${o.guest}: ${o.error.message.replace(/\s*\n\s*/g, ' ')}\n`,
            );
          else if (flags.timing) process.stderr.write(`vmi: guest ${o.guest}: ${o.ms.toFixed(1)} ms\n`);
        }
        if (flags.timing) process.stderr.write(`vmi: total ${(performance.now() - started).toFixed(1)} ms\n`);
        const pluginFailures = multi.outcomes.flatMap((o) =>
          (o.run?.failures ?? []).map((f) => `guest ${o.guest}: ${f.plugin}: ${f.message}`),
        );
        for (const line of pluginFailures) {
          process.stderr.write(`vmi: error: ${line.replace(/\s*\n\s*/g, ' ')}\n`);
        }
        exitCode = multi.failed ? 1 : multi.partial || pluginFailures.length > 0 ? 3 : 0;
        return;
      }
      let run: GuestRun;
      if (flags.capture) {
        run = await withReplay(flags.capture, (r) => runPluginsOnGuest(r.guest, requests, runOpts), {
          progress: runOpts.progress,
        });
      } else if (flags.qmp) {
        run = await withForeignGuest(flags.qmp, (g) => runPluginsOnGuest(g, requests, runOpts), {
          progress: runOpts.progress,
        });
      } else {
        const guest = await resolveLiveTarget({ guest: guests[0], progress });
        run = await runPluginsOnGuest(guest, requests, runOpts);
      }
      // A plugin that threw costs its own table: the others are still written (exit 3).
      for (const f of run.failures) {
        process.stderr.write(`vmi: error: ${f.plugin}: ${f.message.replace(/\s*\n\s*/g, ' ')}\n`);
      }
      if (run.failures.length > 0) exitCode = run.tables.length > 0 ? 3 : 1;
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
    } finally {
      // Outside the try: this.exit throws, and the catch would report it as an error.
      if (exitCode !== 0) process.exitCode = exitCode;
    }
  }
}
