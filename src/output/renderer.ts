/**
 * The renderer interface. A renderer turns result tables into bytes on a Sink; where the
 * bytes go (stdout, one file, one file per table) is decided by writeOutput.
 */
import type { Sink } from './sink.js';
import type { ResultTable } from './table.js';

/** Output formats. */
export type RendererName = 'quick' | 'pretty' | 'csv' | 'json' | 'jsonl' | 'arrow' | 'arrows' | 'parquet';

export interface Renderer {
  readonly name: RendererName;
  /** One line for `--help`. */
  readonly description: string;
  /** Binary output is refused on a terminal. */
  readonly binary: boolean;
  /** File extension without the dot, used for `<dir>/<plugin>.<ext>`. */
  readonly extension: string;
  /** Whether several tables fit in one output; if not, several tables need an output directory. */
  readonly combinesTables: boolean;
  /** Writes all tables to the sink. Only called with more than one table if combinesTables. */
  render(tables: readonly ResultTable[], sink: Sink): Promise<void>;
}

/** A user-facing output problem (unknown format, binary to a terminal, missing -o DIR). */
export class OutputError extends Error {
  override name = 'OutputError';
}

/**
 * Distinct labels for tables in one invocation: the plugin name, with `-2`, `-3`… added
 * when the same plugin appears more than once.
 */
export function tableLabels(tables: readonly ResultTable[]): string[] {
  const seen = new Map<string, number>();
  return tables.map((t) => {
    const n = (seen.get(t.plugin) ?? 0) + 1;
    seen.set(t.plugin, n);
    return n === 1 ? t.plugin : `${t.plugin}-${n}`;
  });
}
