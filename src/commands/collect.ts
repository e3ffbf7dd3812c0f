import { Flags } from '@oclif/core';
import { VmiCommand } from '../cli/base-command.js';
import { flagSets, splitArgv } from '../cli/split-argv.js';
import { parsePluginArgs } from '../cli/plugin-args.js';
import { loadPluginRegistry, trustedFromEnv } from '../packs/registry.js';
import { parseFileMode } from '../output/sink.js';
import { DEFAULT_LAB_NAME } from '../lab/lab.js';
import { resolveLiveTargets } from '../targets/lab.js';
import { TRANSPORT_CHOICES } from '../shadow/transport.js';
import { DEFAULT_RUN_LIMITS } from '../sdk/limits.js';
import { startCollect } from '../sql/collect.js';
import { parseInterval } from '../sql/lake.js';

export default class Collect extends VmiCommand {
  static override summary =
    'Collect plugins × guests into a Hive-partitioned Parquet lake, once or at an interval';

  static override description = `Each round attaches to every guest once (concurrently), runs the named plugins, and writes one Parquet file per plugin and guest:

  DIR/plugin=NAME/host=HOST/guest=GUEST/date=YYYY-MM-DD/<time>-<id>.parquet

with a COLLECTED_AT column (the round's start time) and the schema and vmi version in the file's metadata. Files are written under a hidden temporary name and renamed, so readers never see half a file. \`vmi query --lake DIR\`, DuckDB, Spark and Trino read the lake (docs/sql.md).

Progress goes to stderr, one summary line per round. SIGINT or SIGTERM stops after the file being written. Plugin options follow the plugin name, as with plugins run.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> pslist sockstat lsmod --once -d lake/',
    '<%= config.bin %> <%= command.id %> pslist sockstat --all-guests --interval 30s -d /srv/vmi-lake --retain-days 30',
    '<%= config.bin %> <%= command.id %> pslist --guest a --guest b --interval 1m --rounds 10 -d lake/',
  ];

  static override strict = false;

  static override flags = {
    dir: Flags.string({
      char: 'd',
      description: 'root directory of the lake (created if missing)',
      required: true,
    }),
    guest: Flags.string({
      char: 'g',
      description: `lab guest (default: ${DEFAULT_LAB_NAME}); repeat for several`,
      multiple: true,
    }),
    'all-guests': Flags.boolean({ description: 'collect from every running lab guest' }),
    once: Flags.boolean({ description: 'one round, then exit', exclusive: ['interval', 'rounds'] }),
    interval: Flags.string({ description: 'time from one round to the next: 30s, 5m, 1h', default: '30s' }),
    rounds: Flags.integer({
      description: 'stop after this many rounds (default: until SIGINT/SIGTERM)',
      min: 1,
    }),
    'retain-days': Flags.integer({
      description: 'after each round, delete date= partitions older than this many days',
      min: 1,
    }),
    host: Flags.string({ description: 'host partition value (default: this machine’s hostname)' }),
    'output-mode': Flags.string({ description: 'permissions of the Parquet files, octal', default: '0600' }),
    transport: Flags.option({
      description: 'how batches reach the shadow: doorbell (shared RAM) or trap (VM stopped)',
      options: TRANSPORT_CHOICES,
      default: 'auto' as const,
    })(),
    'plugin-timeout': Flags.integer({
      description: 'seconds each plugin may run',
      default: DEFAULT_RUN_LIMITS.timeoutMs / 1000,
      min: 1,
    }),
    'trust-pack': Flags.string({
      description: "run this plugin pack inside vmi's own process (repeatable)",
      multiple: true,
    }),
  };

  async run(): Promise<void> {
    const { valued, booleans } = flagSets(Collect.flags);
    const { own, rest } = splitArgv(this.argv, valued, booleans);
    const { flags } = await this.parse(Collect, own);
    let exitCode = 0;
    try {
      const fileMode = parseFileMode(flags['output-mode']);
      const intervalMs = parseInterval(flags.interval);
      const trustFlag = new Set(flags['trust-pack'] ?? []);
      const fromEnv = trustedFromEnv();
      const registry = await loadPluginRegistry(this.config, {
        trusted: (p) => trustFlag.has(p) || fromEnv(p),
      });
      const requests = parsePluginArgs(rest, (n) => registry.find(n)).map((r) => {
        const runner = registry.runnerOf(r.plugin.name);
        return { ...r, ...(runner ? { runner } : {}) };
      });
      if (requests.length === 0)
        throw new Error('name at least one plugin to collect (see `vmi plugins available`)');
      const guests = flags.guest ?? (flags['all-guests'] ? [] : [DEFAULT_LAB_NAME]);
      const targets = await resolveLiveTargets({ guests, allGuests: flags['all-guests'] });
      const slow = Number(process.env.VMI_COLLECT_SLOW_WRITE_MS ?? 0);
      const collector = startCollect(targets, requests, {
        dir: flags.dir,
        version: this.config.version,
        rounds: flags.once ? 1 : flags.rounds,
        intervalMs,
        retainDays: flags['retain-days'],
        host: flags.host,
        fileMode,
        transport: flags.transport,
        runLimits: { timeoutMs: flags['plugin-timeout'] * 1000 },
        log: (line) => this.progress(line),
        ...(Number.isFinite(slow) && slow > 0 ? { slowWriteMs: slow } : {}),
      });
      const onSignal = (sig: NodeJS.Signals): void => {
        this.progress(`${sig}: stopping after the file being written`);
        collector.stop();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const rounds = await collector.done;
        if (rounds.some((r) => r.failures > 0)) exitCode = rounds.every((r) => r.files === 0) ? 1 : 3;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      if (exitCode !== 0) process.exitCode = exitCode;
    }
  }
}
