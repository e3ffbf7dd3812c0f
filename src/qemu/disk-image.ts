/**
 * Per-guest disk overlays: a qcow2 file whose backing file is a read-only base image.
 * QEMU opens a backing file read-only, so every guest write lands in the overlay and the
 * base (a cached image, or a user's disk) stays byte-identical.
 */
import { spawn } from 'node:child_process';
import { QemuError } from './launcher.js';

/** Runs qemu-img; rejects with its last stderr line. */
function qemuImg(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.env.VMI_QEMU_IMG ?? 'qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT' ? new QemuError('qemu-img not found: install the Debian package qemu-utils') : e,
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else
        reject(
          new QemuError(`qemu-img ${args[0]} failed: ${err.trim().split('\n').pop() ?? `exit ${code}`}`),
        );
    });
  });
}

/**
 * Creates `overlay` (qcow2) on top of `base` (absolute path, format `baseFormat`); the
 * overlay has the base's virtual size. Fails if `overlay` exists.
 */
export async function createOverlay(
  base: string,
  baseFormat: 'raw' | 'qcow2',
  overlay: string,
): Promise<void> {
  if (!base.startsWith('/')) throw new QemuError(`backing file must be an absolute path: ${base}`);
  await qemuImg(['create', '-q', '-f', 'qcow2', '-F', baseFormat, '-b', base, overlay]);
}
