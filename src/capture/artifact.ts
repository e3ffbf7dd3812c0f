/**
 * A capture on disk: a directory holding manifest.msgpack (+ manifest.sha256) and the
 * parts it lists, each with its size and sha256. Captures are built in a sibling
 * `.NAME.partial-<pid>` directory and renamed into place last, so a capture that exists
 * under its name is complete; a partial directory never verifies.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import {
  CaptureError,
  decodeManifest,
  MANIFEST,
  MANIFEST_SUM,
  RAM_PART,
  type CaptureManifest,
  type PartInfo,
} from './manifest.js';

export const PARTIAL_RE = /^\.(.+)\.partial-(\d+)$/;
const CHUNK = 8 * 1024 * 1024;

export function partialDirFor(target: string, pid = process.pid): string {
  const base = basename(target);
  return join(target, '..', `.${base}.partial-${pid}`);
}

function errCode(e: unknown): string {
  const c = (e as NodeJS.ErrnoException).code;
  return c ? ` (${c})` : '';
}

/**
 * sha256 and size of a file, read-only, chunk by chunk; `onChunk` sees each chunk (and
 * its file offset) so a caller can copy while hashing.
 */
export async function hashFile(
  path: string,
  onChunk?: (chunk: Buffer, offset: number) => Promise<void>,
): Promise<PartInfo> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    let off = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, off);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      h.update(chunk);
      if (onChunk) await onChunk(chunk, off);
      off += bytesRead;
    }
    return { size: off, sha256: h.digest('hex') };
  } finally {
    await fh.close();
  }
}

export interface VerifyOptions {
  /** Parts not to hash here (the caller hashes them itself, e.g. while copying). */
  skip?: readonly string[];
}

export interface VerifyResult {
  manifest: CaptureManifest;
  /** Milliseconds per part hashed. */
  partMs: Record<string, number>;
  totalMs: number;
  bytes: number;
}

/** Reads and checks the manifest (its checksum, then its shape). */
export async function readManifest(dir: string): Promise<CaptureManifest> {
  const name = basename(dir.replace(/\/+$/, ''));
  if (PARTIAL_RE.test(name)) {
    throw new CaptureError(`${dir}: an incomplete capture (a capture that was interrupted); delete it`);
  }
  const st = await stat(dir).catch((e: unknown) => {
    throw new CaptureError(`${dir}: no such capture${errCode(e)}`);
  });
  if (!st.isDirectory()) throw new CaptureError(`${dir}: not a capture directory`);
  let buf: Buffer;
  let sum: string;
  try {
    buf = await readFile(join(dir, MANIFEST));
  } catch (e) {
    throw new CaptureError(`${MANIFEST}: missing${errCode(e)}`);
  }
  try {
    sum = (await readFile(join(dir, MANIFEST_SUM), 'utf8')).trim();
  } catch (e) {
    throw new CaptureError(`${MANIFEST_SUM}: missing${errCode(e)}`);
  }
  if (!/^[0-9a-f]{64}$/.test(sum)) throw new CaptureError(`${MANIFEST_SUM}: malformed`);
  if (createHash('sha256').update(buf).digest('hex') !== sum) {
    throw new CaptureError(`${MANIFEST}: sha256 mismatch (corrupted or tampered)`);
  }
  return decodeManifest(buf);
}

/** Checks one part's presence and size (cheap), before any hashing. */
export async function checkPartSize(dir: string, name: string, want: PartInfo): Promise<void> {
  let size: number;
  try {
    const st = await stat(join(dir, name));
    if (!st.isFile()) throw new CaptureError(`${name}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof CaptureError) throw e;
    throw new CaptureError(`${name}: missing part${errCode(e)}`);
  }
  if (size < want.size) throw new CaptureError(`${name}: truncated (${size} of ${want.size} bytes)`);
  if (size > want.size)
    throw new CaptureError(`${name}: size mismatch (${size}, expected ${want.size} bytes)`);
}

export function checkPartHash(name: string, want: PartInfo, got: PartInfo): void {
  if (got.size !== want.size) throw new CaptureError(`${name}: size changed while reading`);
  if (got.sha256 !== want.sha256) throw new CaptureError(`${name}: sha256 mismatch (corrupted or tampered)`);
}

/**
 * Verifies a capture: manifest checksum and shape, then every part's size (all parts
 * first, cheap) and sha256. Throws a CaptureError naming the first bad part.
 */
export async function verifyCapture(dir: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const t0 = performance.now();
  const manifest = await readManifest(dir);
  const parts = Object.entries(manifest.parts);
  for (const [name, want] of parts) await checkPartSize(dir, name, want);
  const partMs: Record<string, number> = {};
  let bytes = 0;
  // Small parts first: a tampered device state is reported without hashing the RAM.
  for (const [name, want] of parts.sort((a, b) => a[1].size - b[1].size)) {
    if (opts.skip?.includes(name)) continue;
    const t = performance.now();
    checkPartHash(name, want, await hashFile(join(dir, name)));
    partMs[name] = performance.now() - t;
    bytes += want.size;
  }
  return { manifest, partMs, totalMs: performance.now() - t0, bytes };
}

export { RAM_PART };
