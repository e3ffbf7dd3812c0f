/**
 * `vmi capture export`: the capture's RAM as a raw image (a copy of ram.raw) or as an
 * ELF64 core with one PT_LOAD per RAM range and an NT_PRSTATUS per vCPU. A compressed
 * capture (ram.raw.gz) is decompressed on the fly.
 */
import { constants } from 'node:fs';
import { chmod, copyFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { verifyCapture } from './artifact.js';
import { gunzipRamTo, gzipRamReader } from './compression.js';
import { writeElfCore } from './elf-core.js';
import { CaptureError, ramPartOf } from './manifest.js';

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
    const tmp = `${out}.partial-${process.pid}`;
    try {
      if (part.compressed) await gunzipRamTo(ram, part, tmp, { flags: 'wx' });
      else await copyFile(ram, tmp, constants.COPYFILE_EXCL);
      // Guest memory: readable by its owner only, whatever the capture's file had.
      await chmod(tmp, 0o600);
      await rename(tmp, out);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    bytes = part.rawSize;
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
