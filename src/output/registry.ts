/** Output formats by name. */
import { OutputError, type Renderer, type RendererName } from './renderer.js';
import { arrowRenderer } from './renderers/arrow.js';
import { arrowsRenderer } from './renderers/arrows.js';
import { csvRenderer } from './renderers/csv.js';
import { jsonRenderer } from './renderers/json.js';
import { jsonlRenderer } from './renderers/jsonl.js';
import { parquetRenderer } from './renderers/parquet.js';
import { prettyRenderer } from './renderers/pretty.js';
import { quickRenderer } from './renderers/quick.js';

const RENDERERS: Record<RendererName, Renderer> = {
  quick: quickRenderer,
  pretty: prettyRenderer,
  csv: csvRenderer,
  json: jsonRenderer,
  jsonl: jsonlRenderer,
  arrow: arrowRenderer,
  arrows: arrowsRenderer,
  parquet: parquetRenderer,
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
