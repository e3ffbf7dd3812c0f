/**
 * The optional gzip compression of a capture's RAM (ram.raw.gz), always streamed: the RAM
 * is never held in memory, only a chunk at a time.
 */
import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { hashFile } from './artifact.js';
import { CaptureError, type PartInfo, type RamPart } from './manifest.js';
import { isZero } from './sparse.js';

const CHUNK = 8 * 1024 * 1024;

/** A pass-through that counts and (optionally) hashes what flows through it. */
class Tap extends Transform {
  bytes = 0;
  private readonly h = createHash('sha256');
  constructor(private readonly hash: boolean) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    this.bytes += chunk.length;
    if (this.hash) this.h.update(chunk);
    cb(null, chunk);
  }
  digest(): string {
    return this.h.digest('hex');
  }
}

/**
 * gzip -1 of `src` into a new file `dst`; returns the stored file's size and sha256
 * (hashed on the way out) and the uncompressed size.
 */
export async function gzipFile(src: string, dst: string): Promise<PartInfo> {
  const inTap = new Tap(false);
  const outTap = new Tap(true);
  await pipeline(
    createReadStream(src, { highWaterMark: CHUNK }),
    inTap,
    createGzip({ level: 1, chunkSize: 1024 * 1024 }),
    outTap,
    createWriteStream(dst, { flags: 'wx', mode: 0o600 }),
  );
  return {
    size: outTap.bytes,
    sha256: outTap.digest(),
    compression: 'gzip',
    uncompressedSize: inTap.bytes,
  };
}

/**
 * The error for a RAM part that failed to decompress: a sha256 mismatch if the stored
 * file does not match the manifest (checked now), otherwise the decompression error.
 */
async function decompressError(path: string, ram: RamPart, e: unknown): Promise<CaptureError> {
  if (e instanceof CaptureError) return e;
  const err = e as NodeJS.ErrnoException;
  const got = await hashFile(path).catch(() => undefined);
  if (got && got.sha256 !== ram.info.sha256) {
    return new CaptureError(`${ram.name}: sha256 mismatch (corrupted or tampered)`);
  }
  if (err.code === 'ENOSPC') return new CaptureError(`${ram.name}: no space left on device (ENOSPC)`);
  return new CaptureError(`${ram.name}: decompression failed (${err.message})`);
}

/**
 * Writes a stream at increasing offsets of `fh`, leaving all-zero chunks unwritten: into a
 * fresh sparse RAM file, a big, mostly untouched guest costs what it had touched.
 */
function sparseWriter(fh: FileHandle): Writable {
  let offset = 0;
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      const at = offset;
      offset += chunk.length;
      if (isZero(chunk)) return done();
      fh.write(chunk, 0, chunk.length, at).then(
        () => done(),
        (e: unknown) => done(e as Error),
      );
    },
  });
}

/**
 * Decompresses the RAM part `path` into `dst` (opened with `flags`, e.g. 'r+' for an
 * existing RAM file or 'wx' for a new file; zero chunks are skipped, the size set by
 * truncate). With `verify`, the stored bytes are hashed on the way in and checked against
 * the manifest. Throws a CaptureError naming the part.
 */
export async function gunzipRamTo(
  path: string,
  ram: RamPart,
  dst: string,
  opts: { flags: string; verify?: boolean },
): Promise<void> {
  const inTap = new Tap(opts.verify ?? false);
  const outTap = new Tap(false);
  let fh: FileHandle | undefined;
  try {
    fh = await open(dst, opts.flags, 0o600);
    await pipeline(
      createReadStream(path, { flags: 'r', highWaterMark: CHUNK }),
      inTap,
      createGunzip({ chunkSize: 1024 * 1024 }),
      outTap,
      sparseWriter(fh),
    );
    await fh.truncate(outTap.bytes);
  } catch (e) {
    throw await decompressError(path, ram, e);
  } finally {
    await fh?.close();
  }
  if (opts.verify) {
    if (inTap.bytes !== ram.info.size) throw new CaptureError(`${ram.name}: size changed while reading`);
    if (inTap.digest() !== ram.info.sha256)
      throw new CaptureError(`${ram.name}: sha256 mismatch (corrupted or tampered)`);
  }
  if (outTap.bytes !== ram.rawSize) {
    throw new CaptureError(
      `${ram.name}: decompresses to ${outTap.bytes} bytes, expected ${ram.rawSize} (corrupted)`,
    );
  }
}

/** Reads raw RAM at increasing offsets, from ram.raw or from a decompressing ram.raw.gz. */
export interface RamReader {
  /** Fills `buf[0..n)` with the RAM at `offset`. */
  read(buf: Buffer, n: number, offset: number): Promise<void>;
  close(): Promise<void>;
}

export async function fileRamReader(path: string): Promise<RamReader> {
  const fh: FileHandle = await open(path, constants.O_RDONLY);
  return {
    async read(buf, n, offset) {
      const { bytesRead } = await fh.read(buf, 0, n, offset);
      if (bytesRead !== n) throw new Error(`short read of the RAM at ${offset}`);
    },
    close: () => fh.close(),
  };
}

/** A forward-only reader over a gzip file (offsets must not go backwards). */
export function gzipRamReader(path: string, ram: RamPart): RamReader {
  const src = createReadStream(path, { flags: 'r', highWaterMark: CHUNK });
  const gunzip = createGunzip({ chunkSize: 1024 * 1024 });
  const done = pipeline(src, gunzip).catch((e: unknown) => e);
  const it = (gunzip as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  let pos = 0;
  const fail = async (e: unknown): Promise<never> => {
    throw await decompressError(path, ram, e);
  };
  const fill = async (want: number): Promise<void> => {
    while (pending.length < want) {
      let r: IteratorResult<Buffer>;
      try {
        r = await it.next();
      } catch (e) {
        return fail(e);
      }
      if (r.done) {
        const e = await done;
        if (e) return fail(e);
        throw new CaptureError(
          `${ram.name}: decompressed data ends at ${pos + pending.length} bytes (corrupted)`,
        );
      }
      pending = pending.length ? Buffer.concat([pending, r.value]) : r.value;
    }
  };
  return {
    async read(buf, n, offset) {
      if (offset < pos) throw new Error(`gzip RAM reader cannot seek back (${offset} < ${pos})`);
      while (pos < offset) {
        // skip a gap between ranges
        await fill(1);
        const k = Math.min(pending.length, offset - pos);
        pending = pending.subarray(k);
        pos += k;
      }
      let got = 0;
      while (got < n) {
        await fill(1);
        const k = Math.min(pending.length, n - got);
        pending.copy(buf, got, 0, k);
        pending = pending.subarray(k);
        got += k;
        pos += k;
      }
    },
    async close() {
      gunzip.destroy();
      src.destroy();
      await done;
    },
  };
}
