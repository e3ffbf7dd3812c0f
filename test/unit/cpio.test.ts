import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CpioFormatError,
  normalizeCpioPath,
  readCpio,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  writeCpio,
  type CpioEntry,
} from '../../src/lab/cpio.js';

const ENTRIES: CpioEntry[] = [
  { type: 'dir', path: '/bin' },
  { type: 'dir', path: 'dev' },
  { type: 'dir', path: 'tmp', mode: 0o1777 },
  { type: 'file', path: '/bin/tool', data: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]), mode: 0o755 },
  { type: 'file', path: 'init', data: '#!/bin/sh\necho hi\n', mode: 0o755 },
  { type: 'file', path: 'empty', data: '' },
  { type: 'symlink', path: 'bin/sh', target: '/bin/tool' },
  { type: 'char', path: 'dev/console', major: 5, minor: 1 },
  { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
  { type: 'char', path: 'dev/ttyS0', major: 4, minor: 64 },
];

const hasCpio = (() => {
  try {
    execFileSync('cpio', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const isRoot = process.getuid?.() === 0;
const tmp = mkdtempSync(join(tmpdir(), 'vmi-cpio-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('writeCpio', () => {
  const archive = writeCpio(ENTRIES);

  it('aligns every record to 4 bytes and ends with the trailer', () => {
    expect(archive.length % 4).toBe(0);
    expect(archive.subarray(0, 6).toString()).toBe('070701');
    expect(archive.toString('latin1')).toContain('TRAILER!!!\0');
  });

  it('reads back with our reader', () => {
    const recs = readCpio(archive);
    expect(recs.map((r) => r.name)).toEqual([
      'bin',
      'dev',
      'tmp',
      'bin/tool',
      'init',
      'empty',
      'bin/sh',
      'dev/console',
      'dev/null',
      'dev/ttyS0',
    ]);
    const by = Object.fromEntries(recs.map((r) => [r.name, r]));
    expect(by['tmp']!.mode).toBe(S_IFDIR | 0o1777);
    expect(by['bin/tool']!.mode).toBe(S_IFREG | 0o755);
    expect(by['bin/tool']!.data).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]));
    expect(by['init']!.data.toString()).toBe('#!/bin/sh\necho hi\n');
    expect(by['empty']!.data.length).toBe(0);
    expect(by['bin/sh']!.mode).toBe(S_IFLNK | 0o777);
    expect(by['bin/sh']!.data.toString()).toBe('/bin/tool');
    expect(by['dev/ttyS0']).toMatchObject({ mode: S_IFCHR | 0o600, rdevMajor: 4, rdevMinor: 64 });
    expect(by['dev/null']).toMatchObject({ mode: S_IFCHR | 0o666, rdevMajor: 1, rdevMinor: 3 });
    expect(new Set(recs.map((r) => r.ino)).size).toBe(recs.length);
  });

  it('is reproducible', () => {
    expect(writeCpio(ENTRIES).equals(archive)).toBe(true);
    expect(readCpio(writeCpio(ENTRIES, { mtime: 1234 }))[0]!.mtime).toBe(1234);
  });

  it.runIf(hasCpio)('lists with the host cpio -t', () => {
    const out = execFileSync('cpio', ['-t', '--quiet'], { input: archive }).toString();
    expect(out.trim().split('\n')).toEqual(readCpio(archive).map((r) => r.name));
    const long = execFileSync('cpio', ['-tv', '--quiet'], { input: archive }).toString();
    expect(long).toMatch(/^crw-------.*\b4,\s*64\b.*dev\/ttyS0$/m);
    expect(long).toMatch(/^lrwxrwxrwx.*bin\/sh -> \/bin\/tool$/m);
  });

  it.runIf(hasCpio)('extracts with the host cpio -i', () => {
    const dir = join(tmp, 'x');
    execFileSync('mkdir', ['-p', dir]);
    const args = ['-i', '-d', '--quiet', '--no-absolute-filenames'];
    // Device nodes need root to create; skip them otherwise.
    const input = isRoot ? archive : writeCpio(ENTRIES.filter((e) => e.type !== 'char'));
    execFileSync('cpio', args, { input, cwd: dir });
    expect(readFileSync(join(dir, 'init'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(statSync(join(dir, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(dir, 'bin/sh'))).toBe('/bin/tool');
    if (isRoot) {
      const st = lstatSync(join(dir, 'dev/console'));
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe((5 << 8) | 1);
    }
  });

  it.runIf(hasCpio)('reads archives written by the host cpio', () => {
    const dir = join(tmp, 'src');
    execFileSync('mkdir', ['-p', join(dir, 'a')]);
    writeFileSync(join(dir, 'a', 'f.txt'), 'hello\n');
    const arc = execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { input: 'a\na/f.txt\n', cwd: dir });
    const recs = readCpio(arc);
    expect(recs.map((r) => r.name)).toEqual(['a', 'a/f.txt']);
    expect(recs[1]!.data.toString()).toBe('hello\n');
  });

  it('rejects bad entries', () => {
    expect(() => writeCpio([{ type: 'dir', path: '../etc' }])).toThrow(CpioFormatError);
    expect(() => writeCpio([{ type: 'dir', path: '/' }])).toThrow(CpioFormatError);
    expect(() => writeCpio([{ type: 'dir', path: 'a\0b' }])).toThrow(CpioFormatError);
    expect(() =>
      writeCpio([
        { type: 'dir', path: 'a' },
        { type: 'dir', path: '/a/' },
      ]),
    ).toThrow(/duplicate/);
    expect(() => writeCpio([{ type: 'file', path: 'f', data: '', mode: 0o10000 }])).toThrow(/bad mode/);
    expect(() => writeCpio([{ type: 'char', path: 'c', major: -1, minor: 0 }])).toThrow(/out of range/);
    expect(() => writeCpio([{ type: 'symlink', path: 's', target: '' }])).toThrow(/symlink/);
    expect(normalizeCpioPath('//usr/./bin/')).toBe('usr/bin');
  });
});

describe('readCpio on malformed input', () => {
  const good = writeCpio([{ type: 'file', path: 'f', data: 'abcdef' }]);

  it('rejects bad magic', () => {
    const bad = Buffer.from(good);
    bad.write('070707', 0, 'ascii');
    expect(() => readCpio(bad)).toThrow(/bad cpio magic/);
  });

  it('rejects non-hex fields', () => {
    const bad = Buffer.from(good);
    bad.write('zz', 6 + 6 * 8, 'ascii'); // filesize
    expect(() => readCpio(bad)).toThrow(/bad hex in cpio filesize/);
  });

  it('rejects truncation anywhere', () => {
    for (const cut of [0, 50, 111, 115, 120, good.length - 120]) {
      expect(() => readCpio(good.subarray(0, cut))).toThrow(CpioFormatError);
    }
  });

  it('rejects a missing trailer', () => {
    const first = readCpio(good);
    expect(first).toHaveLength(1);
    const noTrailer = good.subarray(0, good.indexOf('070701', 6));
    expect(() => readCpio(noTrailer)).toThrow(/truncated cpio header/);
  });

  it('rejects oversized lengths without reading past the buffer', () => {
    const bad = Buffer.from(good);
    bad.write('ffffffff', 6 + 6 * 8, 'ascii');
    expect(() => readCpio(bad)).toThrow(/truncated cpio data/);
    const bad2 = Buffer.from(good);
    bad2.write('00000000', 6 + 11 * 8, 'ascii'); // namesize 0
    expect(() => readCpio(bad2)).toThrow(/empty cpio name/);
    const bad3 = Buffer.from(good);
    bad3.write('00000001', 6 + 11 * 8, 'ascii'); // name "f" without its NUL
    expect(() => readCpio(bad3)).toThrow(/NUL-terminated/);
  });
});
