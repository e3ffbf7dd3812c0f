/**
 * Guest RAM inside a QEMU process: finding the process behind a QMP socket (a real
 * listening socket of this test process, and fake /proc trees for the ambiguous and
 * hidden cases), QEMU's `gpa2hva` and `xp` answers (text as QEMU 7.2 prints it, recorded
 * on this host), the host-address arithmetic per RAM block, and reads, writes and the
 * content check over a fake /proc/PID/mem (a file whose offsets are host addresses).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  compareWithMonitor,
  ProcessMemory,
  ProcessMemoryError,
  samplePoints,
} from '../../src/memory/process-memory.js';
import { PhysicalMemoryError, RamLayout } from '../../src/memory/ram-layout.js';
import {
  findSocketServer,
  mappingsCover,
  parseHostMaps,
  parseStartTime,
  parseUnixListeners,
  processStartTime,
  QemuProcessError,
} from '../../src/qemu/qemu-process.js';
import type { QmpClient } from '../../src/qemu/qmp.js';
import { blockHostBases, parseGpa2hva, parseXpWords, RamHostError } from '../../src/qemu/ram-host.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'vmi-procmem-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// Recorded from QEMU 7.2 (q35, -m 64, paused): the answers vmi parses.
const GPA2HVA_OK = 'Host virtual address for 0x1000 (pc.ram) is 0x7f527fe01000\r\n';
const GPA2HVA_NONE = 'No memory is mapped at address 0x4000000\r\n';
const XP =
  '0000000000000000: 0x0000000000000000 0x1122334455667788\r\n0000000000000010: 0x00000000000000ff 0x8000000000000001\r\n';
const NET_UNIX = `Num       RefCount Protocol Flags    Type St Inode Path
000000005f02045c: 00000002 00000000 00010000 0001 01 555801 /tmp/pm-q.sock
00000000aa02045c: 00000003 00000000 00000000 0001 03 555900 /tmp/pm-q.sock
00000000bb02045c: 00000002 00000000 00010000 0001 01 555802 @abstract
00000000cc02045c: 00000002 00000000 00010000 0001 01 555803 /run/with space.sock
`;

describe('QEMU process facts (pure parsers)', () => {
  it('lists listening unix sockets with a path, not connected ends or abstract names', () => {
    expect(parseUnixListeners(NET_UNIX)).toEqual([
      { inode: 555801, path: '/tmp/pm-q.sock' },
      { inode: 555803, path: '/run/with space.sock' },
    ]);
  });

  it('reads the start time after the last parenthesis of the command name', () => {
    const rest = ['S', ...Array.from({ length: 18 }, (_, i) => String(i + 4)), '987654', '1', '2'];
    expect(parseStartTime(`42 (qemu) (x) y) ${rest.join(' ')}`)).toBe(987654);
    expect(() => parseStartTime('42 (qemu) S')).toThrow(QemuProcessError);
    expect(processStartTime(process.pid)).toBeGreaterThan(0);
  });

  it('says whether mappings cover a range: adjacent pieces count, holes and read-only do not', () => {
    const maps = parseHostMaps(
      '7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \n' +
        '7f0000100000-7f0000200000 rw-p 00000000 00:00 0 [anon]\n' +
        '7f0000300000-7f0000400000 rw-p 00000000 00:00 0\n' +
        '7f0000400000-7f0000500000 r--p 00000000 00:00 0\n',
    );
    expect(maps).toHaveLength(4);
    expect(mappingsCover(maps, 0x7f0000000000, 0x200000)).toBe(true);
    expect(mappingsCover(maps, 0x7f0000080000, 0x100000)).toBe(true);
    expect(mappingsCover(maps, 0x7f0000000000, 0x200001)).toBe(false); // runs into the hole
    expect(mappingsCover(maps, 0x7f0000300000, 0x100001)).toBe(false); // runs into r--p
    expect(mappingsCover(maps, 0x7effffffffff, 2)).toBe(false); // starts before any mapping
  });
});

describe('finding the process behind a QMP socket', () => {
  it('finds this very process listening on a real socket', async () => {
    const path = join(tmp(), 'qmp.sock');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path, r));
    try {
      expect(findSocketServer(path)).toEqual({
        pid: process.pid,
        startTime: processStartTime(process.pid),
        proven: true,
      });
    } finally {
      server.close();
    }
    expect(() => findSocketServer(path)).toThrow(/no process listens/);
  });

  /** A /proc with net/unix and, per pid, fd links (or an unreadable fd entry), cmdline and stat. */
  function fakeProc(pids: Record<number, { fds?: string[]; cmdline?: string }>): string {
    const proc = tmp();
    mkdirSync(join(proc, 'net'));
    writeFileSync(join(proc, 'net', 'unix'), NET_UNIX);
    for (const [pid, p] of Object.entries(pids)) {
      const d = join(proc, pid);
      mkdirSync(d);
      if (p.fds) {
        mkdirSync(join(d, 'fd'));
        // 'unreadable': an entry whose link cannot be read (EINVAL here; EACCES on a real
        // /proc without ptrace access, where the listing itself works).
        p.fds.forEach((target, i) =>
          target === 'unreadable'
            ? writeFileSync(join(d, 'fd', String(i)), '')
            : symlinkSync(target, join(d, 'fd', String(i))),
        );
      } else writeFileSync(join(d, 'fd'), ''); // readdir fails: what another user's fd dir does
      writeFileSync(join(d, 'cmdline'), (p.cmdline ?? 'sh').split(' ').join('\0'));
      writeFileSync(
        join(d, 'stat'),
        `${pid} (x) S ${Array.from({ length: 18 }, () => '0').join(' ')} 77${pid} 0`,
      );
    }
    return proc;
  }

  it('proves the holder of the listening inode, and refuses two holders', () => {
    const one = fakeProc({ 10: { fds: ['/dev/null', 'socket:[555900]'] }, 11: { fds: ['socket:[555801]'] } });
    expect(findSocketServer('/tmp/pm-q.sock', one)).toEqual({ pid: 11, startTime: 7711, proven: true });
    const two = fakeProc({ 11: { fds: ['socket:[555801]'] }, 12: { fds: ['socket:[555801]'] } });
    expect(() => findSocketServer('/tmp/pm-q.sock', two)).toThrow(/several processes hold .*11, 12/);
  });

  it('names an unproven candidate by command line only when holders are hidden', () => {
    const hidden = fakeProc({ 20: { cmdline: 'qemu -qmp unix:/tmp/pm-q.sock,server=on' }, 21: {} });
    expect(findSocketServer('/tmp/pm-q.sock', hidden)).toEqual({ pid: 20, startTime: 7720, proven: false });
    const listed = fakeProc({
      20: { fds: ['unreadable'], cmdline: 'qemu -qmp unix:/tmp/pm-q.sock' },
      22: { fds: [] },
    });
    expect(findSocketServer('/tmp/pm-q.sock', listed)).toEqual({ pid: 20, startTime: 7720, proven: false });
    const none = fakeProc({ 21: {}, 22: { fds: [] } });
    expect(() => findSocketServer('/tmp/pm-q.sock', none)).toThrow(
      /cannot see which process .*no ptrace access/,
    );
  });
});

