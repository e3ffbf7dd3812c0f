import { Args, Flags } from '@oclif/core';
import { VmiCommand } from '../cli/base-command.js';
import { registryCatalog } from '../cli/plugin-catalog.js';
import { loadPluginRegistry, trustedFromEnv } from '../packs/registry.js';
import { DEFAULT_RENDERER, RENDERER_NAMES } from '../output/registry.js';
import { parseFileMode } from '../output/sink.js';
import { writeOutput } from '../output/write.js';
import { DEFAULT_RUN_LIMITS } from '../sdk/limits.js';
import type { InspectTarget } from '../runner/inspect.js';
import { TRANSPORT_CHOICES } from '../shadow/transport.js';
import { loadTrustedKey } from '../capture/signature.js';
import { queryGuests, queryLake } from '../sql/query.js';

export default class Query extends VmiCommand {
  static override summary = 'Ask guests a question in SQL: every plugin is a table (docs/sql.md)';

  static override description = `Every plugin is a table with its own typed columns and a leading GUEST column: \`SELECT COMM, count(*) FROM pslist GROUP BY COMM\`. The plugins a query names are collected in one attach per guest (several guests with --guest … or --all-guests, concurrently), loaded into an embedded DuckDB, and the result goes through the usual renderers.

Plugin options are table parameters: \`FROM pslist(threads := true)\`, \`FROM pslist(pid := [1, 2])\`; a plain name runs the plugin with its defaults. Column names with spaces are quoted: \`"CREATION TIME"\`.

--lake DIR queries the history that \`vmi collect\` wrote instead: the same table names, read from DIR's Parquet files, with HOST and COLLECTED_AT columns.`;

  static override examples = [
    `<%= config.bin %> <%= command.id %> "SELECT PID, COMM FROM pslist WHERE UID = 0"`,
    `<%= config.bin %> <%= command.id %> "SELECT s.PID, a.ARGS, s.\\"Source Port\\" FROM sockstat s JOIN psaux a USING (GUEST, PID) WHERE s.State = 'LISTEN'"`,
    `<%= config.bin %> <%= command.id %> --guest a --guest b "SELECT GUEST, count(*) FROM pslist GROUP BY GUEST"`,
    `<%= config.bin %> <%= command.id %> "SELECT * FROM pslist(threads := true) WHERE PID = 1"`,
    `<%= config.bin %> <%= command.id %> --capture lab.vmicap "SELECT COMM FROM pslist"`,
    `<%= config.bin %> <%= command.id %> --lake lake/ "SELECT COLLECTED_AT, count(*) FROM pslist GROUP BY ALL ORDER BY 1"`,
    `<%= config.bin %> <%= command.id %> -r parquet -o listeners.parquet "SELECT * FROM sockstat WHERE State = 'LISTEN'"`,
  ];

  static override args = {
    sql: Args.string({ description: 'one SELECT statement', required: true }),
  };

  static override flags = {
    guest: Flags.string({
      char: 'g',
      description: 'lab guest to query (default: lab, booted if needed); repeat for several',
      multiple: true,
      exclusive: ['qmp', 'capture', 'lake'],
    }),
    'all-guests': Flags.boolean({
      description: 'query every running lab guest',
      exclusive: ['qmp', 'capture', 'lake'],
    }),
    qmp: Flags.string({
      description: 'QMP socket of a QEMU that vmi did not start',
      exclusive: ['capture', 'lake'],
    }),
    capture: Flags.string({
      description: 'query a capture (vmi capture create), replayed in a disposable clone',
      exclusive: ['lake'],
    }),
    trust: Flags.string({
      description: 'with --capture: require a signature by this Ed25519 public key (PEM; repeatable)',
      multiple: true,
      dependsOn: ['capture'],
    }),
    lake: Flags.string({ description: 'query the Parquet history `vmi collect` wrote to this directory' }),
    renderer: Flags.string({
      char: 'r',
      description: 'output format (as plugins run): quick, pretty, csv, json, jsonl, arrow, arrows, parquet',
      options: [...RENDERER_NAMES],
      default: DEFAULT_RENDERER,
    }),
    output: Flags.string({ char: 'o', description: 'write to this file (or directory: DIR/query.<ext>)' }),
    'output-mode': Flags.string({
      description: 'permissions of the files -o writes, octal',
      default: '0600',
    }),
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
    'max-read': Flags.integer({
      description: 'MiB each plugin run may read from the guest',
      default: DEFAULT_RUN_LIMITS.maxReadBytes / 1048576,
      min: 1,
    }),
    'include-shadow': Flags.boolean({ description: "keep the rows of vmi's own shadow process" }),
    'accept-partial-context': Flags.boolean({
      description: "run even when the shadow's context cannot be verified as the guest's root context",
    }),
    'trust-pack': Flags.string({
      description: "run this plugin pack inside vmi's own process (repeatable)",
      multiple: true,
    }),
    timing: Flags.boolean({ description: 'print collect, load and query times to stderr' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Query);
    let exitCode = 0;
    try {
      const mode = parseFileMode(flags['output-mode']);
      const trustFlag = new Set(flags['trust-pack'] ?? []);
      const fromEnv = trustedFromEnv();
      const registry = await loadPluginRegistry(this.config, {
        trusted: (p) => trustFlag.has(p) || fromEnv(p),
      });
      const catalog = registryCatalog(registry);
      let result;
      if (flags.lake) {
        result = await queryLake(args.sql, catalog, flags.lake);
      } else {
        const trust = await Promise.all((flags.trust ?? []).map((p) => loadTrustedKey(p)));
        const target: InspectTarget = flags.capture
          ? { kind: 'capture', path: flags.capture, ...(trust.length > 0 ? { trust } : {}) }
          : flags.qmp
            ? { kind: 'qmp', socket: flags.qmp }
            : { kind: 'lab', guests: flags.guest ?? [], allGuests: flags['all-guests'] };
        const progress = (m: string): void => this.progress(m);
        result = await queryGuests(args.sql, catalog, target, {
          transport: flags.transport,
          progress: flags.timing ? progress : undefined,
          bootProgress: progress,
          includeShadow: flags['include-shadow'],
          acceptPartialContext: flags['accept-partial-context'],
          runLimits: { timeoutMs: flags['plugin-timeout'] * 1000, maxReadBytes: flags['max-read'] * 1048576 },
          timing: flags.timing,
        });
      }
      for (const line of result.problems) process.stderr.write(`vmi: error: ${line}\n`);
      await writeOutput([result.table], { format: flags.renderer, output: flags.output, mode });
      for (const line of result.notes) this.progress(line);
      exitCode = result.exitCode;
    } catch (err) {
      this.fail(err);
    } finally {
      if (exitCode !== 0) process.exitCode = exitCode;
    }
  }
}
