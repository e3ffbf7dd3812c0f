/**
 * Which plugin tables a query names, found by DuckDB's own parser: `json_serialize_sql`
 * turns the statement into its parse tree (JSON), and every `BASE_TABLE` node (`FROM
 * pslist`) and `TABLE_FUNCTION` node (`FROM pslist(pid := 1)`) is a table reference, with
 * the identifier already unquoted (`"Weird ""name"""` arrives as `Weird "name"`) and its
 * character offset in `query_location`. No regex over SQL text: quoted identifiers,
 * strings that contain table names, comments and CTEs are the parser's business.
 *
 * Why the parser and not EXPLAIN or a binder error: a binder error names one missing table
 * at a time, and EXPLAIN needs the tables to exist; the parse tree names them all before
 * anything is collected. Only SELECT statements serialize, so `vmi query` reads nothing
 * but queries (DuckDB answers `Only SELECT statements can be serialized` otherwise).
 *
 * A table function call of a plugin (`pslist(pid := 1, threads := true)`) carries its
 * options as named parameters; its text is spliced out of the query and replaced by a
 * reference to the loaded table (`"pslist#2" AS pslist`), found from `query_location` by
 * a small tokenizer that knows SQL's quotes and comments (spliceCalls).
 */
import type { OptionSpecs } from '../sdk/plugin.js';

/** One parsed node of DuckDB's JSON parse tree (an object with string keys). */
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a query needs of one plugin: its name and the options of this reference. */
export interface TableRef {
  /** Plugin name as the catalog spells it (lower case). */
  plugin: string;
  /** Option values from the call's named parameters (`{}` for a plain `FROM pslist`). */
  options: Record<string, unknown>;
  /** Name of the DuckDB table that holds the rows for this plugin and these options. */
  table: string;
}

/** A call in the query text to replace: `[start, end)` becomes `replacement`. */
interface Splice {
  start: number;
  end: number;
  replacement: string;
}

export interface DiscoveredTables {
  /** Distinct (plugin, options) pairs the query reads, in order of first appearance. */
  refs: TableRef[];
  /** The query with plugin calls replaced by table references (unchanged if it has none). */
  sql: string;
}

/** A query that cannot run: bad SQL (with its position), an unknown table, a bad option. */
export class QueryError extends Error {
  override name = 'QueryError';
}

/** What discovery needs of the plugins: names and each one's declared options. */
export interface PluginCatalog {
  /** Every plugin name, lower case. */
  names: readonly string[];
  /** The options a plugin declares, or undefined when no plugin has this name. */
  optionsOf(name: string): OptionSpecs | undefined;
}

/** Runs one SQL statement and returns the first column of the first row (a DuckDB connection). */
export type ScalarQuery = (sql: string) => Promise<string>;

/** `'text'` with quotes doubled: a SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** `"name"` with quotes doubled: a SQL identifier. */
export function sqlIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

/** The parse tree of `sql` as DuckDB's json_serialize_sql gives it; QueryError on bad SQL. */
export async function parseTree(scalar: ScalarQuery, sql: string): Promise<Json> {
  let text: string;
  try {
    text = await scalar(`SELECT json_serialize_sql(${sqlString(sql)})`);
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    // DuckDB serializes SELECT statements only: vmi query never writes, creates or attaches.
    throw new QueryError(/Only SELECT/i.test(msg) ? 'vmi query runs one SELECT statement only' : msg);
  }
  const tree = JSON.parse(text) as { [key: string]: Json };
  if (tree.error === true) {
    const pos = Number(tree.position);
    const msg = String(tree.error_message ?? 'syntax error');
    throw new QueryError(
      Number.isFinite(pos) && tree.position !== undefined ? `${msg} ${atPosition(sql, pos)}` : msg,
    );
  }
  const statements = tree.statements;
  if (!Array.isArray(statements) || statements.length !== 1) {
    throw new QueryError(
      `give exactly one SELECT statement (got ${Array.isArray(statements) ? statements.length : 0})`,
    );
  }
  return statements[0];
}

/** `at line L, column C (character N)` for a 0-based character offset. */
export function atPosition(sql: string, offset: number): string {
  const before = sql.slice(0, Math.max(0, Math.min(offset, sql.length)));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return `at line ${line}, column ${column} (character ${offset + 1})`;
}

function isObject(j: Json): j is { [key: string]: Json } {
  return typeof j === 'object' && j !== null && !Array.isArray(j);
}

/** Calls `visit` on every object node of the tree, depth first. */
function walk(node: Json, visit: (n: { [key: string]: Json }) => void): void {
  if (Array.isArray(node)) {
    for (const c of node) walk(c, visit);
  } else if (isObject(node)) {
    visit(node);
    for (const v of Object.values(node)) walk(v, visit);
  }
}

