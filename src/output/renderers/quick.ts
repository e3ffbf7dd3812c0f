/**
 * Volatility 3's QuickTextRenderer: a blank line, the column names joined by tabs, then
 * each row on its own line preceded by a newline (so a blank line follows the header), and
 * a final newline. Tree rows get `*` × depth and a space. Cells never contain a tab or a
 * newline: control characters are escaped.
 */
import { escapeControl, textFormatter } from '../format.js';
import { tableLabels, type Renderer } from '../renderer.js';
import { renderTextTables, type Sink, type TextBuffer } from '../sink.js';
import type { ResultTable } from '../table.js';

export const quickRenderer: Renderer = {
  name: 'quick',
  description: 'tab-separated text, as Volatility 3 prints by default',
  binary: false,
  extension: 'txt',
  combinesTables: true,
  render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    return renderTextTables(tables, tableLabels(tables), sink, renderOne);
  },
};

async function renderOne(table: ResultTable, buf: TextBuffer): Promise<void> {
  const fmt = table.columns.map((c) => textFormatter(c.type));
  const width = fmt.length;
  buf.add(`\n${table.columns.map((c) => escapeControl(c.name)).join('\t')}\n`);
  const { rows, depths } = table;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    let line = '\n';
    if (depths && depths[i] > 0) line += `${'*'.repeat(depths[i])} `;
    for (let c = 0; c < width; c++) {
      if (c > 0) line += '\t';
      line += fmt[c](row[c]);
    }
    if (buf.add(line)) await buf.flush();
  }
  buf.add('\n');
}
