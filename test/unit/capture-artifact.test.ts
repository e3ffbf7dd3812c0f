import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Unpackr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import { makeCapture as fixtureCapture } from '../helpers/capture-fixture.js';
import { partialDirFor, verifyCapture } from '../../src/capture/artifact.js';
import { decodeManifest, MANIFEST, MANIFEST_SUM, type CaptureManifest } from '../../src/capture/manifest.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-capart-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const makeCapture = (name: string, mutate?: (m: CaptureManifest) => void): string =>
  fixtureCapture(root, name, mutate);

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
