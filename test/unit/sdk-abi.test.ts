import { describe, expect, it } from 'vitest';
import { errnoMessage, errnoName, errnoNumber } from '../../src/abi/linux/errno.js';
import { AT_FDCWD, O_CLOEXEC, O_DIRECTORY, STATX_BASIC_STATS } from '../../src/abi/linux/flags.js';
import {
  decodeDirents64,
  decodeStatx,
  decodeSysinfo,
  decodeUtsname,
  encodeDirents64,
  StructDecodeError,
} from '../../src/abi/linux/structs.js';
import { allSyscalls, KNOWN_SYSCALLS, syscallName, sysno, sysnoOf } from '../../src/abi/linux/syscalls.js';

describe('syscall table', () => {
  it('has the x86-64 numbers', () => {
    expect(sysno('read')).toBe(0);
    expect(sysno('openat')).toBe(257);
    expect(sysno('getdents64')).toBe(217);
    expect(sysno('pread64')).toBe(17);
    expect(sysno('statx')).toBe(332);
    expect(sysno('close_range')).toBe(436);
    expect(sysno('process_vm_readv')).toBe(310);
    expect(sysno('exit_group')).toBe(231);
    expect(sysnoOf('io_uring_setup')).toBe(425);
    expect(sysnoOf('nope')).toBeUndefined();
    expect(syscallName(257)).toBe('openat');
    expect(syscallName(99999)).toBe('syscall_99999');
    for (const n of KNOWN_SYSCALLS) expect(allSyscalls().has(n)).toBe(true);
  });
});

describe('errno', () => {
  it('names and messages', () => {
    expect(errnoName(2)).toBe('ENOENT');
    expect(errnoName(-13)).toBe('EACCES');
    expect(errnoName(11)).toBe('EAGAIN');
    expect(errnoName(9999)).toBe('E9999');
    expect(errnoMessage(2)).toBe('No such file or directory');
    expect(errnoNumber('ESRCH')).toBe(3);
  });
});

describe('flags', () => {
  it('match the kernel', () => {
    expect(AT_FDCWD).toBe(-100);
    expect(O_DIRECTORY).toBe(0x10000);
    expect(O_CLOEXEC).toBe(0x80000);
    expect(STATX_BASIC_STATS).toBe(0x7ff);
  });
});

describe('structs', () => {
  it('round-trips dirents', () => {
    const entries = [
      { ino: 1n, off: 1n, type: 4, name: '.' },
      { ino: 2n, off: 2n, type: 8, name: 'a-long-file-name.txt' },
      { ino: 3n, off: 3n, type: 10, name: 'ünïcode' },
    ];
    expect(decodeDirents64(encodeDirents64(entries))).toEqual(entries);
    expect(decodeDirents64(new Uint8Array(0))).toEqual([]);
  });

  it('rejects bad reclen instead of looping', () => {
    const good = encodeDirents64([{ ino: 1n, off: 1n, type: 8, name: 'x' }]);
    for (const reclen of [0, 1, 19, 0xffff]) {
      const bad = good.slice();
      new DataView(bad.buffer).setUint16(16, reclen, true);
      expect(() => decodeDirents64(bad)).toThrow(StructDecodeError);
    }
    expect(() => decodeDirents64(good.subarray(0, 10))).toThrow(StructDecodeError);
    // Random garbage terminates.
    for (let i = 0; i < 500; i++) {
      const buf = new Uint8Array(64 + (i % 200)).map(() => Math.floor(Math.random() * 256));
      try {
        decodeDirents64(buf);
      } catch (e) {
        expect(e).toBeInstanceOf(StructDecodeError);
      }
    }
  });

  it('decodes utsname, sysinfo, statx and rejects short buffers', () => {
    const u = new Uint8Array(390);
    u.set(new TextEncoder().encode('Linux'), 0);
    u.set(new TextEncoder().encode('6.1.0'), 130);
    expect(decodeUtsname(u)).toMatchObject({ sysname: 'Linux', release: '6.1.0', nodename: '' });
    expect(() => decodeUtsname(u.subarray(0, 100))).toThrow(StructDecodeError);

    const s = new Uint8Array(112);
    const dv = new DataView(s.buffer);
    dv.setBigInt64(0, 77n, true);
    dv.setBigUint64(8, 2n * 65536n, true);
    dv.setBigUint64(32, 10n, true);
    dv.setUint16(80, 5, true);
    dv.setUint32(104, 4096, true);
    expect(decodeSysinfo(s)).toMatchObject({ uptime: 77, loads: [2, 0, 0], totalram: 40960n, procs: 5 });
    expect(() => decodeSysinfo(s.subarray(0, 50))).toThrow(StructDecodeError);

    const x = new Uint8Array(256);
    const xv = new DataView(x.buffer);
    xv.setUint32(0, 0x7ff, true);
    xv.setUint16(28, 0o100644, true);
    xv.setBigUint64(40, 1234n, true);
    xv.setBigInt64(112, 1700000000n, true);
    expect(decodeStatx(x)).toMatchObject({
      mask: 0x7ff,
      mode: 0o100644,
      size: 1234n,
      mtime: { sec: 1700000000n },
    });
    expect(() => decodeStatx(x.subarray(0, 255))).toThrow(StructDecodeError);
  });
});
