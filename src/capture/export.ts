/**
 * `vmi capture export`: the capture's RAM as a raw image (file offset = guest-physical
 * address, holes zero-filled and sparse) or as an
 * ELF64 core with one PT_LOAD per RAM range and an NT_PRSTATUS per vCPU. A compressed
 * capture (ram.raw.gz) is decompressed on the fly.
 */
import { chmod, open, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { verifyCapture } from './artifact.js';
import { fileRamReader, gzipRamReader, type RamReader } from './compression.js';
import { copyRanges, writeElfCore } from './elf-core.js';
import { CaptureError, ramPartOf, type CaptureManifest } from './manifest.js';

export type ExportFormat = 'raw' | 'elf';

/**
 * Verifies `capture`, then writes its RAM to `output` (which must not exist) as `format`.
 * The file is created 0600 (guest memory) and gets `mode` (permission bits, e.g. 0o640)
 * only once complete. Returns its size in bytes and the time taken. Throws CaptureError.
 */
export async function exportCapture(
  capture: string,
  format: ExportFormat,
  output: string,
  mode = 0o600,
): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  const dir = resolve(capture);
  const out = resolve(output);
  if (
    await stat(out).then(
      () => true,
      () => false,
    )
  )
    throw new CaptureError(`${out} already exists`);
  const { manifest } = await verifyCapture(dir);
  const part = ramPartOf(manifest);
  const ram = join(dir, part.name);
  let bytes: number;
  if (format === 'raw') {
    bytes = await writeRawImage(
      out,
      part.compressed ? gzipRamReader(ram, part) : await fileRamReader(ram),
      manifest,
    );
  } else {
    bytes = await writeElfCore(
      out,
      part.compressed ? gzipRamReader(ram, part) : ram,
      manifest.vcpus,
      manifest.ram.map((r) => ({ paddr: BigInt(r.gpa), size: BigInt(r.size), fileOffset: r.offset })),
    );
  }
  // Umask-independent, and only on the finished file: it is never more open than asked.
  await chmod(out, mode);
  return { bytes, ms: performance.now() - t0 };
}

/**
 * A raw image as Volatility and LiME's "padded" format expect: file offset = guest-physical
 * address, each RAM range at its address, holes (the PCI hole, the legacy window) as
 * zeros. Written sparse (zero chunks and holes are not written), atomically through
 * OUT.partial-<pid>, mode 0600 (guest memory). Returns the image size in bytes.
 */
async function writeRawImage(out: string, src: RamReader, manifest: CaptureManifest): Promise<number> {
  const tmp = `${out}.partial-${process.pid}`;
  const ranges = [...manifest.ram].sort((a, b) => a.offset - b.offset);
  const size = ranges.reduce((a, r) => Math.max(a, r.gpa + r.size), 0);
  try {
    const dst = await open(tmp, 'wx', 0o600);
    try {
      await copyRanges(
        src,
        dst,
        ranges.map((r) => ({ from: r.offset, to: r.gpa, size: r.size })),
      );
      await dst.truncate(size);
      await dst.sync();
    } finally {
      await dst.close();
    }
    await rename(tmp, out);
    return size;
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await src.close();
  }
}
