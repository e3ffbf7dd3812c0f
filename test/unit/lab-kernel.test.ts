import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decompressorFor,
  findKernelPayload,
  isElf,
  KernelImageError,
  payloadFromHeader,
} from '../../src/lab/bzimage.js';
import { extractVmlinux, pickNewestKernel } from '../../src/lab/kernel.js';
import { ElfFormatError, moduleDepends, readModinfo } from '../../src/lab/modinfo.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmi-kernel-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const FAKE_ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(5000, 0x41)]);
const xz = (data: Buffer): Buffer => execFileSync('xz', ['-c', '--check=crc32'], { input: data });

/** A minimal bzImage: setup header fields + a payload in the protected-mode part. */
function fakeBzImage(
  payload: Buffer,
  opts: { setupSects?: number; version?: number; header?: boolean } = {},
): Buffer {
  const setupSects = opts.setupSects ?? 3;
  const pmStart = ((setupSects === 0 ? 4 : setupSects) + 1) * 512;
  const payloadOffset = 0x100;
  const img = Buffer.alloc(pmStart + payloadOffset + payload.length + 64, 0);
  img[0x1f1] = setupSects;
  if (opts.header !== false) img.write('HdrS', 0x202, 'ascii');
  img.writeUInt16LE(opts.version ?? 0x20f, 0x206);
  img.writeUInt32LE(payloadOffset, 0x248);
  img.writeUInt32LE(payload.length, 0x24c);
  payload.copy(img, pmStart + payloadOffset);
  // Trailing bytes after the payload, like the real image's footer.
  img.fill(0xee, pmStart + payloadOffset + payload.length);
  return img;
}

describe('findKernelPayload', () => {
  const payload = xz(FAKE_ELF);

  it('uses the setup header', () => {
    const img = fakeBzImage(payload);
    expect(findKernelPayload(img)).toEqual({
      offset: 4 * 512 + 0x100,
      length: payload.length,
      format: 'xz',
      source: 'header',
    });
  });

  it('treats setup_sects 0 as 4', () => {
    expect(payloadFromHeader(fakeBzImage(payload, { setupSects: 0 }))?.offset).toBe(5 * 512 + 0x100);
  });

  it('falls back to scanning for the magic', () => {
    for (const img of [fakeBzImage(payload, { header: false }), fakeBzImage(payload, { version: 0x206 })]) {
      const p = findKernelPayload(img);
      expect(p).toMatchObject({ offset: 4 * 512 + 0x100, format: 'xz', source: 'scan' });
      expect(p.length).toBe(img.length - p.offset);
    }
  });

  it('ignores header values that point outside the image', () => {
    const img = fakeBzImage(payload);
    img.writeUInt32LE(0x7fffffff, 0x24c);
    expect(payloadFromHeader(img)).toBeUndefined();
    expect(findKernelPayload(img).source).toBe('scan');
  });

  it('recognizes other formats and plain ELF', () => {
    const gz = execFileSync('gzip', ['-c'], { input: FAKE_ELF });
    expect(findKernelPayload(fakeBzImage(gz)).format).toBe('gzip');
    expect(findKernelPayload(FAKE_ELF)).toMatchObject({ offset: 0, format: 'elf' });
    expect(decompressorFor('xz')).toEqual(['xz', ['-dc', '--single-stream']]);
  });

  it('throws on garbage', () => {
    expect(() => findKernelPayload(Buffer.alloc(4096, 0x11))).toThrow(KernelImageError);
    expect(() => findKernelPayload(Buffer.alloc(0))).toThrow(KernelImageError);
  });
});

describe('extractVmlinux', () => {
  it('decompresses the payload and ignores trailing bytes', async () => {
    for (const [name, img] of [
      ['header', fakeBzImage(xz(FAKE_ELF))],
      ['scan', fakeBzImage(xz(FAKE_ELF), { header: false })],
    ] as const) {
      writeFileSync(join(tmp, `${name}.bz`), img);
      await extractVmlinux(join(tmp, `${name}.bz`), join(tmp, `${name}.elf`));
      const out = readFileSync(join(tmp, `${name}.elf`));
      expect(isElf(out)).toBe(true);
      expect(out.equals(FAKE_ELF)).toBe(true);
    }
  });

  it('fails when the result is not an ELF', async () => {
    writeFileSync(join(tmp, 'notelf.bz'), fakeBzImage(xz(Buffer.from('not an elf at all'))));
    await expect(extractVmlinux(join(tmp, 'notelf.bz'), join(tmp, 'notelf.out'))).rejects.toThrow(
      /not an ELF/,
    );
  });
});

describe('pickNewestKernel', () => {
  it('sorts by ABI number, not as strings', () => {
    const out = [
      'linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)',
      'linux-image-6.1.0-56-amd64 - Linux 6.1 for 64-bit PCs (signed)',
      'linux-image-6.1.0-100-amd64-dbg - debug',
      'linux-image-6.1.0-47-amd64 - Linux 6.1 for 64-bit PCs (signed)',
      '',
    ].join('\n');
    expect(pickNewestKernel(out)).toBe('linux-image-6.1.0-56-amd64');
    expect(pickNewestKernel('')).toBeUndefined();
  });
});

describe('readModinfo', () => {
  let hasGcc = true;
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
  } catch {
    hasGcc = false;
  }

  function objWithModinfo(entries: string[]): Buffer {
    const src = join(tmp, 'm.c');
    const body = entries.map(
      (e, i) =>
        `__attribute__((section(".modinfo"), used)) static const char m${i}[] = ${JSON.stringify(e)};`,
    );
    writeFileSync(src, body.join('\n') + '\nint x;\n');
    execFileSync('gcc', ['-c', '-o', join(tmp, 'm.o'), src]);
    return readFileSync(join(tmp, 'm.o'));
  }

  it.runIf(hasGcc)('reads keys and depends', () => {
    const none = objWithModinfo(['license=GPL', 'depends=', 'alias=a1', 'alias=a2', 'name=dummy']);
    expect(readModinfo(none).get('alias')).toEqual(['a1', 'a2']);
    expect(moduleDepends(none)).toEqual([]);
    expect(moduleDepends(objWithModinfo(['depends=libcrc32c,crc32c_generic']))).toEqual([
      'libcrc32c',
      'crc32c_generic',
    ]);
  });

  it.runIf(hasGcc)('rejects malformed ELF files', () => {
    const good = objWithModinfo(['depends=']);
    expect(() => readModinfo(Buffer.from('hello'))).toThrow(ElfFormatError);
    expect(() => readModinfo(good.subarray(0, 100))).toThrow(ElfFormatError);
    const badShoff = Buffer.from(good);
    badShoff.writeBigUInt64LE(BigInt(good.length), 0x28);
    expect(() => readModinfo(badShoff)).toThrow(/past end/);
    const bits32 = Buffer.from(good);
    bits32[4] = 1;
    expect(() => readModinfo(bits32)).toThrow(/64-bit/);
    writeFileSync(join(tmp, 'n.c'), 'int y;\n');
    execFileSync('gcc', ['-c', '-o', join(tmp, 'n.o'), join(tmp, 'n.c')]);
    expect(() => readModinfo(readFileSync(join(tmp, 'n.o')))).toThrow(/no .modinfo/);
  });
});
