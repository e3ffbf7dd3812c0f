/**
 * Disk images through qemu-img: what an image is (`qemu-img info --output=json`, format
 * probed by qemu-img itself, never guessed from the name) and copy-on-write overlays
 * (`qemu-img create -f qcow2 -b BASE -F FMT`), which open the base read-only.
 */
import { spawn } from 'node:child_process';
import { QemuError } from './launcher.js';

/** qemu-img: $VMI_QEMU_IMG, else on PATH. */
export function qemuImgPath(): string {
  return process.env.VMI_QEMU_IMG ?? 'qemu-img';
}

function run(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(qemuImgPath(), args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new QemuError(
          e.code === 'ENOENT' ? 'qemu-img not found: install the Debian package qemu-utils' : e.message,
        ),
      ),
    );
    child.on('exit', (code) => {
      if (code === 0) resolve(out);
      else
        reject(
          new QemuError(
            `qemu-img ${args[0]} failed: ${err.trim().split('\n').slice(-1)[0] || `exit ${code}`}`,
          ),
        );
    });
  });
}

export interface DiskImageInfo {
  format: string;
  virtualSize: number;
  /** Backing file of a qcow2 image, if any. */
  backing?: string;
}

/** Format and size of an image (read-only; `-U` so an image a running QEMU holds is read too). */
export async function diskImageInfo(path: string): Promise<DiskImageInfo> {
  const j = JSON.parse(await run(['info', '-U', '--output=json', path])) as {
    format?: string;
    'virtual-size'?: number;
    'backing-filename'?: string;
  };
  if (typeof j.format !== 'string' || !Number.isSafeInteger(j['virtual-size']))
    throw new QemuError(`qemu-img info ${path}: no format or size`);
  return {
    format: j.format,
    virtualSize: j['virtual-size']!,
    ...(j['backing-filename'] ? { backing: j['backing-filename'] } : {}),
  };
}

/**
 * Creates a qcow2 overlay over `base` (opened read-only by qemu-img to learn its size;
 * never written). The overlay records the base's path; replays pass the base explicitly.
 */
export async function createOverlay(overlay: string, base: string, baseFormat: string): Promise<void> {
  if (!base.startsWith('/')) throw new QemuError(`backing file must be an absolute path: ${base}`);
  await run(['create', '-q', '-f', 'qcow2', '-b', base, '-F', baseFormat, overlay]);
}
