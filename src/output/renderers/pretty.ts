/**
 * Volatility 3's PrettyTextRenderer: a tree column (`*` × depth, left-aligned), then every
 * column right-aligned to its widest cell, separated by ` | `, header first. Needs all rows
 * before the first line, so it buffers the formatted cells.
 */
import { displayWidth, escapeControl, textFormatter } from '../format.js';
import { tableLabels, type Renderer } from '../renderer.js';
import { renderTextTables, type Sink, type TextBuffer } from '../sink.js';
import type { ResultTable } from '../table.js';

const SEPARATOR = ' | ';

export const prettyRenderer: Renderer = {
  name: 'pretty',
  description: 'aligned text columns separated by |, as Volatility 3 -r pretty',
  binary: false,
  extension: 'txt',
  combinesTables: true,
  render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    return renderTextTables(tables, tableLabels(tables), sink, renderOne);
  },
};

function pad(s: string, width: number, left: boolean): string {
  const n = width - displayWidth(s);
  if (n <= 0) return s;
  return left ? s + ' '.repeat(n) : ' '.repeat(n) + s;
}

async function renderOne(table: ResultTable, buf: TextBuffer): Promise<void> {
  const { rows, depths } = table;
  const ncol = table.columns.length;
  const fmt = table.columns.map((c) => textFormatter(c.type));
  const titles = table.columns.map((c) => escapeControl(c.name));
  const widths = titles.map(displayWidth);
  // Volatility counts a root as path depth 1, so flat tables get a one-character `*` column.
  let treeWidth = 0;
  const cells: string[][] = new Array<string[]>(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const out = new Array<string>(ncol);
    for (let c = 0; c < ncol; c++) {
      const s = fmt[c](row[c]);
      out[c] = s;
      const w = displayWidth(s);
      if (w > widths[c]) widths[c] = w;
    }
    cells[i] = out;
    const d = (depths ? depths[i] : 0) + 1;
    if (d > treeWidth) treeWidth = d;
  }

  const line = (tree: string, values: string[]): string => {
    let s = pad(tree, treeWidth, true);
    for (let c = 0; c < ncol; c++) s += SEPARATOR + pad(values[c], widths[c], false);
    return `${s}\n`;
  };
  buf.add(line('', titles));
  for (let i = 0; i < cells.length; i++) {
    if (buf.add(line('*'.repeat((depths ? depths[i] : 0) + 1), cells[i]))) await buf.flush();
  }
}
