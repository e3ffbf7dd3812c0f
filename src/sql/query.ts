/**
 * `vmi query`: SQL over plugin tables. Every plugin is a table with its own typed columns
 * and a leading GUEST column; the tables a query names (tables.ts) are collected in one
 * attach per guest (several guests concurrently, src/runner/inspect.ts), loaded into an
 * embedded DuckDB (duck.ts), and the query's result is one ResultTable for vmi's
 * renderers. With a lake (`--lake DIR`) the same names are views over the collected
 * Parquet files instead (lake.ts layout), with HOST and COLLECTED_AT columns.
 */
import { existsSync } from 'node:fs';
import type { ColumnSpec } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import { GUEST_COLUMN } from '../runner/multi-guest.js';
import { inspect, type InspectOptions, type InspectTarget } from '../runner/inspect.js';
import type { PluginRequest } from '../runner/run-plugins.js';
import { loadTable, openDuck, readResult, runSql, type Duck } from './duck.js';
import { pluginGlob } from './lake.js';
import {
  discoverTables,
  QueryError,
  sqlIdent,
  sqlString,
  type PluginCatalog,
  type TableRef,
} from './tables.js';

/** The plugins a query may name: discovery's catalog plus what running one needs. */
export interface QueryCatalog extends PluginCatalog {
  /** A runnable request for a plugin (its definition and, for an isolated pack, its runner). */
  request(name: string, options: Record<string, unknown>): PluginRequest;
  /** The plugin's columns (without GUEST). */
  columnsOf(name: string): readonly ColumnSpec[];
}

/** Name of the collection-time column in lake files. */
export const COLLECTED_AT_COLUMN: ColumnSpec = {
  name: 'COLLECTED_AT',
  type: 'timestamp_ms',
  description: 'When the collection round that read this row started (UTC)',
};
export const HOST_COLUMN: ColumnSpec = {
  name: 'HOST',
  type: 'utf8',
  description: 'Hypervisor host whose collector wrote the row',
};

export interface QueryResult {
  table: ResultTable;
  /** `vmi: error: …` lines (a plugin or guest that failed: its rows are missing). */
  problems: string[];
  /** `vmi: …` lines (timings). */
  notes: string[];
  /** 0 complete, 3 partial (some plugin or guest failed). */
  exitCode: 0 | 3;
}

/** The table a loaded plugin contributes: GUEST first, as with several guests. */
function withGuestColumn(table: ResultTable): ResultTable {
  if (table.columns[0]?.name === GUEST_COLUMN.name) return table;
  const guest = table.metadata.guest ?? '';
  return { ...table, columns: [GUEST_COLUMN, ...table.columns], rows: table.rows.map((r) => [guest, ...r]) };
}

function sourceColumns(
  catalog: QueryCatalog,
  refs: readonly TableRef[],
  extra: readonly ColumnSpec[],
): Map<string, ColumnSpec> {
  const m = new Map<string, ColumnSpec>();
  for (const c of extra) m.set(c.name, c);
  for (const r of refs) for (const c of catalog.columnsOf(r.plugin)) if (!m.has(c.name)) m.set(c.name, c);
  return m;
}

/** Metadata of the query's result: the query, its tables, and the guests' identities. */
function resultMetadata(
  sql: string,
  refs: readonly TableRef[],
  loaded: readonly ResultTable[],
): Record<string, string> {
  const pick = (key: string): string | undefined => {
    const values = new Set(loaded.map((t) => t.metadata[key]).filter((v): v is string => !!v));
    return values.size > 0 ? [...values].join(',') : undefined;
  };
  const out: Record<string, string> = { query: sql, tables: refs.map((r) => r.table).join(',') };
  for (const key of ['guest', 'kernel.release', 'hostname', 'capture.id', 'source', 'collection.transport']) {
    const v = pick(key);
    if (v !== undefined) out[key] = v;
  }
  const times = loaded
    .map((t) => t.metadata['collection.time'])
    .filter((v): v is string => !!v)
    .sort();
  if (times.length > 0) out['collection.time'] = times[0];
  return out;
}

/**
 * Runs `sql` over live guests (or a capture, or a QMP-attached QEMU): collects the tables
 * it names, each once per distinct option set, in one attach per guest. Throws QueryError
 * for bad SQL (with its position) and for names that are not plugins, before any guest
 * is touched.
 */
