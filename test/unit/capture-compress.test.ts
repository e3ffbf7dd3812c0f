import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { gunzipRamTo, gzipFile, gzipRamReader } from '../../src/capture/compression.js';
import type { RamPart } from '../../src/capture/manifest.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-capgz-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// Compressible with some noise, several chunks long.
const raw = Buffer.concat([Buffer.alloc(9 << 20, 0), randomBytes(1 << 20), Buffer.alloc(3 << 20, 0x5a)]);
const rawPath = join(root, 'ram.raw');
writeFileSync(rawPath, raw);

describe('ram.raw.gz', () => {
  let part: RamPart;
  const gz = join(root, 'ram.raw.gz');

  it('gzipFile: stored size and sha256 of the compressed file, uncompressed size', async () => {
    const info = await gzipFile(rawPath, gz);
    const stored = readFileSync(gz);
    expect(info).toEqual({
      size: stored.length,
      sha256: createHash('sha256').update(stored).digest('hex'),
      compression: 'gzip',
      uncompressedSize: raw.length,
    });
    expect(stored.length).toBeLessThan(raw.length / 4);
    expect(gunzipSync(stored).equals(raw)).toBe(true);
    part = { name: 'ram.raw.gz', info, compressed: true, rawSize: raw.length };
  });

  it('gunzipRamTo: byte-identical, hash checked on the way', async () => {
    const out = join(root, 'out.raw');
    await gunzipRamTo(gz, part, out, { flags: 'wx', verify: true });
    expect(readFileSync(out).equals(raw)).toBe(true);
  });

  it('gzipRamReader: forward reads, with a gap', async () => {
    const r = gzipRamReader(gz, part);
    const a = Buffer.alloc(5000);
    await r.read(a, 5000, 100);
    expect(a.equals(raw.subarray(100, 5100))).toBe(true);
    const b = Buffer.alloc(2 << 20);
    await r.read(b, b.length, 9 << 20);
    expect(b.equals(raw.subarray(9 << 20, 11 << 20))).toBe(true);
    await expect(r.read(a, 10, 0)).rejects.toThrow(/cannot seek back/);
    await r.close();
  });

  it('a corrupted part: sha256 mismatch naming the part; bad gzip with a matching hash: decompression failed', async () => {
    const bad = join(root, 'bad.gz');
    const stored = Buffer.from(readFileSync(gz));
    stored[Math.floor(stored.length / 2)] ^= 1;
    writeFileSync(bad, stored);
    await expect(gunzipRamTo(bad, part, join(root, 'o1'), { flags: 'wx', verify: true })).rejects.toThrow(
      /^ram\.raw\.gz: sha256 mismatch/,
    );
    const resigned: RamPart = {
      ...part,
      info: { ...part.info, sha256: createHash('sha256').update(stored).digest('hex') },
    };
    await expect(gunzipRamTo(bad, resigned, join(root, 'o2'), { flags: 'wx' })).rejects.toThrow(
      /^ram\.raw\.gz: (decompression failed|decompresses to)/,
    );
    const r = gzipRamReader(bad, resigned);
    const buf = Buffer.alloc(raw.length);
    await expect(r.read(buf, raw.length, 0)).rejects.toThrow(
      /^ram\.raw\.gz: (decompression failed|decompressed data ends)/,
    );
    await r.close();
  });
});
