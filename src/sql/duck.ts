/**
 * vmi's tables in and out of an embedded DuckDB (`@duckdb/node-api`: the engine is a native
 * binary inside the npm package, so it works offline).
 *
 * In: a ResultTable becomes a DuckDB table through the appender, in data chunks whose
 * vectors have the column's own type (INTEGER, BIGINT, UBIGINT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMPTZ).
 * Measured against the other offline route (Parquet bytes from parquet-wasm into a temp
 * file, then read_parquet; DuckDB's Arrow IPC reader is an extension it would download):
 * see docs/sql.md, "How tables are loaded". Absent cells (unreadable, not available)
 * become NULL; their reasons stay in the source tables' metadata.
 *
 * Out: a DuckDB result becomes a ResultTable whose column types map back (INTEGER→int32,
 * BIGINT→int64, UBIGINT→uint64, or hex64 when the column is a hex64 column of a source
 * table under the same name, TIMESTAMP*→timestamp_ms, VARCHAR→utf8 byte text; HUGEINT
 * (SUM of BIGINT) → int64 when every value fits, text otherwise; DECIMAL→float64; other
 * types (lists, structs, intervals) → their text).
 */
import { createRequire } from 'node:module';
import type * as DuckApi from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBResult, DuckDBType, DuckDBTypeId, DuckDBValue } from '@duckdb/node-api';
import { AbsentValue, type ColumnSpec, type ColumnType, type RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import { QueryError, sqlIdent } from './tables.js';

let loaded: typeof DuckApi | undefined;

/**
 * The DuckDB API, loaded on first use through require: the package is CommonJS, and
 * Node's ESM import of it resolves the named re-exports of its ~100 files with the CJS
 * lexer, which cost 2.3–3.6 s here under load against 0.9–1.3 s for require.
 */
function duckApi(): typeof DuckApi {
  loaded ??= createRequire(import.meta.url)('@duckdb/node-api') as typeof DuckApi;
  return loaded;
}

/** DuckDB's SQL type for a vmi column type. */
export function duckTypeOf(type: ColumnType): string {
  switch (type) {
    case 'int32':
      return 'INTEGER';
    case 'int64':
      return 'BIGINT';
    case 'uint64':
    case 'hex64':
      return 'UBIGINT';
    case 'float64':
      return 'DOUBLE';
    case 'bool':
      return 'BOOLEAN';
    case 'utf8':
      return 'VARCHAR';
    case 'timestamp_ms':
      return 'TIMESTAMPTZ';
  }
}

/** An in-memory DuckDB with one connection; close() frees both. */
export interface Duck {
  connection: DuckDBConnection;
  /** First column of the first row of `sql`, as text. */
  scalar(sql: string): Promise<string>;
  close(): void;
}

export async function openDuck(): Promise<Duck> {
  const instance = await duckApi().DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  return {
    connection,
    async scalar(sql) {
      const r = await connection.runAndReadAll(sql);
      const v = r.getRowsJS()[0]?.[0];
      return typeof v === 'string' ? v : String(v);
    },
    close() {
      connection.closeSync();
      instance.closeSync();
    },
  };
}

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const U64_MAX = (1n << 64n) - 1n;

function toBigInt(v: RowValue): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
  throw new TypeError(`not an integer: ${String(v)}`);
}

function toMillis(v: RowValue): number {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return NaN;
}

/** DuckDB's vector type for a vmi column type. */
function duckVectorType(type: ColumnType): DuckDBType {
  const { INTEGER, BIGINT, UBIGINT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMPTZ } = duckApi();
  switch (type) {
    case 'int32':
      return INTEGER;
    case 'int64':
      return BIGINT;
    case 'uint64':
    case 'hex64':
      return UBIGINT;
    case 'float64':
      return DOUBLE;
    case 'bool':
      return BOOLEAN;
    case 'utf8':
      return VARCHAR;
    case 'timestamp_ms':
      return TIMESTAMPTZ;
  }
}

/** A cell as the DuckDB value of its column type; null when absent or when it does not fit. */
function duckValue(v: RowValue | undefined, type: ColumnType): DuckDBValue {
  if (v === null || v === undefined || v instanceof AbsentValue) return null;
  try {
    switch (type) {
      case 'int32':
        return typeof v === 'number' && Number.isInteger(v) ? v : null;
      case 'int64': {
        const b = toBigInt(v);
        return b >= I64_MIN && b <= I64_MAX ? b : null;
      }
      case 'uint64':
      case 'hex64': {
        const b = toBigInt(v);
        return b >= 0n && b <= U64_MAX ? b : null;
      }
      case 'float64':
        return typeof v === 'number' ? v : Number(v);
      case 'bool':
        return typeof v === 'boolean' ? v : null;
      case 'utf8':
        return typeof v === 'string' ? v : String(v);
      case 'timestamp_ms': {
        const ms = toMillis(v);
        return Number.isFinite(ms)
          ? new (duckApi().DuckDBTimestampTZValue)(BigInt(Math.trunc(ms)) * 1000n)
          : null;
      }
    }
  } catch {
    return null;
  }
}

/** Rows per data chunk: DuckDB's vector size. */
const CHUNK_ROWS = 2048;

/**
 * Creates table `name` with `table`'s columns and appends its rows, a data chunk of up to
 * 2048 rows at a time (one native call per column and chunk, not per cell). A cell that
 * does not fit its column's type (a plugin bug) becomes NULL rather than failing the query.
 */