export async function queryGuests(
  sql: string,
  catalog: QueryCatalog,
  target: InspectTarget,
  opts: InspectOptions = {},
): Promise<QueryResult> {
  const duck = await openDuck();
  try {
    const t0 = performance.now();
    const found = await discoverTables(duck.scalar, sql, catalog);
    if (found.refs.length === 0) {
      throw new QueryError(
        `the query reads no plugin table; the tables are: ${[...catalog.names].sort().join(', ')}`,
      );
    }
    const requests = found.refs.map((r) => catalog.request(r.plugin, r.options));
    const t1 = performance.now();
    const run = await inspect(target, requests, opts);
    const t2 = performance.now();
    const loaded: ResultTable[] = [];
    for (const [i, ref] of found.refs.entries()) {
      const got = run.byRequest[i];
      // A plugin that failed still has its (empty) table, so the query runs on the rest.
      const table = withGuestColumn(
        got ?? {
          plugin: ref.plugin,
          columns: [...catalog.columnsOf(ref.plugin)],
          rows: [],
          errors: [],
          metadata: {},
        },
      );
      await loadTable(duck.connection, ref.table, table);
      loaded.push(table);
    }
    const t3 = performance.now();
    const table = await readResult(
      await runSql(duck.connection, found.sql),
      'query',
      sourceColumns(catalog, found.refs, [GUEST_COLUMN]),
    );
    const t4 = performance.now();
    table.metadata = resultMetadata(sql, found.refs, loaded);
    for (const t of loaded) for (const e of t.errors) table.errors.push(`${t.plugin}: ${e}`);
    const notes = [...run.notes];
    if (opts.timing) {
      notes.push(
        `sql: parse ${(t1 - t0).toFixed(1)} ms, collect ${(t2 - t1).toFixed(1)} ms, load ${(t3 - t2).toFixed(1)} ms ` +
          `(${loaded.reduce((n, t) => n + t.rows.length, 0)} rows), query ${(t4 - t3).toFixed(1)} ms`,
      );
    }
    return { table, problems: run.problems, notes, exitCode: run.problems.length > 0 ? 3 : 0 };
  } finally {
    duck.close();
  }
}

/**
 * Runs `sql` over a lake written by `vmi collect`: each plugin it names is a view over
 * `DIR/plugin=NAME/…/*.parquet` (DuckDB's read_parquet, Hive partitioning) with GUEST,
 * HOST and COLLECTED_AT beside the plugin's columns. Table options do not apply (the lake
 * holds what was collected). QueryError if a plugin has no files there.
 */
export async function queryLake(sql: string, catalog: QueryCatalog, dir: string): Promise<QueryResult> {
  if (!existsSync(dir)) throw new QueryError(`no lake at '${dir}'`);
  const duck: Duck = await openDuck();
  try {
    const found = await discoverTables(duck.scalar, sql, catalog);
    if (found.refs.length === 0) {
      throw new QueryError(
        `the query reads no plugin table; the tables are: ${[...catalog.names].sort().join(', ')}`,
      );
    }
    for (const ref of found.refs) {
      if (Object.keys(ref.options).length > 0) {
        throw new QueryError(
          `${ref.plugin}(…): options do not apply to a lake, which holds what was collected; filter with WHERE`,
        );
      }
      await createLakeView(duck, dir, ref.plugin);
    }
    const table = await readResult(
      await runSql(duck.connection, found.sql),
      'query',
      sourceColumns(catalog, found.refs, [GUEST_COLUMN, HOST_COLUMN, COLLECTED_AT_COLUMN]),
    );
    table.metadata = {
      query: sql,
      tables: found.refs.map((r) => r.table).join(','),
      source: 'lake',
      lake: dir,
    };
    return { table, problems: [], notes: [], exitCode: 0 };
  } finally {
    duck.close();
  }
}

/**
 * `CREATE VIEW plugin AS …` over the plugin's files: GUEST and HOST from the partition
 * path (typed VARCHAR: a guest named `42` stays text), then the file's columns.
 */
export async function createLakeView(duck: Duck, dir: string, plugin: string): Promise<void> {
  const glob = pluginGlob(dir, plugin);
  const files = await duck.scalar(`SELECT count(*) FROM glob(${sqlString(glob)})`);
  if (Number(files) === 0)
    throw new QueryError(
      `the lake '${dir}' has no files of ${plugin} (collect it with \`vmi collect ${plugin}\`)`,
    );
  await runSql(
    duck.connection,
    `CREATE VIEW ${sqlIdent(plugin)} AS SELECT guest AS GUEST, host AS HOST, * EXCLUDE (plugin, host, guest, date) ` +
      `FROM read_parquet(${sqlString(glob)}, hive_partitioning = true, union_by_name = true, ` +
      `hive_types = {'plugin': VARCHAR, 'host': VARCHAR, 'guest': VARCHAR, 'date': DATE})`,
  );
}
