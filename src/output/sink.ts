/**
 * Byte sinks for renderers: a Writable (stdout) with backpressure, or a file written
 * atomically (temp file in the same directory, fsync, rename; removed on error).
 */
import type { ResultTable } from './table.js';
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';

/** Where a renderer writes. Each write resolves once the bytes are accepted (backpressure). */
export interface Sink {
  write(chunk: string | Uint8Array): Promise<void>;
}

/**
 * The reader of the output went away (EPIPE: `vmi … | head -1`). Not a failure: like every
 * Unix tool, vmi then stops writing and ends quietly with the status it would have had.
 */
export class OutputClosedError extends Error {
  override name = 'OutputClosedError';
  constructor() {
    super('the reader of the output closed it');
  }
}

/** EPIPE (the pipe's reader exited), or a write after Node destroyed the stream for it. */
function isClosedPipe(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED';
}

/** Streams whose reader is gone: later 'error' events of theirs are expected, never fatal. */
const closedStreams = new WeakSet<Writable>();

function markClosed(stream: Writable): void {
  if (closedStreams.has(stream)) return;
  closedStreams.add(stream);
  // Node emits EPIPE as an 'error' event (once per pending write); unheard, it would be an
  // uncaught exception with a stack on stderr.
  stream.on('error', () => undefined);
}

/**
 * A Sink over a Writable. Waits for 'drain' when the stream's buffer is full and rejects
 * if the stream errors: with OutputClosedError when the reader of a pipe went away (EPIPE),
 * with the stream's error otherwise. Does not end the stream.
 */
export function streamSink(stream: Writable): Sink {
  return {
    write(chunk) {
      return new Promise<void>((resolve, reject) => {
        if (closedStreams.has(stream)) {
          reject(new OutputClosedError());
          return;
        }
        if (stream.destroyed || stream.writableEnded) {
          reject(new Error('output stream is closed'));
          return;
        }
        const onError = (err: Error): void => {
          stream.off('drain', onDrain);
          if (isClosedPipe(err)) {
            markClosed(stream);
            reject(new OutputClosedError());
          } else reject(err);
        };
        const onDrain = (): void => {
          stream.off('error', onError);
          resolve();
        };
        stream.once('error', onError);
        const ok = stream.write(chunk, (err) => {
          if (err) onError(err);
        });
        if (ok) {
          stream.off('error', onError);
          resolve();
        } else {
          stream.once('drain', onDrain);
        }
      });
    },
  };
}

/**
 * Mode of output files unless the user asks otherwise (`--output-mode`): they hold guest
 * data (environment variables, shell history, memory), readable by their owner only.
 */
export const DEFAULT_OUTPUT_MODE = 0o600;

/**
 * Parses an octal file mode as the user gives it (`0644`, `644`, `0o640`): permission
 * bits only, no setuid/setgid/sticky. Throws a RangeError naming the value.
 */
export function parseFileMode(text: string): number {
  const m = /^(?:0o?)?([0-7]{1,3})$/.exec(text.trim());
  if (!m) throw new RangeError(`file mode must be octal permission bits like 0600 or 0644, got '${text}'`);
  return parseInt(m[1], 8);
}

/**
 * Runs `fill` against a sink on a temporary file next to `path`, then renames it into
 * place. If `fill` (or any write) throws, the temporary file is removed and `path` is left
 * as it was: readers never see a half-written output file.
 */
export async function writeFileAtomic(
  path: string,
  fill: (sink: Sink) => Promise<void>,
  mode: number = DEFAULT_OUTPUT_MODE,
): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  // Created 0600 and then set to `mode` exactly (the umask can only take bits away at
  // creation): the file never holds guest data with more access than asked for.
  // An error opening the temporary file names the user's path: the temporary name is ours.
  const fh = await open(tmp, 'wx', 0o600).catch((e: NodeJS.ErrnoException) => {
    throw Object.assign(new Error(`cannot write ${path}: ${e.code ?? e.message}`), { code: e.code });
  });
  let closed = false;
  try {
    await fh.chmod(mode);
    await fill({
      async write(chunk) {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
        // write(2) on a regular file may be partial; loop until everything is out.
        for (let off = 0; off < bytes.length;) {
          const { bytesWritten } = await fh.write(bytes, off, bytes.length - off);
          off += bytesWritten;
        }
      },
    });
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(tmp, path);
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/**
 * Collects small strings and hands them to the sink in ~64 KiB chunks, so renderers
 * neither await per row nor build one giant string.
 */
export class TextBuffer {
  private parts: string[] = [];
  private size = 0;

  constructor(
    private readonly sink: Sink,
    private readonly limit = 1 << 16,
  ) {}

  /** Appends text; true when the buffer is full and the caller should `await flush()`. */
  add(s: string): boolean {
    this.parts.push(s);
    this.size += s.length;
    return this.size >= this.limit;
  }

  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const s = this.parts.join('');
    this.parts = [];
    this.size = 0;
    await this.sink.write(s);
  }
}

/**
 * Renders tables one after another as text, each under an `== label ==` heading when
 * there are several (what quick and pretty share).
 */
export async function renderTextTables(
  tables: readonly ResultTable[],
  labels: readonly string[],
  sink: Sink,
  renderOne: (table: ResultTable, buf: TextBuffer) => Promise<void>,
): Promise<void> {
  const buf = new TextBuffer(sink);
  for (let k = 0; k < tables.length; k++) {
    if (tables.length > 1) buf.add(`${k > 0 ? '\n' : ''}== ${labels[k]} ==\n`);
    await renderOne(tables[k], buf);
  }
  await buf.flush();
}
