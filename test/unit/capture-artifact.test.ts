import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Unpackr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import { partialDirFor, verifyCapture } from '../../src/capture/artifact.js';
import {
  CAPTURE_FORMAT,
  CAPTURE_VERSION,
  decodeManifest,
  encodeManifest,
  MANIFEST,
  MANIFEST_SUM,
  VCPU_HEX_REGS,
  type CaptureManifest,
} from '../../src/capture/manifest.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-capart-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const reg = '0x1';

function makeCapture(name: string, mutate?: (m: CaptureManifest) => void): string {
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

function flip(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 1;
  writeFileSync(path, b);
}

describe('capture artifact', () => {
  it('the manifest is standard MessagePack (plain maps, no msgpackr records)', () => {
    const dir = makeCapture('std');
    const plain = new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(
      readFileSync(join(dir, MANIFEST)),
    ) as {
      format: string;
      parts: Record<string, { sha256: string }>;
    };
    expect(plain.format).toBe('vmi-capture');
    expect(Object.keys(plain.parts)).toContain('ram.raw');
    expect(decodeManifest(readFileSync(join(dir, MANIFEST))).id).toBe('test-id');
  });

  it('verifies a good capture', async () => {
    const r = await verifyCapture(makeCapture('good'));
    expect(Object.keys(r.partMs).sort()).toEqual([
      'boot/initrd-bbbb',
      'boot/vmlinux-aaaa',
      'devstate.bin',
      'ram.raw',
    ]);
  });

  it('names the part on a flipped byte in each part, the manifest and its checksum', async () => {
    for (const part of [
      'ram.raw',
      'devstate.bin',
      'boot/vmlinux-aaaa',
      'boot/initrd-bbbb',
      MANIFEST,
      MANIFEST_SUM,
    ]) {
      const dir = makeCapture(`flip-${part.replace('/', '_')}`);
      flip(join(dir, part), part === MANIFEST_SUM ? 0 : 3);
      // A flipped checksum byte is either a non-hex character (the .sha256 file is named)
      // or a mismatch (the manifest it covers is named).
      const named = part === MANIFEST_SUM ? 'manifest\\.(msgpack|sha256)' : part.replace('.', '\\.');
      await expect(verifyCapture(dir), part).rejects.toThrow(new RegExp(`^${named}: `));
    }
  });

  it('names a truncated, a grown and a missing part', async () => {
    const a = makeCapture('trunc');
    writeFileSync(join(a, 'ram.raw'), Buffer.alloc(100));
    await expect(verifyCapture(a)).rejects.toThrow('ram.raw: truncated (100 of 65536 bytes)');
    const b = makeCapture('grown');
    writeFileSync(join(b, 'devstate.bin'), Buffer.alloc(100));
    await expect(verifyCapture(b)).rejects.toThrow('devstate.bin: size mismatch');
    const c = makeCapture('missing');
    rmSync(join(c, 'boot/initrd-bbbb'));
    await expect(verifyCapture(c)).rejects.toThrow('boot/initrd-bbbb: missing part');
    const d = makeCapture('nomanifest');
    rmSync(join(d, MANIFEST));
    await expect(verifyCapture(d)).rejects.toThrow(`${MANIFEST}: missing`);
  });

  it('refuses a manifest with a good checksum but a bad shape', async () => {
    await expect(
      verifyCapture(makeCapture('fmt', (m) => ((m as { format: string }).format = 'other'))),
    ).rejects.toThrow(/manifest\.msgpack: not a vmi capture/);
    await expect(verifyCapture(makeCapture('ver', (m) => (m.version = 99)))).rejects.toThrow(
      /unsupported format version 99/,
    );
    await expect(
      verifyCapture(
        makeCapture('dots', (m) => (m.parts['../etc/passwd'] = { size: 1, sha256: '0'.repeat(64) })),
      ),
    ).rejects.toThrow(/bad part name/);
    await expect(verifyCapture(makeCapture('noram', (m) => delete m.parts['ram.raw']))).rejects.toThrow(
      /part ram\.raw not listed/,
    );
  });

  it('never verifies a partial (interrupted) capture directory', async () => {
    const dir = makeCapture('complete');
    const partial = partialDirFor(join(root, 'x.vmicap'), 4242);
    expect(partial).toBe(join(root, '.x.vmicap.partial-4242'));
    renameSync(dir, partial);
    await expect(verifyCapture(partial)).rejects.toThrow(/incomplete capture/);
  });
});
