/**
 * The RAM-page filter of capture create's process-memory and split paths
 * (src/capture/stream-filter.ts) on a synthetic QEMU 7.2-shaped stream built here byte by
 * byte from migration/savevm.c and migration/ram.c: configuration section with its
 * capabilities subsection, an iterative `ram` section (block list with x-ignore-shared
 * region addresses, pages of two blocks interleaved, CONTINUE records, a page resent in a
 * later pass), footers, then device sections copied verbatim. Also the process-memory
 * reader (ram-from-process.ts) against a fake /proc whose `mem` is a file.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeManifest, decodeManifest, type CaptureManifest } from '../../src/capture/manifest.js';
import { StreamError } from '../../src/capture/migration-stream.js';
import { pageRuns, readBlockSparse, type ProcessRam } from '../../src/capture/ram-from-process.js';
import { RamStreamFilter, splitStreamFile, type RamFilterOptions } from '../../src/capture/stream-filter.js';

const dir = mkdtempSync(join(tmpdir(), 'vmi-filter-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const u8 = (v: number): Buffer => Buffer.from([v]);
const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const u64 = (v: bigint | number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
};
const str = (s: string): Buffer => Buffer.concat([u8(s.length), Buffer.from(s, 'latin1')]);
const page = (fill: number): Buffer => Buffer.alloc(4096, fill);
const F = { zero: 0x02, memSize: 0x04, page: 0x08, eos: 0x10, cont: 0x20 };
const P = 4096;

const RAM = 'pc.ram';
const RAM_PAGES = 8;
const BIOS = 'pc.bios';
const BIOS_PAGES = 2;

/** The stream pieces, each tagged: `ram` pieces are what the filter must drop. */
function buildStream(rename?: string): { full: Buffer; kept: Buffer } {
  const pieces: { b: Buffer; ram?: boolean; memSize?: boolean }[] = [];
  const add = (b: Buffer, tag: { ram?: boolean; memSize?: boolean } = {}) => pieces.push({ b, ...tag });
  const footer = (id: number) => add(Buffer.concat([u8(0x7e), u32(id)]));
  const rec = (off: number, flags: number, block: string | undefined, payload: Buffer, ram: boolean) =>
    add(
      Buffer.concat([u64(off | flags | (block ? 0 : F.cont)), block ? str(block) : Buffer.alloc(0), payload]),
      {
        ram,
      },
    );
  add(Buffer.concat([u32(0x5145564d), u32(3)]));
  add(Buffer.concat([u8(0x07), u32(10), Buffer.from('pc-q35-7.2')]));
  add(Buffer.concat([u8(0x05), str('configuration/capabilities'), u32(1), u32(1), str('x-ignore-shared')]));
  // START ram: block list (x-ignore-shared: each entry ends with the region address).
  add(Buffer.concat([u8(0x01), u32(2), str('ram'), u32(0), u32(4)]));
  const total = (RAM_PAGES + BIOS_PAGES) * P;
  const entry = (name: string, n: number) => Buffer.concat([str(name), u64(n * P), u64(0)]);
  add(Buffer.concat([u64(total | F.memSize), entry(RAM, RAM_PAGES), entry(BIOS, BIOS_PAGES)]), {
    memSize: true,
  });
  add(u64(F.eos));
  footer(2);
  // PART: pages of both blocks interleaved.
  add(Buffer.concat([u8(0x02), u32(2)]));
  rec(0, F.page, RAM, page(0x11), true);
  rec(P, F.zero, undefined, u8(0), true);
  rec(2 * P, F.page, undefined, page(0x22), true);
  rec(0, F.page, BIOS, page(0xb0), false);
  rec(P, F.zero, undefined, u8(0), false);
  for (let i = 3; i < RAM_PAGES; i++) rec(i * P, F.zero, i === 3 ? RAM : undefined, u8(0), true);
  add(u64(F.eos));
  footer(2);
  // END: a later pass resends page 0 (changed) and zeroes page 2.
  add(Buffer.concat([u8(0x03), u32(2)]));
  rec(0, F.page, RAM, page(0x33), true);
  rec(2 * P, F.zero, undefined, u8(0), true);
  add(u64(F.eos));
  footer(2);
  // Device state: opaque to the filter, kept as it is.
  add(Buffer.concat([u8(0x04), u32(3), str('cpu'), u32(0), u32(12), Buffer.from('device bytes'), u8(0x1f)]));
  add(Buffer.from('{"page_size":4096,"devices":[]}'));
  const full = Buffer.concat(pieces.map((p) => p.b));
  const kept = Buffer.concat(
    pieces
      .filter((p) => !p.ram)
      .map((p) =>
        p.memSize && rename
          ? Buffer.concat([u64(total | F.memSize), entry(rename, RAM_PAGES), entry(BIOS, BIOS_PAGES)])
          : p.b,
      ),
  );
  return { full, kept };
}

