/**
 * Sparse RAM handling: copies keep all-zero MiBs as holes, and the `sha256-sparse` digest
 * of ram.raw (SHA-256 of offset-prefixed non-zero MiBs) is what an independent
 * computation gives, and changes whenever any byte does.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hashFile } from '../../src/capture/artifact.js';
import { copySparse, isZero } from '../../src/capture/sparse.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'vmi-sparse-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** 16 MiB with data in MiB 3 and 10 and a partial last MiB, zeros elsewhere. */
function image(): Buffer {
  const b = Buffer.alloc(16 * MiB + 1234);
  b.fill(0xa5, 3 * MiB, 3 * MiB + 100);
  b.fill(0x5a, 10 * MiB + 5, 11 * MiB);
  b[b.length - 1] = 1;
  return b;
}

/** The sparse digest computed here, independently of artifact.ts. */
function expected(b: Buffer): string {
  const h = createHash('sha256');
  for (let off = 0; off < b.length; off += MiB) {
    const piece = b.subarray(off, off + MiB);
    if (piece.equals(Buffer.alloc(piece.length))) continue;
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(off));
    h.update(prefix).update(piece);
  }
  return h.digest('hex');
}

describe('sparse RAM files', () => {
  it('isZero looks at every byte', () => {
    const b = Buffer.alloc(3 * MiB);
    expect(isZero(b)).toBe(true);
    b[3 * MiB - 1] = 1;
    expect(isZero(b)).toBe(false);
    expect(isZero(b, 3 * MiB - 1)).toBe(true);
  });

  it('copySparse copies every byte and leaves zero MiBs as holes', async () => {
    const src = join(dir, 'src');
    const b = image();
    writeFileSync(src, b);
    const dst = join(dir, 'dst');
    const r = await copySparse(src, dst);
    // MiB 3, MiB 10 and the 1234-byte tail.
    expect(r).toEqual({ size: b.length, written: 2 * MiB + 1234 });
    expect(
      createHash('sha256')
        .update(await import('node:fs').then((f) => f.readFileSync(dst)))
        .digest('hex'),
    ).toBe(createHash('sha256').update(b).digest('hex'));
    expect(statSync(dst).blocks * 512).toBeLessThanOrEqual(4 * MiB);
    await expect(copySparse(src, dst)).rejects.toThrow(/EEXIST/);
  });

  it('the sha256-sparse digest matches an independent computation and catches any change', async () => {
    const b = image();
    const path = join(dir, 'ram');
    writeFileSync(path, b);
    const got = await hashFile(path, undefined, 'sha256-sparse');
    expect(got).toEqual({ size: b.length, sha256: expected(b), digest: 'sha256-sparse' });
    expect((await hashFile(path)).sha256).toBe(createHash('sha256').update(b).digest('hex'));
    const variants: [string, (x: Buffer) => void][] = [
      ['a byte in a zero MiB', (x) => (x[7 * MiB] = 1)],
      ['a data MiB zeroed', (x) => x.fill(0, 3 * MiB, 4 * MiB)],
      ['a data byte changed', (x) => (x[10 * MiB + 7] ^= 1)],
      [
        'data moved to another MiB',
        (x) => {
          x.copy(x, 5 * MiB, 3 * MiB, 4 * MiB);
          x.fill(0, 3 * MiB, 4 * MiB);
        },
      ],
    ];
    for (const [what, change] of variants) {
      const c = Buffer.from(b);
      change(c);
      writeFileSync(path, c);
      expect((await hashFile(path, undefined, 'sha256-sparse')).sha256, what).not.toBe(got.sha256);
    }
  });
});