describe('host addresses of RAM blocks (gpa2hva)', () => {
  it('parses answers and refuses anything else', () => {
    expect(parseGpa2hva(GPA2HVA_OK)).toEqual({ gpa: 0x1000, region: 'pc.ram', hva: 0x7f527fe01000 });
    expect(parseGpa2hva(GPA2HVA_NONE)).toBeUndefined();
    expect(parseGpa2hva('unknown command: gpa2hva')).toBeUndefined();
  });

  /** QEMU answering for a q35 8 GiB guest whose block m sits at `base` in the host. */
  const answerer =
    (base: number, override: Record<number, string> = {}) =>
    async (gpa: number): Promise<string> => {
      if (override[gpa] !== undefined) return override[gpa];
      const offset = gpa >= 0x1_0000_0000 ? gpa - 0x1_0000_0000 + 0x8000_0000 : gpa;
      return `Host virtual address for 0x${gpa.toString(16)} (m) is 0x${(base + offset).toString(16)}\r\n`;
    };
  const split = [
    { gpa: 0, size: 0x8000_0000, block: 'm', offset: 0 },
    { gpa: 0x1_0000_0000, size: 0x1_8000_0000, block: 'm', offset: 0x8000_0000 },
  ];

  it('derives one base per block from both ends of every range', async () => {
    expect(await blockHostBases(split, answerer(0x7f00_0000_0000))).toEqual({ m: 0x7f00_0000_0000 });
  });

  it('refuses a range that is not where the block arithmetic says', async () => {
    // The high range's last byte resolves elsewhere (another allocation): not one block.
    const last = 0x1_0000_0000 + 0x1_8000_0000 - 1;
    await expect(
      blockHostBases(
        split,
        answerer(0x7f00_0000_0000, {
          [last]: `Host virtual address for 0x${last.toString(16)} (m) is 0x1000\r\n`,
        }),
      ),
    ).rejects.toThrow(/not one host allocation/);
    await expect(
      blockHostBases(
        split,
        answerer(0x7f00_0000_0000, { 0: 'Host virtual address for 0x0 (pc.bios) is 0x7f0000000000\r\n' }),
      ),
    ).rejects.toThrow(/region pc.bios, not RAM block m/);
    await expect(blockHostBases(split, answerer(0x7f00_0000_0000, { 0: GPA2HVA_NONE }))).rejects.toThrow(
      RamHostError,
    );
  });

  it('parses xp words (little-endian) and refuses short or foreign answers', () => {
    const b = parseXpWords(XP, 0, 4);
    expect(b.readBigUInt64LE(8)).toBe(0x1122334455667788n);
    expect(b[16]).toBe(0xff);
    expect(b.readBigUInt64LE(24)).toBe(0x8000000000000001n);
    expect(() => parseXpWords(XP, 0, 5)).toThrow(/4 of 5 words/);
    expect(() => parseXpWords(XP, 8, 2)).toThrow(/out of order/);
  });
});