/** Names (lower case) of every CTE the query defines, at any depth. */
function cteNames(tree: Json): Set<string> {
  const names = new Set<string>();
  walk(tree, (n) => {
    const map = n.cte_map;
    if (isObject(map) && Array.isArray(map.map)) {
      for (const e of map.map) if (isObject(e) && typeof e.key === 'string') names.add(e.key.toLowerCase());
    }
  });
  return names;
}

/** A constant of the parse tree as a plain value (lists become arrays); undefined if not constant. */
function constantOf(node: Json): unknown {
  if (!isObject(node)) return undefined;
  if (node.class === 'CONSTANT' && isObject(node.value)) {
    const v = node.value;
    if (v.is_null === true) return null;
    return v.value;
  }
  // `[1, 2]` and `list_value(1, 2)`: a list of constants.
  if (node.class === 'FUNCTION' && node.function_name === 'list_value' && Array.isArray(node.children)) {
    const items = node.children.map(constantOf);
    return items.some((x) => x === undefined) ? undefined : items;
  }
  // `true` parses as CAST('t' AS BOOLEAN).
  if (node.class === 'CAST' && isObject(node.cast_type) && node.cast_type.id === 'BOOLEAN') {
    const x = constantOf(node.child);
    return x === 't' ? true : x === 'f' ? false : typeof x === 'boolean' ? x : undefined;
  }
  // `-1` parses as a function `-`(1).
  if (node.class === 'FUNCTION' && node.function_name === '-' && Array.isArray(node.children)) {
    const [x] = node.children.map(constantOf);
    return node.children.length === 1 && typeof x === 'number' ? -x : undefined;
  }
  return undefined;
}

function optionsOfCall(
  plugin: string,
  specs: OptionSpecs,
  args: Json[],
  sql: string,
  at: number,
): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  const known = Object.keys(specs);
  const takes = known.length > 0 ? `it takes ${known.map((k) => `${k} := …`).join(', ')}` : 'it takes none';
  for (const a of args) {
    const name = isObject(a) && typeof a.alias === 'string' ? a.alias : '';
    if (name === '') {
      throw new QueryError(
        `${plugin}(…) ${atPosition(sql, at)}: name each option, e.g. ${plugin}(pid := 1) (${takes})`,
      );
    }
    const key = known.find((k) => k.toLowerCase() === name.toLowerCase());
    if (key === undefined) throw new QueryError(`${plugin} has no option '${name}' (${takes})`);
    const v = constantOf(a);
    if (v === undefined)
      throw new QueryError(`${plugin}(${name} := …): the value must be a constant or a list of constants`);
    if (v === null) continue;
    const spec = specs[key];
    const values = Array.isArray(v) ? v : [v];
    if (Array.isArray(v) && !spec.multiple)
      throw new QueryError(`${plugin}(${name} := …) takes one value, not a list`);
    // The SDK coerces '42' to 42 and checks types; booleans stay booleans.
    const raw = values.map((x) => (typeof x === 'boolean' ? x : String(x)));
    options[key] = spec.multiple ? raw : raw[0];
  }
  return options;
}

/** A stable key for (plugin, options): the same call twice is collected once. */
function refKey(plugin: string, options: Record<string, unknown>): string {
  const sorted = Object.keys(options)
    .sort()
    .map((k) => [k, options[k]]);
  return `${plugin}\u0000${JSON.stringify(sorted)}`;
}

/**
 * The plugin tables `sql` reads and the query to run once they are loaded. Table names
 * are matched case-insensitively (DuckDB's identifiers are); a name that is neither a
 * plugin nor a CTE of the query is a QueryError naming the plugins. Names with a schema or
 * catalog (`information_schema.tables`) and table functions that are not plugins
 * (`range(3)`, `read_parquet(…)`) are left to DuckDB.
 */
