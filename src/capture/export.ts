/**
 * `vmi capture export`: the capture's RAM as a raw image (a copy of ram.raw) or as an
 * ELF64 core with one PT_LOAD per RAM range and an NT_PRSTATUS per vCPU.
 */
import { constants } from 'node:fs';
import { copyFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { verifyCapture } from './artifact.js';
import { writeElfCore } from './elf-core.js';
import { CaptureError, RAM_PART } from './manifest.js';

export type ExportFormat = 'raw' | 'elf';

export async function exportCapture(
  capture: string,
  format: ExportFormat,
  output: string,
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
  const ram = join(dir, RAM_PART);
  let bytes: number;
  if (format === 'raw') {
    const tmp = `${out}.partial-${process.pid}`;
    try {
      await copyFile(ram, tmp, constants.COPYFILE_EXCL);
      await rename(tmp, out);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    bytes = manifest.parts[RAM_PART].size;
  } else {
    bytes = await writeElfCore(
      out,
      ram,
      manifest.vcpus,
      manifest.ram.map((r) => ({ paddr: BigInt(r.gpa), size: BigInt(r.size), fileOffset: r.offset })),
    );
  }
  return { bytes, ms: performance.now() - t0 };
}