const opts = (o: Partial<RamFilterOptions> = {}): RamFilterOptions => ({
  block: RAM,
  blockBytes: RAM_PAGES * P,
  ignoreShared: true,
  sampleEvery: 1,
  ...o,
});

function run(f: RamStreamFilter, stream: Buffer, sizes: number[]): Buffer {
  const out: Buffer[] = [];
  let i = 0;
  for (let at = 0; at < stream.length; i++) {
    const n = sizes[i % sizes.length];
    out.push(...f.push(stream.subarray(at, at + n)));
    at += n;
  }
  return Buffer.concat(out);
}

describe('RamStreamFilter', () => {
  it('drops every page of the block and keeps the rest byte for byte, however the stream is cut', () => {
    const { full, kept } = buildStream();
    for (const sizes of [[full.length], [1], [7], [4096, 13, 1, 9000], [65536]]) {
      const f = new RamStreamFilter(opts());
      expect(run(f, full, sizes).equals(kept), `chunks ${sizes.join(',')}`).toBe(true);
      const r = f.end();
      expect(r.covered).toBe(RAM_PAGES);
      expect(r.pages).toBe(RAM_PAGES + 2);
      // The last copy of each page: page 0 resent with new bytes, page 2 zeroed later.
      expect(r.samples.get(0)?.equals(page(0x33))).toBe(true);
      expect(r.samples.get(2 * P)).toBeUndefined();
      expect(r.samples.has(2 * P)).toBe(true);
      expect([...r.nonZero]).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
    }
  });

  it('renames the block in the RAM list (the replay clone matches blocks by name)', () => {
    const { full, kept } = buildStream('m');
    const f = new RamStreamFilter(opts({ renameTo: 'm' }));
    expect(run(f, full, [5, 4100]).equals(kept)).toBe(true);
    expect(kept.includes(Buffer.from(RAM))).toBe(false);
  });

  it('refuses what it cannot account for', () => {
    const { full } = buildStream();
    const f = new RamStreamFilter(opts());
    f.push(full.subarray(0, full.length - 40));
    // A stream that stops before its device state.
    const g = new RamStreamFilter(opts());
    g.push(full.subarray(0, 200));
    expect(() => g.end()).toThrow(StreamError);
    // A block of another size than the guest's RAM.
    expect(() => run(new RamStreamFilter(opts({ blockBytes: 4 * P })), full, [full.length])).toThrow(
      /is 32768 bytes, expected 16384/,
    );
    // An iterative section other than RAM (block migration): unsupported.
    const bad = Buffer.from(full);
    bad.write('blk', bad.indexOf('ram'), 'latin1');
    expect(() => run(new RamStreamFilter(opts()), bad, [bad.length])).toThrow(
      /unsupported iterative section blk/,
    );
    // A configuration subsection this filter does not know.
    const sub = Buffer.from(full);
    sub.write('X', sub.indexOf('configuration/capabilities') + 14, 'latin1');
    expect(() => run(new RamStreamFilter(opts()), sub, [sub.length])).toThrow(
      /unknown configuration subsection/,
    );
    // Not a migration stream.
    expect(() => new RamStreamFilter(opts()).push(Buffer.alloc(64))).toThrow(/bad magic/);
    expect(() => new RamStreamFilter(opts({ blockBytes: 1000 }))).toThrow(RangeError);
  });

  it('splits a stream file into ram.raw (last copies, sparse) and the stream without its pages', () => {
    const { full, kept } = buildStream('m');
    const src = join(dir, 'full.bin');
    writeFileSync(src, full);
    const r = splitStreamFile(src, join(dir, 'dev.bin'), join(dir, 'ram.raw'), {
      block: RAM,
      blockBytes: RAM_PAGES * P,
      renameTo: 'm',
    });
    expect(r.covered).toBe(RAM_PAGES);
    expect(readFileSync(join(dir, 'dev.bin')).equals(kept)).toBe(true);
    const ram = readFileSync(join(dir, 'ram.raw'));
    const want = Buffer.alloc(RAM_PAGES * P);
    page(0x33).copy(want, 0);
    expect(ram.equals(want)).toBe(true);
  });
});