describe('ProcessMemory over a fake /proc/PID/mem', () => {
  const MiB = 1024 * 1024;
  const BASE = 0x40_0000; // host address of the block: a file offset here
  const PID = 4242;
  /** Block m of 3 MiB: guest 0-2 MiB at offset 0, guest 4-5 MiB at offset 2 MiB. */
  const layout = new RamLayout([
    { gpa: 0, size: 2 * MiB, block: 'm', offset: 0 },
    { gpa: 4 * MiB, size: MiB, block: 'm', offset: 2 * MiB },
  ]);

  function proc(
    maps = `${BASE.toString(16)}-${(BASE + 3 * MiB).toString(16)} rw-p 00000000 00:00 0\n`,
  ): string {
    const p = tmp();
    mkdirSync(join(p, String(PID)));
    const ram = Buffer.alloc(BASE + 3 * MiB);
    for (let i = 0; i < 3 * MiB; i += 4096) ram.writeUInt32LE(i / 4096 + 1, BASE + i); // page numbers
    writeFileSync(join(p, String(PID), 'mem'), ram);
    writeFileSync(join(p, String(PID), 'maps'), maps);
    writeFileSync(
      join(p, String(PID), 'stat'),
      `${PID} (qemu) S ${Array.from({ length: 18 }, () => '0').join(' ')} 555 0`,
    );
    return p;
  }
  const host = { pid: PID, startTime: 555, blockBases: { m: BASE } };

  it('reads and writes guest-physical addresses at block base + offset, and refuses holes', async () => {
    const p = proc();
    const mem = new ProcessMemory(host, layout, true, p);
    try {
      expect((await mem.read(0n, 4)).readUInt32LE(0)).toBe(1);
      // 4 MiB + 4 KiB is block offset 2 MiB + 4 KiB: page 514 of the block (1-based 514).
      expect((await mem.read(BigInt(4 * MiB + 4096), 4)).readUInt32LE(0)).toBe(2 * 256 + 2);
      await mem.write(BigInt(4 * MiB + 8), Buffer.from('vmi!'));
      const file = readFileSync(join(p, String(PID), 'mem'));
      expect(file.subarray(BASE + 2 * MiB + 8, BASE + 2 * MiB + 12).toString()).toBe('vmi!');
      await expect(mem.read(BigInt(3 * MiB), 4)).rejects.toThrow(PhysicalMemoryError);
    } finally {
      mem.close();
    }
  });

  it('refuses a reused pid, an unopenable mem file and a block outside the mappings (one line each)', () => {
    const p = proc();
    expect(() => new ProcessMemory({ ...host, startTime: 556 }, layout, true, p)).toThrow(/pid was reused/);
    expect(() => new ProcessMemory({ ...host, pid: 1 << 30 }, layout, true, p)).toThrow(/is gone/);
    const short = proc(`${BASE.toString(16)}-${(BASE + 2 * MiB).toString(16)} rw-p 00000000 00:00 0\n`);
    expect(() => new ProcessMemory(host, layout, true, short)).toThrow(
      /RAM block m .* is not a writable mapping/,
    );
    const dir = proc();
    rmSync(join(dir, String(PID), 'mem'));
    mkdirSync(join(dir, String(PID), 'mem'));
    try {
      new ProcessMemory(host, layout, true, dir);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ProcessMemoryError);
      expect((e as Error).message).toMatch(/^no access to QEMU's memory \(pid 4242\): .*mem: EISDIR$/);
      expect((e as Error).message).not.toContain('\n');
    }
  });

  /** A monitor that answers `xp` from `view` (guest-physical → bytes), as QEMU would. */
  function monitor(view: (gpa: number, n: number) => Buffer): QmpClient {
    return {
      hmp: async (line: string) => {
        const m = /^xp \/(\d+)xg 0x([0-9a-f]+)$/.exec(line)!;
        const words = Number(m[1]);
        const gpa = parseInt(m[2], 16);
        const b = view(gpa, words * 8);
        const lines: string[] = [];
        for (let i = 0; i < words; i += 2) {
          const w = [b.readBigUInt64LE(i * 8), b.readBigUInt64LE(i * 8 + 8)].map(
            (v) => `0x${v.toString(16).padStart(16, '0')}`,
          );
          lines.push(`${(gpa + i * 8).toString(16).padStart(16, '0')}: ${w.join(' ')}`);
        }
        return lines.join('\r\n') + '\r\n';
      },
    } as unknown as QmpClient;
  }

  it('accepts bytes that match QEMU and refuses a mapping that shows other bytes', async () => {
    const p = proc();
    const mem = new ProcessMemory(host, layout, false, p);
    const file = readFileSync(join(p, String(PID), 'mem'));
    const truth = (gpa: number, n: number) => {
      const r = layout.pieces(gpa, n)[0];
      return file.subarray(BASE + r.blockOffset, BASE + r.blockOffset + n);
    };
    try {
      expect(samplePoints(layout).length).toBeGreaterThan(3);
      expect(samplePoints(layout).every((a) => layout.contains(a, 512))).toBe(true);
      expect(await compareWithMonitor(monitor(truth), mem)).toBe(samplePoints(layout).length);
      // QEMU's view off by one page (the wrong block base): refused.
      const shifted = (gpa: number, n: number) => {
        const r = layout.pieces(gpa, n)[0];
        return file.subarray(BASE + r.blockOffset + 4096, BASE + r.blockOffset + 4096 + n);
      };
      await expect(compareWithMonitor(monitor(shifted), mem)).rejects.toThrow(/differs from the guest's RAM/);
    } finally {
      mem.close();
    }
  });
});
