/** Output formats by name. */
import { OutputError, type Renderer, type RendererName } from './renderer.js';
import { csvRenderer } from './renderers/csv.js';
import { jsonRenderer } from './renderers/json.js';
import { jsonlRenderer } from './renderers/jsonl.js';
import { prettyRenderer } from './renderers/pretty.js';
import { quickRenderer } from './renderers/quick.js';

/**
 * A binary renderer whose module (and apache-arrow, ~60 ms to load) is imported only when
 * it renders: text output, the default, never pays for it.
 */
function lazy(meta: Omit<Renderer, 'render'>, load: () => Promise<Renderer>): Renderer {
  return { ...meta, render: async (tables, sink) => (await load()).render(tables, sink) };
}

const RENDERERS: Record<RendererName, Renderer> = {
  quick: quickRenderer,
  pretty: prettyRenderer,
  csv: csvRenderer,
  json: jsonRenderer,
  jsonl: jsonlRenderer,
  arrow: lazy(
    {
      name: 'arrow',
      description: 'Arrow IPC file (one table per file; use -o FILE or -o DIR)',
      binary: true,
      extension: 'arrow',
      combinesTables: false,
    },
    async () => (await import('./renderers/arrow.js')).arrowRenderer,
  ),
  arrows: lazy(
    {
      name: 'arrows',
      description: 'Arrow IPC stream (one table per stream; pipe it or use -o FILE or -o DIR)',
      binary: true,
      extension: 'arrows',
      combinesTables: false,
    },
    async () => (await import('./renderers/arrows.js')).arrowsRenderer,
  ),
  parquet: lazy(
    {
      name: 'parquet',
      description: 'Apache Parquet file, zstd (one table per file; use -o FILE or -o DIR)',
      binary: true,
      extension: 'parquet',
      combinesTables: false,
    },
    async () => (await import('./renderers/parquet.js')).parquetRenderer,
  ),
};

/** Known formats that are not built yet, with the reason shown to the user. */
const PLANNED: Record<string, string> = {};

/** Valid `--output-format` values, default first. */
export const RENDERER_NAMES: readonly RendererName[] = Object.keys(RENDERERS) as RendererName[];

export const DEFAULT_RENDERER: RendererName = 'quick';

/** The renderer called `name` (case-insensitive); OutputError listing the valid names otherwise. */
export function getRenderer(name: string): Renderer {
  const key = name.trim().toLowerCase();
  if (Object.hasOwn(RENDERERS, key)) return RENDERERS[key as RendererName];
  const valid = `valid formats: ${RENDERER_NAMES.join(', ')}`;
  if (Object.hasOwn(PLANNED, key)) throw new OutputError(`${PLANNED[key]} (${valid})`);
  throw new OutputError(`unknown output format '${name}'; ${valid}`);
}
