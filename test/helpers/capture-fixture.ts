/**
 * A small, valid capture directory for tests that need one without a guest: 64 KiB of
 * RAM, a device state, kernel and initramfs parts, and a manifest with every register
 * field decode checks. `mutate` changes the manifest before it is written.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CAPTURE_FORMAT,
  CAPTURE_VERSION,
  encodeManifest,
  MANIFEST,
  MANIFEST_SUM,
  VCPU_HEX_REGS,
  type CaptureManifest,
} from '../../src/capture/manifest.js';

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const reg = '0x1';

/** Writes the capture as `root/name` and returns its path. */
export function makeCapture(root: string, name: string, mutate?: (m: CaptureManifest) => void): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'boot'), { recursive: true });
  const files: Record<string, Buffer> = {
    'ram.raw': Buffer.alloc(65536, 7),
    'devstate.bin': Buffer.from('QEVM device state'),
    'boot/vmlinux-aaaa': Buffer.from('kernel'),
    'boot/initrd-bbbb': Buffer.from('initrd'),
  };
  for (const [n, b] of Object.entries(files)) writeFileSync(join(dir, n), b);
  // Every register decode checks, and the MSRs a capture records without decode checking them.
  const regs = Object.fromEntries([...VCPU_HEX_REGS, 'star', 'cstar', 'fmask'].map((k) => [k, reg]));
  const m = {
    format: CAPTURE_FORMAT,
    version: CAPTURE_VERSION,
    id: 'test-id',
    createdAt: new Date(0).toISOString(),
    tool: { name: 'vmi', version: '0.0.0' },
    mode: 'shared-ram',
    guest: { name: 'g' },
    qemu: { version: '7.2.22' },
    machine: {
      machineType: 'pc-q35-7.2',
      cpuModel: 'max',
      cpus: 1,
      memMiB: 1,
      append: '',
      kernelPart: 'boot/vmlinux-aaaa',
      initrdPart: 'boot/initrd-bbbb',
    },
    ram: [{ gpa: 0, size: 65536, offset: 0 }],
    vcpus: [{ index: 0, cs: 0x10, ss: 0x18, ds: 0, es: 0, fs: 0, gs: 0, ...regs }],
    timing: { pauseMs: 1, migrateMs: 1, copyMs: 1 },
    parts: Object.fromEntries(Object.entries(files).map(([n, b]) => [n, { size: b.length, sha256: sha(b) }])),
  } as CaptureManifest;
  mutate?.(m);
  const buf = encodeManifest(m);
  writeFileSync(join(dir, MANIFEST), buf);
  writeFileSync(join(dir, MANIFEST_SUM), sha(buf) + '\n');
  return dir;
}
