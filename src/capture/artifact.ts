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
  type PartDigest,
  type PartInfo,
} from './manifest.js';
import { isZero } from './sparse.js';

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

/** Granularity of the sparse digest: 1 MiB. */
const SPARSE_CHUNK = 1024 * 1024;

/**
 * The hash state of a part: plain SHA-256 of the bytes, or the sparse digest (SHA-256 of
 * offset-prefixed non-zero 1 MiB chunks; all-zero chunks cost a compare, not a hash).
 * The offset prefix keeps the encoding unambiguous: a chunk cannot move, vanish (turn to
 * zeros) or appear without changing the digest; the size is checked on its own.
 */
export function partHasher(digest: PartDigest | undefined): {
  update(chunk: Buffer, offset: number): void;
  hex(): string;
} {
  const h = createHash('sha256');
  if (!digest) return { update: (chunk) => void h.update(chunk), hex: () => h.digest('hex') };
  const prefix = Buffer.alloc(8);
  return {
    update(chunk, offset) {
      if (offset % SPARSE_CHUNK !== 0) throw new Error('sparse digest: chunks must start on a MiB boundary');
      for (let at = 0; at < chunk.length; at += SPARSE_CHUNK) {
        const piece = chunk.subarray(at, at + SPARSE_CHUNK);
        if (isZero(piece)) continue;
        prefix.writeBigUInt64LE(BigInt(offset + at));
        h.update(prefix);
        h.update(piece);
      }
    },
    hex: () => h.digest('hex'),
  };
}

/**
 * Size and digest of a file, read-only, chunk by chunk (`digest` as in PartInfo: absent
 * for plain SHA-256); `onChunk` sees each chunk (and its file offset) so a caller can
 * copy while hashing.
 */
export async function hashFile(
  path: string,
  onChunk?: (chunk: Buffer, offset: number) => Promise<void>,
  digest?: PartDigest,
): Promise<PartInfo> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    const h = partHasher(digest);
    const buf = Buffer.allocUnsafe(CHUNK);
    let off = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, off);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      h.update(chunk, off);
      if (onChunk) await onChunk(chunk, off);
      off += bytesRead;
    }
    return { size: off, sha256: h.hex(), ...(digest ? { digest } : {}) };
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
    checkPartHash(name, want, await hashFile(join(dir, name), undefined, want.digest));
    partMs[name] = performance.now() - t;
    bytes += want.size;
  }
  return { manifest, partMs, totalMs: performance.now() - t0, bytes };
}

export { RAM_PART };