export async function discoverTables(
  scalar: ScalarQuery,
  sql: string,
  catalog: PluginCatalog,
): Promise<DiscoveredTables> {
  const tree = await parseTree(scalar, sql);
  const ctes = cteNames(tree);
  const plugins = new Set(catalog.names.map((n) => n.toLowerCase()));
  const refs = new Map<string, TableRef>();
  const splices: { at: number; ref: TableRef; alias: string }[] = [];
  const unknown: string[] = [];
  const add = (plugin: string, options: Record<string, unknown>): TableRef => {
    const key = refKey(plugin, options);
    let ref = refs.get(key);
    if (!ref) {
      const plain = Object.keys(options).length === 0;
      ref = { plugin, options, table: plain ? plugin : `${plugin}#${refs.size + 1}` };
      refs.set(key, ref);
    }
    return ref;
  };
  walk(tree, (n) => {
    if (n.type === 'BASE_TABLE' && typeof n.table_name === 'string') {
      if (n.schema_name !== '' || n.catalog_name !== '') return;
      const name = n.table_name.toLowerCase();
      if (ctes.has(name)) return;
      if (plugins.has(name)) add(name, {});
      else if (!unknown.includes(n.table_name)) unknown.push(n.table_name);
    } else if (n.type === 'TABLE_FUNCTION' && isObject(n.function)) {
      const f = n.function;
      if (typeof f.function_name !== 'string' || (typeof f.schema === 'string' && f.schema !== '')) return;
      const name = f.function_name.toLowerCase();
      if (!plugins.has(name)) return;
      const at = Number(f.query_location ?? n.query_location);
      const args = Array.isArray(f.children) ? f.children : [];
      const ref = add(name, optionsOfCall(name, catalog.optionsOf(name) ?? {}, args, sql, at));
      splices.push({ at, ref, alias: typeof n.alias === 'string' ? n.alias : '' });
    }
  });
  if (unknown.length > 0) {
    throw new QueryError(
      `no table named ${unknown.map((u) => `'${u}'`).join(', ')}; the tables are the plugins: ${[...plugins].sort().join(', ')}`,
    );
  }
  const calls: Splice[] = splices.map(({ at, ref, alias }) => {
    const end = callEnd(sql, at);
    // Without an alias the call was addressable by the plugin's name (`pslist.PID`): keep that.
    const replacement = `${sqlIdent(ref.table)}${alias === '' ? ` AS ${sqlIdent(ref.plugin)}` : ''}`;
    return { start: at, end, replacement };
  });
  return { refs: [...refs.values()], sql: spliceCalls(sql, calls) };
}

/** Applies non-overlapping replacements (any order) to `sql`. */
export function spliceCalls(sql: string, calls: readonly Splice[]): string {
  let out = sql;
  for (const c of [...calls].sort((a, b) => b.start - a.start)) {
    out = out.slice(0, c.start) + c.replacement + out.slice(c.end);
  }
  return out;
}

/**
 * End offset (exclusive) of the function call that starts at `start`: its name (bare or
 * `"quoted"`), optional blanks, and a parenthesised argument list whose parentheses are
 * counted outside of '…' strings, "…" identifiers, `--` and `/* *\/` comments and
 * $tag$…$tag$ strings. QueryError if the text there is not a call.
 */
export function callEnd(sql: string, start: number): number {
  let i = start;
  const n = sql.length;
  if (sql[i] === '"') {
    i = skipQuoted(sql, i, '"');
  } else {
    while (i < n && /[\w$]/.test(sql[i])) i++;
  }
  i = skipBlank(sql, i);
  if (sql[i] !== '(') throw new QueryError(`expected '(' of a table function ${atPosition(sql, i)}`);
  let depth = 0;
  while (i < n) {
    const ch = sql[i];
    if (ch === "'" || ch === '"') {
      i = skipQuoted(sql, i, ch);
      continue;
    }
    if (ch === '-' && sql[i + 1] === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      continue;
    }
    if (ch === '/' && sql[i + 1] === '*') {
      const close = sql.indexOf('*/', i + 2);
      i = close < 0 ? n : close + 2;
      continue;
    }
    if (ch === '$') {
      const m = /^\$([A-Za-z_]\w*)?\$/.exec(sql.slice(i));
      if (m) {
        const close = sql.indexOf(m[0], i + m[0].length);
        i = close < 0 ? n : close + m[0].length;
        continue;
      }
    }
    if (ch === '(') depth++;
    else if (ch === ')') {
      depth--;
      if (depth === 0) return i + 1;
    }
    i++;
  }
  throw new QueryError(`unbalanced parentheses in the call ${atPosition(sql, start)}`);
}

/** Past a quoted token starting at `i` (the quote doubled inside it is part of it). */
function skipQuoted(sql: string, i: number, q: string): number {
  let j = i + 1;
  while (j < sql.length) {
    if (sql[j] === q) {
      if (sql[j + 1] === q) j += 2;
      else return j + 1;
    } else j++;
  }
  return j;
}

function skipBlank(sql: string, i: number): number {
  for (;;) {
    while (i < sql.length && /\s/.test(sql[i])) i++;
    if (sql.startsWith('--', i)) {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? sql.length : nl + 1;
    } else if (sql.startsWith('/*', i)) {
      const close = sql.indexOf('*/', i + 2);
      i = close < 0 ? sql.length : close + 2;
    } else return i;
  }
}
