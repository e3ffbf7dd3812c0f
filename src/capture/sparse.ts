/**
 * Guest RAM files are mostly holes: an 8 GiB guest that has touched 300 MiB has a
 * 300 MiB RAM file on tmpfs. A plain copy (copy_file_range, or write of every chunk)
 * fills the holes and costs the host the whole 8 GiB, so RAM is copied with its all-zero
 * chunks left as holes. Reading a tmpfs hole allocates nothing (it maps the zero page):
 * measured 0.6 s for an 8 GiB file with 400 MiB of data.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';

/** Granularity of hole detection: 1 MiB chunks (a zero chunk is skipped, not written). */
const CHUNK = 1024 * 1024;
const ZERO = Buffer.alloc(CHUNK);

/** True when the first `n` bytes of `buf` are all zero (memcmp against a zero buffer). */
export function isZero(buf: Uint8Array, n = buf.length): boolean {
  for (let at = 0; at < n; at += CHUNK) {
    const len = Math.min(CHUNK, n - at);
    if (!Buffer.from(buf.buffer, buf.byteOffset + at, len).equals(ZERO.subarray(0, len))) return false;
  }
  return true;
}

/**
 * Copies `src` to a new file `dst` (0600, created exclusively) keeping its holes, as fast
 * as the host allows: GNU cp's `--sparse=always` finds the data with SEEK_DATA/SEEK_HOLE
 * and never reads a hole (8 GiB with 400 MiB of data: 0.14 s, against 0.6 s reading every
 * byte), which matters while the guest is paused. Without GNU cp, {@link copySparse}.
 */
export async function copySparseFast(src: string, dst: string): Promise<void> {
  // Exclusive 0600 creation is ours; cp then writes into the existing file (keeping its mode).
  await (await open(dst, 'wx', 0o600)).close();
  const ok = await new Promise<boolean>((resolve) => {
    const cp = spawn('cp', ['--sparse=always', '--', src, dst], { stdio: 'ignore' });
    cp.on('error', () => resolve(false));
    cp.on('exit', (code) => resolve(code === 0));
  });
  if (ok) return;
  await unlink(dst);
  await copySparse(src, dst);
}

/**
 * Copies `src` to a new file `dst` (0600, created exclusively: EEXIST if it exists),
 * writing only non-zero 1 MiB chunks; the size is set with ftruncate. `onChunk` sees every
 * chunk read (zero ones too) with its offset, so a caller can hash in the same pass.
 * Returns the bytes copied (the file size) and the bytes actually written.
 */
export async function copySparse(
  src: string,
  dst: string,
  onChunk?: (chunk: Buffer, offset: number) => void,
): Promise<{ size: number; written: number }> {
  const from = await open(src, constants.O_RDONLY);
  try {
    const size = (await from.stat()).size;
    const to = await open(dst, 'wx', 0o600);
    try {
      const buf = Buffer.allocUnsafe(CHUNK);
      let written = 0;
      for (let off = 0; off < size;) {
        const { bytesRead } = await from.read(buf, 0, Math.min(CHUNK, size - off), off);
        if (bytesRead === 0) throw new Error(`${src}: shrank while copying`);
        onChunk?.(buf.subarray(0, bytesRead), off);
        if (!isZero(buf, bytesRead)) {
          await to.write(buf, 0, bytesRead, off);
          written += bytesRead;
        }
        off += bytesRead;
      }
      await to.truncate(size);
      return { size, written };
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}
