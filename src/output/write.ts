/**
 * Sends result tables to stdout, one file, or one file per table in a directory. Files
 * are written atomically: a failed render never leaves a partial file behind.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Writable } from 'node:stream';
import { DEFAULT_RENDERER, getRenderer } from './registry.js';
import { OutputError, tableLabels } from './renderer.js';
import { OutputClosedError, streamSink, writeFileAtomic } from './sink.js';
import type { ResultTable } from './table.js';

export interface OutputOptions {
  /** Renderer name (`quick` when omitted). */
  format?: string;
  /**
   * Output path. Omitted: the stream (stdout). An existing directory, or a path ending in
   * `/`: one `<plugin>.<ext>` file per table (created if missing). Otherwise: one file.
   */
  output?: string;
  /** The stream used when `output` is omitted (default process.stdout). */
  stdout?: Writable;
  /** Mode of the files written (default 0600: they hold guest data). */
  mode?: number;
}

/** A file name for a plugin label: path separators and other odd characters become `_`. */
export function fileNameFor(label: string, extension: string): string {
  const base = label.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_');
  return `${base || 'table'}.${extension}`;
}

async function isDirectory(path: string): Promise<boolean> {
  if (path.endsWith('/') || path.endsWith(sep)) return true;
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Renders the tables as asked; returns the files written (empty when writing to the
 * stream). A stream whose reader went away (EPIPE) ends the rendering quietly.
 */
export async function writeOutput(
  tables: readonly ResultTable[],
  options: OutputOptions = {},
): Promise<string[]> {
  const renderer = getRenderer(options.format ?? DEFAULT_RENDERER);
  const { output } = options;
  const several = tables.length > 1 && !renderer.combinesTables;

  if (output === undefined) {
    const stream = options.stdout ?? process.stdout;
    if (renderer.binary && (stream as { isTTY?: boolean }).isTTY) {
      throw new OutputError(
        `${renderer.name} output is binary and stdout is a terminal; write it to a file with -o FILE or pipe it`,
      );
    }
    if (several) {
      throw new OutputError(
        `${renderer.name} output holds one table and ${tables.length} were produced; give an output directory with -o DIR/`,
      );
    }
    try {
      await renderer.render(tables, streamSink(stream));
    } catch (err) {
      // `vmi … | head`: the reader has what it wanted; the rest of the output is not an error.
      if (!(err instanceof OutputClosedError)) throw err;
    }
    return [];
  }

  if (await isDirectory(output)) {
    await mkdir(output, { recursive: true, mode: 0o700 });
    const labels = tableLabels(tables);
    const written: string[] = [];
    for (let k = 0; k < tables.length; k++) {
      const path = join(output, fileNameFor(labels[k], renderer.extension));
      await writeFileAtomic(path, (sink) => renderer.render([tables[k]], sink), options.mode);
      written.push(path);
    }
    return written;
  }

  if (several) {
    throw new OutputError(
      `${renderer.name} output holds one table and ${tables.length} were produced; give a directory (-o DIR/) instead of '${output}'`,
    );
  }
  await writeFileAtomic(output, (sink) => renderer.render(tables, sink), options.mode);
  return [output];
}