describe('process-memory RAM reader', () => {
  it('pageRuns merges adjacent pages of a mask window', () => {
    const m = Uint8Array.from([1, 1, 0, 1, 0, 0, 1, 1, 1, 0]);
    expect(pageRuns(m, 0, 10)).toEqual([
      [0, 2],
      [3, 1],
      [6, 3],
    ]);
    expect(pageRuns(m, 3, 4)).toEqual([
      [0, 1],
      [3, 1],
    ]);
    expect(pageRuns(m, 4, 2)).toEqual([]);
  });

  it('reads only the wanted pages at the block host address and leaves zero chunks as holes', () => {
    // A fake /proc: PID/stat with a start time, PID/mem a file whose offset is the host address.
    const proc = join(dir, 'proc');
    const pid = 4242;
    mkdirSync(join(proc, String(pid)), { recursive: true });
    writeFileSync(join(proc, String(pid), 'stat'), `${pid} (qemu) S ${'1 '.repeat(18)}777 0 0\n`);
    const base = 0x20_0000;
    const blockBytes = 3 << 20; // 3 MiB: chunk 0 data, chunk 1 unwanted, chunk 2 zero data
    const mem = Buffer.alloc(base + blockBytes);
    mem.fill(0x5a, base, base + P); // page 0
    mem.fill(0x6b, base + (1 << 20), base + (1 << 20) + P); // chunk 1, not wanted
    mem.fill(0x7c, base + 5 * P, base + 6 * P); // page 5, not wanted: must stay zero
    writeFileSync(join(proc, String(pid), 'mem'), mem);
    const ram: ProcessRam = {
      host: { pid, startTime: 777, blockBases: { [RAM]: base } },
      block: RAM,
      blockBytes,
      base,
    };
    const want = new Uint8Array(blockBytes / P);
    want[0] = 1;
    want[1] = 1;
    want[(2 << 20) / P] = 1; // wanted but zero
    const out = join(dir, 'staged.ram');
    const r = readBlockSparse(ram, out, want, proc);
    expect(r.read).toBe(3 * P);
    expect(r.written).toBe(1 << 20);
    const got = readFileSync(out);
    const expected = Buffer.alloc(blockBytes);
    expected.fill(0x5a, 0, P);
    expect(got.equals(expected)).toBe(true);
    // Chunks 1 and 2 are holes.
    expect(statSync(out).blocks * 512).toBeLessThanOrEqual(1 << 20);
    // A reused pid (another start time) is refused.
    expect(() =>
      readBlockSparse({ ...ram, host: { ...ram.host, startTime: 1 } }, join(dir, 'x.ram'), want, proc),
    ).toThrow(/pid was reused/);
    expect(() => readBlockSparse(ram, join(dir, 'y.ram'), new Uint8Array(3), proc)).toThrow(RangeError);
  });
});

describe('manifest RAM source', () => {
  const base = (): CaptureManifest =>
    ({
      format: 'vmi-capture',
      version: 3,
      id: 'x',
      createdAt: 'now',
      tool: { name: 'vmi', version: '0' },
      mode: 'shared-ram',
      guest: { name: 'g' },
      qemu: { version: '7.2.0' },
      machine: {
        machineType: 'q35',
        cpuModel: 'max',
        cpus: 1,
        memMiB: 1,
        append: '',
        firmware: { boot: 'firmware', bios: '', pflash: [] },
      },
      ram: [{ gpa: 0, size: 1 << 20, offset: 0 }],
      vcpus: [
        Object.fromEntries([
          ['index', 0],
          ...[
            'rax',
            'rbx',
            'rcx',
            'rdx',
            'rsi',
            'rdi',
            'rbp',
            'rsp',
            'r8',
            'r9',
            'r10',
            'r11',
            'r12',
            'r13',
            'r14',
            'r15',
            'rip',
            'eflags',
            'fsBase',
            'gsBase',
            'kernelGsBase',
            'cr0',
            'cr2',
            'cr3',
            'cr4',
            'efer',
            'lstar',
          ].map((k) => [k, '0x0']),
        ]),
      ],
      timing: { pauseMs: 1, migrateMs: 1, copyMs: 1 },
      parts: {
        'ram.raw': { size: 1, sha256: 'a'.repeat(64) },
        'devstate.bin': { size: 1, sha256: 'b'.repeat(64) },
      },
    }) as unknown as CaptureManifest;

  it('records where ram.raw came from and refuses an unknown source', () => {
    for (const src of ['shared-file', 'process-memory', 'migration-stream'] as const)
      expect(decodeManifest(encodeManifest({ ...base(), ramSource: src })).ramSource).toBe(src);
    expect(decodeManifest(encodeManifest(base())).ramSource).toBeUndefined();
    const bad = { ...base(), ramSource: 'guess' } as unknown as CaptureManifest;
    expect(() => decodeManifest(encodeManifest(bad))).toThrow(/unknown RAM source guess/);
  });
});
