/**
 * State files (guest.json, markers, kernel.json) written so that a crash at any moment
 * leaves either the old file or the new one, never a torn one: a temporary file in the
 * same directory, fsync, rename over the old name, fsync of the directory.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Writes `data` to `path` atomically and durably (tmp + fsync + rename + directory fsync). */
export async function writeStateFile(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  const d = await open(dirname(path), 'r').catch(() => undefined);
  if (d)
    await d
      .sync()
      .catch(() => undefined)
      .finally(() => d.close());
}

/** A state file that exists but cannot be read or parsed: the error names it. */
export class StateFileError extends Error {
  override name = 'StateFileError';
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path} cannot be read (${reason})`);
  }
}

/**
 * Reads a JSON state file: undefined when it does not exist; a StateFileError when it
 * exists but cannot be read, is not JSON, or fails `valid`. Never a silent undefined
 * for a file that is there: callers must not mistake a damaged file for an absent one.
 */
export async function readStateJson<T>(path: string, valid: (v: unknown) => v is T): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateFileError(path, (e as Error).message);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new StateFileError(path, `not JSON: ${(e as Error).message}`);
  }
  if (!valid(v)) throw new StateFileError(path, 'not the expected shape');
  return v;
}
