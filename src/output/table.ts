/**
 * A plugin's result as a typed table (its Arrow form is in arrow-table.ts, loaded only
 * by the binary renderers).
 */
import { BYTE_TEXT_ENCODING } from '../util/byte-text.js';
import { AbsentValue, type ColumnSpec, type RowValue } from './columns.js';

export interface ResultTable {
  /** Plugin name, e.g. `pslist`. */
  plugin: string;
  columns: ColumnSpec[];
  /** Row-major cells; `rows[i].length === columns.length`. */
  rows: RowValue[][];
  /**
   * Optional tree shape (pstree): depth of each row, 0 for roots, rows in pre-order so a
   * row's parent is the nearest earlier row one level up. Absent for flat tables.
   */
  depths?: number[];
  /** Problems that cost rows or the whole table (a failed syscall batch, a guest that lied). */
  errors: string[];
  /**
   * Guest identity, kernel release, plugin version, collection time, capture id...
   * Stored in the Arrow schema metadata with a `vmi.` prefix added where missing.
   */
  metadata: Record<string, string>;
}

/** Name of the extra column that carries `depths` in CSV and Arrow (Volatility's name). */
export const TREE_DEPTH_COLUMN = 'TreeDepth';

/** Field metadata keys written by toArrow. */
export const FIELD_TYPE_KEY = 'vmi.type';
export const FIELD_DESCRIPTION_KEY = 'vmi.description';
/**
 * Field (utf8 columns) and schema metadata key naming the text representation:
 * BYTE_TEXT_ENCODING (`utf8-xescape`, src/util/byte-text.ts): UTF-8, with `\xNN` for
 * every byte that is not valid UTF-8 and `\x5c` for a backslash.
 */
export const FIELD_ENCODING_KEY = 'vmi.encoding';
export const TEXT_ENCODING_KEY = 'vmi.text_encoding';
/** Schema metadata keys written by toArrow. */
export const PLUGIN_KEY = 'vmi.plugin';
export const ERRORS_KEY = 'vmi.errors';

/** Bad table shape or a value that does not fit its column: a plugin bug, not a guest problem. */
export class TableError extends Error {
  override name = 'TableError';
}

/** Throws TableError unless every row has one cell per column and depths match the rows. */
export function validateTable(table: ResultTable): void {
  const width = table.columns.length;
  const names = new Set<string>();
  for (const c of table.columns) {
    if (names.has(c.name)) throw new TableError(`${table.plugin}: duplicate column name '${c.name}'`);
    names.add(c.name);
  }
  for (let i = 0; i < table.rows.length; i++) {
    if (table.rows[i].length !== width) {
      throw new TableError(
        `${table.plugin}: row ${i} has ${table.rows[i].length} cells, expected ${width} (${table.columns
          .map((c) => c.name)
          .join(', ')})`,
      );
    }
  }
  const d = table.depths;
  if (d) {
    if (d.length !== table.rows.length) {
      throw new TableError(`${table.plugin}: ${d.length} tree depths for ${table.rows.length} rows`);
    }
    let prev = -1;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isInteger(d[i]) || d[i] < 0 || d[i] > prev + 1) {
        throw new TableError(`${table.plugin}: row ${i} has tree depth ${d[i]} after depth ${prev}`);
      }
      prev = d[i];
    }
  }
}

const MAX_ROWS_LISTED = 10;

/**
 * One line per distinct (column, kind, reason) of absent cells, with a count and the first
 * row indices (0-based), e.g. `ARGS: unreadable: ESRCH (2 rows: 5, 9)`. Bounded by the number
 * of distinct reasons, not by the number of rows.
 */
export function absentNotes(table: ResultTable): string[] {
  const groups = new Map<string, { rows: number[]; count: number }>();
  const { rows, columns } = table;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    for (let c = 0; c < row.length; c++) {
      const v = row[c];
      if (!(v instanceof AbsentValue)) continue;
      const key = `${columns[c]?.name ?? c}: ${v.kind === 'unreadable' ? 'unreadable' : 'not available'}${
        v.reason ? `: ${v.reason}` : ''
      }`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { rows: [], count: 0 }));
      g.count++;
      if (g.rows.length < MAX_ROWS_LISTED) g.rows.push(i);
    }
  }
  const out: string[] = [];
  for (const [key, g] of groups) {
    const more = g.count > g.rows.length ? ', …' : '';
    out.push(`${key} (${g.count} row${g.count === 1 ? '' : 's'}: ${g.rows.join(', ')}${more})`);
  }
  return out;
}

/** `vmi.`-prefixed schema metadata for a table (caller metadata, plugin name, errors). */
export function schemaMetadata(table: ResultTable): Map<string, string> {
  const m = new Map<string, string>();
  for (const [k, v] of Object.entries(table.metadata))
    m.set(k.startsWith('vmi.') ? k : `vmi.${k}`, String(v));
  m.set(PLUGIN_KEY, table.plugin);
  m.set(TEXT_ENCODING_KEY, BYTE_TEXT_ENCODING);
  const errors = [...table.errors, ...absentNotes(table)];
  if (errors.length > 0) m.set(ERRORS_KEY, JSON.stringify(errors));
  return m;
}

/**
 * Parent/child structure of a tree table (pre-order rows with depths): the root row
 * indices and, per row, its children. A flat table has every row as a root.
 */
export function treeShape(table: ResultTable): { roots: number[]; children: number[][] | undefined } {
  const d = table.depths;
  const n = table.rows.length;
  if (!d) return { roots: Array.from({ length: n }, (_, i) => i), children: undefined };
  const roots: number[] = [];
  const children: number[][] = Array.from({ length: n }, () => []);
  const stack: number[] = []; // stack[k] = latest row at depth k
  for (let i = 0; i < n; i++) {
    const depth = d[i];
    stack.length = depth;
    if (depth === 0) roots.push(i);
    else children[stack[depth - 1]].push(i);
    stack.push(i);
  }
  return { roots, children };
}
