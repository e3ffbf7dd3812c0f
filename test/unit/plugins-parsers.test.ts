import { describe, expect, it } from 'vitest';
import {
  parseModules,
  parseMountInfo,
  ProcParseError,
  unescapeMountField,
} from '../../src/abi/linux/proc/index.js';

const MODULES =
  'nls_utf8 12288 0 - Live 0xffffffffc0210000\n' +
  'dummy 16384 0 - Live 0xffffffffc0200000 (O)\n' +
  'crc32c_generic 12288 2 btrfs,ext4, Live 0x0000000000000000 (OE)\n' +
  'noun 4096 - - Unloading 0x0000000000000000\n';

const MOUNTINFO =
  '1 0 0:2 / / rw - rootfs none rw\n' +
  '16 1 0:4 / /proc rw,relatime shared:5 master:2 - proc proc rw\n' +
  '22 1 0:20 / /mnt/evidence rw,nosuid,nodev,relatime - tmpfs evidence rw,size=16384k,mode=700\n' +
  '23 1 8:1 /a\\040dir /mnt/with\\040space\\011tab rw - ext4 /dev/sd\\134a rw\n';

/** Deterministic PRNG so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomText(r: () => number, alphabet: string, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

describe('parseModules', () => {
  it('parses the kernel format', () => {
    const { entries, errors } = parseModules(MODULES);
    expect(errors).toEqual([]);
    expect(entries).toHaveLength(4);
    expect(entries[1]).toEqual({
      name: 'dummy',
      size: 16384,
      refcount: 0,
      users: [],
      state: 'Live',
      offset: 0xffffffffc0200000n,
      taints: 'O',
    });
    expect(entries[2].users).toEqual(['btrfs', 'ext4']);
    expect(entries[2].offset).toBe(0n);
    expect(entries[3].refcount).toBeUndefined();
  });

  it('reports bad lines and keeps the good ones', () => {
    const { entries, errors } = parseModules(
      'ok 1 0 - Live 0x0\nbroken line\nbad 12x 0 - Live 0x0\nx 1 0 - Live 0xzz\n',
      '/proc/modules',
    );
    expect(entries.map((m) => m.name)).toEqual(['ok']);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toBeInstanceOf(ProcParseError);
    expect(errors[0].message).toMatch(/^\/proc\/modules:2: /);
  });

  it('never throws on random or truncated input', () => {
    const r = rng(1);
    for (let i = 0; i < 2000; i++) {
      const input = randomText(r, 'abc_ 0123456789x-,()LiveOE\n\t\0\\é', Math.floor(r() * 200));
      const res = parseModules(input);
      for (const m of res.entries) expect(Number.isSafeInteger(m.size)).toBe(true);
    }
    for (let n = 0; n <= MODULES.length; n++) {
      const res = parseModules(MODULES.slice(0, n));
      expect(res.entries.length + res.errors.length).toBeLessThanOrEqual(4);
    }
    expect(parseModules(new Uint8Array([0xff, 0xfe, 0x0a, 0x00])).entries).toEqual([]);
  });
});

describe('parseMountInfo', () => {
  it('parses optional fields, the separator and escapes', () => {
    // Bytes as the guest returns them: the kernel's backslash is byte text `\x5c` after decoding.
    const { entries, errors } = parseMountInfo(Buffer.from(MOUNTINFO));
    expect(errors).toEqual([]);
    expect(entries).toHaveLength(4);
    expect(entries[1]).toMatchObject({
      mountId: 16,
      parentId: 1,
      major: 0,
      minor: 4,
      mountPoint: '/proc',
      fields: ['shared:5', 'master:2'],
      fsType: 'proc',
      source: 'proc',
    });
    expect(entries[2]).toMatchObject({
      mountPoint: '/mnt/evidence',
      mountOptions: 'rw,nosuid,nodev,relatime',
      fields: [],
      fsType: 'tmpfs',
      source: 'evidence',
      superOptions: 'rw,size=16384k,mode=700',
    });
    expect(entries[3]).toMatchObject({
      root: '/a dir',
      mountPoint: '/mnt/with space\ttab',
      // A backslash is `\x5c` in byte text.
      source: '/dev/sd\\x5ca',
    });
  });

  it('unescapes only 3-digit octal escapes', () => {
    // Byte text: the kernel's backslash reads `\x5c`.
    expect(unescapeMountField('a\\x5c040b\\x5c012c\\x5c134d')).toBe('a b\nc\\x5cd');
    expect(unescapeMountField('\\x5c04x\\x5c')).toBe('\\x5c04x\\x5c');
  });

  it('reports bad lines and keeps the good ones', () => {
    const { entries, errors } = parseMountInfo(
      '1 0 0:2 / / rw - rootfs none rw\n2 1 0:2 / / rw no-separator rootfs none rw\n3 1 x / / rw - a b c\n',
      '/proc/1/mountinfo',
    );
    expect(entries.map((e) => e.mountId)).toEqual([1]);
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/^\/proc\/1\/mountinfo:2: not a mountinfo line/),
      expect.stringMatching(/^\/proc\/1\/mountinfo:3: bad MAJOR:MINOR/),
    ]);
  });

  it('never throws on random or truncated input', () => {
    const r = rng(2);
    for (let i = 0; i < 2000; i++) {
      const input = randomText(r, '0123456789: /-\\abcrw,\n\t\0', Math.floor(r() * 300));
      const res = parseMountInfo(input);
      for (const m of res.entries) expect(Number.isSafeInteger(m.mountId)).toBe(true);
    }
    for (let n = 0; n <= MOUNTINFO.length; n++) {
      const res = parseMountInfo(MOUNTINFO.slice(0, n));
      expect(res.entries.length + res.errors.length).toBeLessThanOrEqual(4);
    }
  });
});
