/**
 * Apache Parquet (`.parquet`), zstd-compressed: what DuckDB (`FROM 'pslist.parquet'`),
 * pandas (`read_parquet`), Polars and Spark read directly. The table goes through an Arrow
 * IPC stream into parquet-wasm's writer, so column types are the Arrow ones (int32 PID,
 * utf8 COMM, timestamp[ms, UTC] CREATION TIME, uint64 OFFSET…).
 *
 * The `vmi.` schema metadata is kept twice: inside the embedded Arrow schema
 * (`ARROW:schema`, which pyarrow restores as `schema.metadata`) and as plain Parquet
 * key-value metadata, which readers without Arrow see (DuckDB's `parquet_kv_metadata`).
 *
 * parquet-wasm (a ~5 MB WebAssembly module) is loaded on first use only, so commands that
 * never write Parquet do not pay for it at start-up.
 */
import { tableToIPC } from 'apache-arrow';
import type * as ParquetWasm from 'parquet-wasm';
import type { Renderer } from '../renderer.js';
import type { Sink } from '../sink.js';
import { toArrow } from '../arrow-table.js';
import { schemaMetadata, type ResultTable } from '../table.js';

let loading: Promise<typeof ParquetWasm> | undefined;

/** parquet-wasm's Node build (CommonJS, instantiates its WebAssembly synchronously on load). */
export function loadParquetWasm(): Promise<typeof ParquetWasm> {
  loading ??= import('parquet-wasm');
  return loading;
}

/** The Parquet bytes for one table. */
export async function toParquet(table: ResultTable): Promise<Uint8Array> {
  // Convert first: a misfit value is a TableError before any WebAssembly is loaded.
  const arrow = toArrow(table);
  const ipc = tableToIPC(arrow, 'stream');
  const pq = await loadParquetWasm();
  // fromIPCStream copies into WebAssembly memory; writeParquet consumes the table.
  const wasmTable = pq.Table.fromIPCStream(ipc);
  const props = new pq.WriterPropertiesBuilder()
    .setCompression(pq.Compression.ZSTD)
    .setCreatedBy('vmi')
    .setKeyValueMetadata(schemaMetadata(table))
    .build();
  return pq.writeParquet(wasmTable, props);
}

export const parquetRenderer: Renderer = {
  name: 'parquet',
  description: 'Apache Parquet file, zstd (one table per file; use -o FILE or -o DIR)',
  binary: true,
  extension: 'parquet',
  combinesTables: false,
  async render(tables: readonly ResultTable[], sink: Sink): Promise<void> {
    for (const t of tables) await sink.write(await toParquet(t));
  },
};