export async function loadTable(
  connection: DuckDBConnection,
  name: string,
  table: ResultTable,
): Promise<void> {
  const cols = table.columns.map((c) => `${sqlIdent(c.name)} ${duckTypeOf(c.type)}`).join(', ');
  await connection.run(`CREATE TABLE ${sqlIdent(name)} (${cols})`);
  if (table.rows.length === 0) return;
  const appender = await connection.createAppender(name);
  const types = table.columns.map((c) => c.type);
  const vectorTypes = types.map(duckVectorType);
  for (let from = 0; from < table.rows.length; from += CHUNK_ROWS) {
    const rows = table.rows.slice(from, from + CHUNK_ROWS);
    const chunk = duckApi().DuckDBDataChunk.create(vectorTypes, rows.length);
    types.forEach((type, c) =>
      chunk.setColumnValues(
        c,
        rows.map((r) => duckValue(r[c], type)),
      ),
    );
    appender.appendDataChunk(chunk);
  }
  appender.closeSync();
}

/** The vmi column type of a result column, from DuckDB's type and the source columns' types. */
function resultType(id: DuckDBTypeId, name: string, sources: ReadonlyMap<string, ColumnSpec>): ColumnType {
  const { DuckDBTypeId } = duckApi();
  switch (id) {
    case DuckDBTypeId.BOOLEAN:
      return 'bool';
    case DuckDBTypeId.TINYINT:
    case DuckDBTypeId.SMALLINT:
    case DuckDBTypeId.INTEGER:
    case DuckDBTypeId.UTINYINT:
    case DuckDBTypeId.USMALLINT:
      return 'int32';
    case DuckDBTypeId.UINTEGER:
    case DuckDBTypeId.BIGINT:
    case DuckDBTypeId.HUGEINT:
      return 'int64';
    case DuckDBTypeId.UBIGINT:
      return sources.get(name)?.type === 'hex64' ? 'hex64' : 'uint64';
    case DuckDBTypeId.FLOAT:
    case DuckDBTypeId.DOUBLE:
    case DuckDBTypeId.DECIMAL:
      return 'float64';
    case DuckDBTypeId.TIMESTAMP:
    case DuckDBTypeId.TIMESTAMP_S:
    case DuckDBTypeId.TIMESTAMP_MS:
    case DuckDBTypeId.TIMESTAMP_NS:
    case DuckDBTypeId.TIMESTAMP_TZ:
      return 'timestamp_ms';
    default:
      return 'utf8';
  }
}

/** A JS value of DuckDB's converter as a cell of `type`. */
function cellOf(v: unknown, type: ColumnType): RowValue {
  if (v === null || v === undefined) return null;
  switch (type) {
    case 'int32':
    case 'float64':
      return typeof v === 'bigint' ? Number(v) : (v as number);
    case 'int64':
    case 'uint64':
    case 'hex64':
      return typeof v === 'bigint' ? v : BigInt(v as number);
    case 'bool':
      return v === true;
    case 'timestamp_ms':
      return v instanceof Date ? v : null;
    case 'utf8':
      if (typeof v === 'string') return v;
      if (v instanceof Date) return v.toISOString();
      return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
  }
}

/**
 * Reads a whole result as a ResultTable named `name`. `sources` are the loaded tables'
 * columns by name, whose descriptions (and hex64 type) carry over to same-named result
 * columns. HUGEINT columns whose values do not all fit an int64 become text.
 */
export async function readResult(
  result: DuckDBResult,
  name: string,
  sources: ReadonlyMap<string, ColumnSpec>,
): Promise<ResultTable> {
  const { DuckDBTypeId } = duckApi();
  const names = result.deduplicatedColumnNames();
  const columns: ColumnSpec[] = names.map((n, i) => {
    const type = resultType(result.columnTypeId(i), n, sources);
    const desc = sources.get(n)?.description;
    return { name: n, type, ...(desc ? { description: desc } : {}) };
  });
  const data = await result.getColumnsJS();
  names.forEach((_, i) => {
    if (result.columnTypeId(i) === DuckDBTypeId.HUGEINT || result.columnTypeId(i) === DuckDBTypeId.UHUGEINT) {
      const fits = data[i].every(
        (v) => v === null || (typeof v === 'bigint' && v >= I64_MIN && v <= I64_MAX),
      );
      if (!fits || result.columnTypeId(i) === DuckDBTypeId.UHUGEINT)
        columns[i].type = fits ? 'int64' : 'utf8';
      if (!fits) data[i] = data[i].map((v) => (v === null ? null : String(v)));
    }
  });
  const count = data[0]?.length ?? 0;
  const rows: RowValue[][] = [];
  for (let r = 0; r < count; r++) rows.push(columns.map((c, i) => cellOf(data[i][r], c.type)));
  return { plugin: name, columns, rows, errors: [], metadata: {} };
}

/**
 * DuckDB's error as one line with its position: DuckDB marks the place with a `LINE n:`
 * line and a caret under it; that becomes `at line n, column c`.
 */
export function duckErrorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text.split('\n');
  const first = lines[0].trim();
  const li = lines.findIndex((l) => /^LINE \d+:/.test(l));
  if (li >= 0 && li + 1 < lines.length) {
    const lineNo = Number(/^LINE (\d+):/.exec(lines[li])![1]);
    const prefix = /^LINE \d+: /.exec(lines[li])![0].length;
    const caret = lines[li + 1].indexOf('^');
    if (caret >= 0) return `${first} (at line ${lineNo}, column ${caret - prefix + 1} of the query as run)`;
  }
  const hint = lines.slice(1).find((l) => /Did you mean|Candidate/.test(l));
  return hint ? `${first} ${hint.trim()}` : first;
}

/** Runs `sql`, mapping DuckDB's errors to QueryError with their position. */
export async function runSql(connection: DuckDBConnection, sql: string): Promise<DuckDBResult> {
  try {
    return await connection.run(sql);
  } catch (e) {
    throw new QueryError(duckErrorMessage(e));
  }
}
