/**
 * Arrow IPC file format (`.arrow`, Feather v2): what pandas (`pyarrow.feather`), Polars and
 * DuckDB open directly. The schema carries column types, `vmi.` metadata and the errors.
 */
import { tableToIPC } from 'apache-arrow';
import type { Renderer } from '../renderer.js';
import type { Sink } from '../sink.js';
import { toArrow } from '../arrow-table.js';
import type { ResultTable } from '../table.js';

export const arrowRenderer: Renderer = {
  name: 'arrow',
  description: 'Arrow IPC file (one table per file; use -o FILE or -o DIR)',
  binary: true,
  extension: 'arrow',
  combinesTables: false,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    for (const t of tables) await sink.write(tableToIPC(toArrow(t), 'file'));
  },
};
