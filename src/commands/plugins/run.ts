import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { flagSets, splitArgv } from '../../cli/split-argv.js';
import { builtinPlugins } from '../../plugins/index.js';
import { DEFAULT_LOCK_WAIT_MS } from '../../util/guest-lock.js';
import { loadPluginRegistry, trustedFromEnv } from '../../packs/registry.js';
import { DEFAULT_RENDERER, RENDERER_NAMES } from '../../output/registry.js';
import { emitRunOutput } from '../../cli/emit-run.js';
import { parseFileMode } from '../../output/sink.js';
import { DEFAULT_RUN_LIMITS } from '../../sdk/limits.js';
import { parsePluginArgs } from '../../cli/plugin-args.js';
import { inspect, type InspectOptions, type InspectTarget } from '../../runner/inspect.js';
import type { RunPlan, RunPrepared } from '../../cli/run-plan.js';
import { describePlugins } from '../../cli/plugin-list.js';
import { TRANSPORT_CHOICES } from '../../shadow/transport.js';
import { loadTrustedKey } from '../../capture/signature.js';

export default class PluginsRun extends VmiCommand {
  static override summary = 'Run introspection plugins against a guest (Volatility-style names and columns)';

  // Paragraphs are single lines: oclif wraps them to the terminal width.
  static override description = `Each plugin's system calls run inside the guest, in a short-lived shadow process that the guest's own kernel serves, so no symbol table or profile is needed. Plugin options follow the plugin name, Volatility-style.

Several plugins share one attach; with -o DIR each table goes to DIR/<plugin>.<ext>. A plugin that fails is reported on stderr (\`vmi: error: PLUGIN: ...\`), the other plugins' tables are still written, and the exit code is 3.

Built-in plugins: ${builtinPlugins.map((p) => p.name).join(', ')}. --all runs every one of them with default options; \`vmi plugins available\` lists their columns and options (and the plugins of installed packs).

Without --guest the built-in lab guest is used (booted first if it is not running). With several --guest flags or --all-guests the guests are inspected concurrently and every table gets a leading GUEST column; a guest that fails is reported on stderr (\`vmi: error: guest NAME: ...\`), the others' rows are kept, and the exit code is 3.

--qmp attaches to a QEMU that vmi did not start, through its QMP socket only: the gdbstub is switched on for the run and off again afterwards (memory is read through it, so batches use the trap transport).

Plugins of installed packs run isolated by default: each run in a child process under Node's permission model (no file writes, no processes, no workers, reads only of the pack and vmi's code), as root also in an empty network namespace and as the user nobody (VMI_PACK_USER), with only a message channel to vmi, which checks every batch against the same policy and limits. --trust-pack NAME runs a pack in vmi's own process instead.

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
    wait: Flags.integer({
      description:
        'seconds to wait for its turn while another vmi holds the guest (a line on stderr names it); 0 refuses at once',
      default: DEFAULT_LOCK_WAIT_MS / 1000,
      min: 0,
    }),
    'plugin-timeout': Flags.integer({
      description: 'seconds each plugin may run before it fails with a time-limit error',
      default: DEFAULT_RUN_LIMITS.timeoutMs / 1000,
      min: 1,
    }),
    'max-read': Flags.integer({
      description:
        'MiB each plugin run may read from the guest in all (a guest controls how big its files and environments are)',
      default: DEFAULT_RUN_LIMITS.maxReadBytes / 1048576,
      min: 1,
    }),
    'output-mode': Flags.string({
      description:
        'permissions of the files -o writes, octal (default 0600: they hold guest data such as environments and shell history)',
      default: '0600',
    }),
    transport: Flags.option({
      description:
        'how batches reach the shadow: doorbell (shared RAM, VM keeps running) or trap (VM stopped)',
      options: TRANSPORT_CHOICES,
      default: 'auto' as const,
    })(),
    list: Flags.boolean({ description: 'list the available plugins with their columns and options' }),
    all: Flags.boolean({
      description: 'run every built-in plugin with its default options (with -o DIR: one file each)',
    }),
    timing: Flags.boolean({ description: 'print attach, per-plugin and total times to stderr' }),
    'victim-pid': Flags.integer({
      description:
        'borrow this task first when the shadow is created (its PID as it sees itself: inside a PID namespace, the PID there); another task is used if it refuses',
      min: 2,
    }),
    'include-shadow': Flags.boolean({
      description:
        "keep the rows of vmi's own shadow process (left out by default; its PID is in every table's metadata as shadow.pid), marked in a VMI_SHADOW column",
    }),
    'accept-partial-context': Flags.boolean({
      description:
        "print tables even when the shadow's context cannot be verified as the guest's root context (recorded in the tables' metadata)",
    }),
    trust: Flags.string({
      description:
        'with --capture: require a signature (capture create --sign-key) by this Ed25519 public key (PEM; repeatable: any of them), checked before the clone starts',
      multiple: true,
      dependsOn: ['capture'],
    }),
    'trust-pack': Flags.string({
      description:
        "run this plugin pack inside vmi's own process, with vmi's privileges (repeatable; VMI_TRUST_PACKS=a,b does the same). Other packs run isolated: a confined child process per plugin run",
      multiple: true,
    }),
    'allow-write': Flags.boolean({
      description:
        'let plugins that declare write needs (e.g. unlink) make those calls; all others stay read-only',
    }),
  };

  /**
   * Everything the command decides before it reaches a guest: flags parsed, plugins and
   * options resolved (packs included), the target and the run's options. The vmi server
   * calls this too (src/serve/cli-request.ts) so that a command served there is parsed
   * exactly as here. Throws what the command would report.
   */
  async plan(): Promise<RunPlan> {
    const { valued, booleans } = flagSets(PluginsRun.flags);
    const { own, rest } = splitArgv(this.argv, valued, booleans);
    const { flags } = await this.parse(PluginsRun, own);
    // Checked before anything reaches a guest.
    const outputMode = parseFileMode(flags['output-mode']);
    // Built-ins plus installed plugin packs; broken packs and clashes are warnings on stderr.
    const trustFlag = new Set(flags['trust-pack'] ?? []);
    const fromEnv = trustedFromEnv();
    const registry = await loadPluginRegistry(this.config, {
      trusted: (pack) => trustFlag.has(pack) || fromEnv(pack),
    });
    if (flags.list) return { list: describePlugins(registry.plugins, (n) => registry.packOf(n)) };
    const prepare = async (progress: (m: string) => void): Promise<RunPrepared> => {
      if (flags.all && rest.length > 0) {
        throw new Error(`--all runs every built-in plugin with default options; drop '${rest.join(' ')}'`);
      }
      const requests = flags.all
        ? registry.entries.filter((e) => e.pack === undefined).map((e) => ({ plugin: e.plugin, options: {} }))
        : parsePluginArgs(rest, (n) => registry.find(n)).map((r) => ({
            ...r,
            runner: registry.runnerOf(r.plugin.name),
          }));
      if (requests.length === 0)
        throw new Error('name at least one plugin, or --all (see `vmi plugins available`)');
      const trust = await Promise.all((flags.trust ?? []).map((p) => loadTrustedKey(p)));
      const target: InspectTarget = flags.capture
        ? { kind: 'capture', path: flags.capture, ...(trust.length > 0 ? { trust } : {}) }
        : flags.qmp
          ? { kind: 'qmp', socket: flags.qmp }
          : { kind: 'lab', guests: flags.guest ?? [], allGuests: flags['all-guests'] };
      const options: InspectOptions = {
        transport: flags.transport,
        // Booting the default lab guest always shows progress; the rest with --timing.
        progress: flags.timing ? progress : undefined,
        bootProgress: progress,
        allowWrite: flags['allow-write'],
        preferVictimPid: flags['victim-pid'],
        acceptPartialContext: flags['accept-partial-context'],
        includeShadow: flags['include-shadow'],
        lockWaitMs: flags.wait * 1000,
        onWait: progress,
        runLimits: {
          timeoutMs: flags['plugin-timeout'] * 1000,
          maxReadBytes: flags['max-read'] * 1048576,
        },
        timing: flags.timing,
      };
      return { target, requests, options };
    };
    return { prepare, format: flags.renderer, output: flags.output, mode: outputMode, timing: flags.timing };
  }

  async run(): Promise<void> {
    const plan = await this.plan();
    if ('list' in plan) {
      this.log(plan.list);
      return;
    }
    let exitCode = 0;
    // SIGINT/SIGTERM end the run cleanly: the guest entry in flight finishes, the shadow
    // and (for a foreign QEMU) the gdbstub go, a guest that was paused is paused again,
    // and nothing is printed but one line; exit 128 + the signal's number. A second signal
    // exits at once (the crash journal lets the next vmi clean up a lab guest).
    const stop = new AbortController();
    let signalledCode: number | undefined;
    const onSignal = (name: NodeJS.Signals, code: number) => (): void => {
      if (signalledCode !== undefined) process.exit(code);
      signalledCode = code;
      this.progress(`${name}: stopping after the guest entry in flight (${name} again quits at once)`);
      stop.abort(new Error(`interrupted by ${name}: nothing printed; vmi detached from the guest`));
    };
    const onInt = onSignal('SIGINT', 130);
    const onTerm = onSignal('SIGTERM', 143);
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    try {
      const { target, requests, options } = await plan.prepare((m) => this.progress(m));
      const result = await inspect(target, requests, { ...options, signal: stop.signal });
      stop.signal.throwIfAborted();
      await emitRunOutput({ ...result, format: plan.format, output: plan.output, mode: plan.mode });
      exitCode = result.exitCode;
    } catch (err) {
      if (signalledCode !== undefined) this.fail(stop.signal.reason, signalledCode);
      this.fail(err);
    } finally {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      // Outside the try: this.exit throws, and the catch would report it as an error.
      if (exitCode !== 0) process.exitCode = exitCode;
    }
  }
}
