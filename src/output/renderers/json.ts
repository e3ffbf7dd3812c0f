/**
 * Volatility 3's JSON shape: a list of row objects keyed by column name, each with a
 * `__children` list (nested rows of a tree table), indented by two spaces. Differences:
 * keys keep column order (Volatility sorts them), hex64 is a `"0x…"` string, 64-bit
 * integers are written exactly (not rounded through a double), absent values are null.
 * Several tables become one object keyed by plugin name.
 */
import { AbsentValue, type ColumnType, type RowValue } from '../columns.js';
import { formatHex, formatTimestampIso, toDate } from '../format.js';
import { tableLabels, type Renderer } from '../renderer.js';
import { TextBuffer, type Sink } from '../sink.js';
import { treeShape, type ResultTable } from '../table.js';

export type JsonFormatter = (v: RowValue) => string;

/** The JSON text of one cell of a column of the given type. */
export function jsonFormatter(type: ColumnType): JsonFormatter {
  return (v) => {
    if (v === null || v === undefined || v instanceof AbsentValue) return 'null';
    switch (typeof v) {
      case 'bigint':
        return type === 'hex64' ? `"${formatHex(v)}"` : v.toString();
      case 'number':
        if (type === 'hex64' && Number.isInteger(v)) return `"${formatHex(v)}"`;
        if (type === 'timestamp_ms') break;
        return Number.isFinite(v) ? String(v) : 'null';
      case 'boolean':
        return v ? 'true' : 'false';
      case 'string':
        return JSON.stringify(v);
    }
    if (type === 'timestamp_ms' || v instanceof Date) {
      const d = toDate(v);
      return d ? `"${formatTimestampIso(d)}"` : 'null';
    }
    return JSON.stringify(String(v));
  };
}

/** Serializes rows of one table as JSON objects, pretty (Python indent=2) or compact. */
export class RowSerializer {
  private readonly keys: string[];
  private readonly fmt: JsonFormatter[];
  private readonly children: number[][] | undefined;

  constructor(
    private readonly table: ResultTable,
    private readonly indent: boolean,
  ) {
    this.keys = table.columns.map((c) => JSON.stringify(c.name));
    this.fmt = table.columns.map((c) => jsonFormatter(c.type));
    this.children = treeShape(table).children;
  }

  /** Row `i` and its subtree; `level` is the nesting depth of the object (for indentation). */
  object(i: number, level: number, extra?: [string, string]): string {
    const row = this.table.rows[i];
    const kids = this.children?.[i] ?? [];
    const { keys, fmt } = this;
    if (!this.indent) {
      let s = extra ? `{${JSON.stringify(extra[0])}: ${JSON.stringify(extra[1])}, ` : '{';
      for (let c = 0; c < keys.length; c++) s += `${keys[c]}: ${fmt[c](row[c])}, `;
      return `${s}"__children": [${kids.map((k) => this.object(k, 0)).join(', ')}]}`;
    }
    const pad = '  '.repeat(level + 1);
    let s = extra ? `{\n${pad}${JSON.stringify(extra[0])}: ${JSON.stringify(extra[1])},\n` : '{\n';
    for (let c = 0; c < keys.length; c++) s += `${pad}${keys[c]}: ${fmt[c](row[c])},\n`;
    if (kids.length === 0) s += `${pad}"__children": []\n`;
    else {
      const inner = '  '.repeat(level + 2);
      s += `${pad}"__children": [\n${kids.map((k) => inner + this.object(k, level + 2)).join(',\n')}\n${pad}]\n`;
    }
    return `${s}${'  '.repeat(level)}}`;
  }
}

/** Writes one table as a JSON list whose opening bracket sits at indentation `level`. */
async function writeList(table: ResultTable, level: number, buf: TextBuffer): Promise<void> {
  const { roots } = treeShape(table);
  if (roots.length === 0) {
    buf.add('[]');
    return;
  }
  const ser = new RowSerializer(table, true);
  const pad = '  '.repeat(level + 1);
  buf.add('[\n');
  for (let r = 0; r < roots.length; r++) {
    const sep = r + 1 < roots.length ? ',\n' : '\n';
    if (buf.add(pad + ser.object(roots[r], level + 1) + sep)) await buf.flush();
  }
  buf.add(`${'  '.repeat(level)}]`);
}

export const jsonRenderer: Renderer = {
  name: 'json',
  description: 'a JSON list of row objects, as Volatility 3 -r json',
  binary: false,
  extension: 'json',
  combinesTables: true,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    const buf = new TextBuffer(sink);
    if (tables.length === 1) {
      await writeList(tables[0], 0, buf);
    } else {
      const labels = tableLabels(tables);
      buf.add('{');
      for (let k = 0; k < tables.length; k++) {
        buf.add(`${k > 0 ? ',' : ''}\n  ${JSON.stringify(labels[k])}: `);
        await writeList(tables[k], 1, buf);
      }
      buf.add(tables.length > 0 ? '\n}' : '}');
    }
    buf.add('\n');
    await buf.flush();
  },
};
