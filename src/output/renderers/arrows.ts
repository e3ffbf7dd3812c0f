/**
 * Arrow IPC stream format: can be piped (`vmi … -r arrows | python -c 'pyarrow.ipc.open_stream…'`)
 * and is what parquet-wasm takes as input.
 */
import { tableToIPC } from 'apache-arrow';
import type { Renderer } from '../renderer.js';
import type { Sink } from '../sink.js';
import { toArrow } from '../arrow-table.js';
import type { ResultTable } from '../table.js';

export const arrowsRenderer: Renderer = {
  name: 'arrows',
  description: 'Arrow IPC stream (one table per stream; pipe it or use -o FILE or -o DIR)',
  binary: true,
  extension: 'arrows',
  combinesTables: false,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    for (const t of tables) await sink.write(tableToIPC(toArrow(t), 'stream'));
  },
};
