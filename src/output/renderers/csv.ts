/**
 * CSV with a header row and RFC 4180 quoting (fields with a comma, quote, CR or LF are
 * quoted, quotes doubled), `\n` line ends as Volatility writes them. Unlike Volatility's
 * `-`/`N/A`, absent values are empty fields so pandas and DuckDB keep numeric column
 * types. Tree tables get Volatility's leading `TreeDepth` column.
 */
import { AbsentValue, type ColumnType, type RowValue } from '../columns.js';
import { formatHex, formatTimestampIso, toDate } from '../format.js';
import type { Renderer } from '../renderer.js';
import { TextBuffer, type Sink } from '../sink.js';
import { TREE_DEPTH_COLUMN, type ResultTable } from '../table.js';

const NEEDS_QUOTES = /[",\r\n]/;

/** RFC 4180 field quoting. */
export function csvField(s: string): string {
  return NEEDS_QUOTES.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function csvFormatter(type: ColumnType): (v: RowValue) => string {
  return (v) => {
    if (v === null || v === undefined || v instanceof AbsentValue) return '';
    if (typeof v === 'boolean') return v ? 'True' : 'False';
    if (type === 'hex64' && (typeof v === 'number' || typeof v === 'bigint')) return formatHex(v);
    if (type === 'timestamp_ms') {
      const d = toDate(v);
      return d ? formatTimestampIso(d) : '';
    }
    if (typeof v === 'string') return csvField(v);
    if (v instanceof Date) return formatTimestampIso(v);
    return String(v);
  };
}

export const csvRenderer: Renderer = {
  name: 'csv',
  description: 'comma-separated values with a header row (one table per file)',
  binary: false,
  extension: 'csv',
  combinesTables: false,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    const buf = new TextBuffer(sink);
    for (const table of tables) {
      const { rows, depths } = table;
      const fmt = table.columns.map((c) => csvFormatter(c.type));
      const ncol = fmt.length;
      const header = table.columns.map((c) => csvField(c.name));
      if (depths) header.unshift(TREE_DEPTH_COLUMN);
      buf.add(`${header.join(',')}\n`);
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i];
        let line = depths ? `${depths[i]},` : '';
        for (let c = 0; c < ncol; c++) {
          if (c > 0) line += ',';
          line += fmt[c](row[c]);
        }
        // A lone empty field would be a blank line, which readers skip.
        if (line === '') line = '""';
        if (buf.add(`${line}\n`)) await buf.flush();
      }
    }
    await buf.flush();
  },
};
