/**
 * Volatility 3's JSONL: one compact JSON object per top-level row (a tree's descendants
 * nest in `__children`). With several tables, each line starts with a `__plugin` key.
 */
import { tableLabels, type Renderer } from '../renderer.js';
import { TextBuffer, type Sink } from '../sink.js';
import { treeShape, type ResultTable } from '../table.js';
import { RowSerializer } from './json.js';

export const jsonlRenderer: Renderer = {
  name: 'jsonl',
  description: 'one JSON object per row and line, as Volatility 3 -r jsonl',
  binary: false,
  extension: 'jsonl',
  combinesTables: true,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    const buf = new TextBuffer(sink);
    const labels = tableLabels(tables);
    for (let k = 0; k < tables.length; k++) {
      const ser = new RowSerializer(tables[k], false);
      const extra: [string, string] | undefined = tables.length > 1 ? ['__plugin', labels[k]] : undefined;
      for (const r of treeShape(tables[k]).roots) {
        if (buf.add(`${ser.object(r, 0, extra)}\n`)) await buf.flush();
      }
    }
    await buf.flush();
  },
};
