/**
 * The guest-physical RAM model: ranges learnt from QEMU's flat view (text as QEMU 7.2
 * prints it for q35 and i440fx guests, recorded on this host), the documented fallback
 * split, and lookups at the first and last byte of every range and inside the holes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RamFileMemory } from '../../src/memory/physical.js';
import { PhysicalMemoryError, RamLayout } from '../../src/memory/ram-layout.js';
import {
  defaultRamSplit,
  parseSystemFlatView,
  ramRangesFromFlatView,
  type RamRange,
} from '../../src/qemu/ram-map.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** `info mtree -f` of a q35 guest with 8 GiB in backend m, after boot (trimmed). */
const Q35_8G = `FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
FlatView #2
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-00000000000c2fff (prio 0, ram): m
  00000000000c3000-00000000000e7fff (prio 1, rom): pc.rom @0000000000003000
  00000000000e8000-00000000000effff (prio 0, ram): m @00000000000e8000
  00000000000f0000-00000000000fffff (prio 0, rom): pc.bios @0000000000030000
  0000000000100000-000000007fffffff (prio 0, ram): m @0000000000100000
  00000000b0000000-00000000bfffffff (prio 0, i/o): pcie-mmcfg-mmio
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000027fffffff (prio 0, ram): m @0000000080000000
`;

/** i440fx (`pc`) with 4 GiB in backend m, before the BIOS ran. */
const PC_4G = `FlatView #1
 AS "memory", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): m
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-00000000bfffffff (prio 0, ram): m @0000000000100000
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000013fffffff (prio 0, ram): m @00000000c0000000
`;

/** Two NUMA nodes of 2 GiB (m0, m1) on q35, and a device's RAM (vga.vram) that is not guest RAM. */
const NUMA_4G = `FlatView #0
 AS "memory", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): m0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  0000000000100000-000000007fffffff (prio 0, ram): m0 @0000000000100000
  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
  0000000100000000-000000017fffffff (prio 0, ram): m1
`;

const ranges = (text: string, blocks: string[]): RamRange[] =>
  ramRangesFromFlatView(parseSystemFlatView(text), new Set(blocks));

/** Checks first/last byte of each range map to the block offsets, and the bytes around holes fail. */
function expectMapping(layout: RamLayout, want: RamRange[]): void {
  expect(layout.ranges).toEqual(want);
  for (const r of want) {
    for (const [at, off] of [
      [r.gpa, r.offset],
      [r.gpa + r.size - 1, r.offset + r.size - 1],
    ]) {
      const [p] = layout.pieces(BigInt(at), 1);
      expect(p.range.block).toBe(r.block);
      expect(p.blockOffset).toBe(off);
    }
  }
}

describe('RAM ranges from the flat view', () => {
  it('q35 8 GiB: 2 GiB low, 6 GiB at 4 GiB from block offset 2 GiB; the legacy window kept', () => {
    const l = new RamLayout(ranges(Q35_8G, ['m']));
    expectMapping(l, [
      { gpa: 0, size: 2 * GiB, block: 'm', offset: 0 },
      { gpa: 4 * GiB, size: 6 * GiB, block: 'm', offset: 2 * GiB },
    ]);
    expect(l.totalBytes).toBe(8 * GiB);
    // The PCI hole: its first and last byte, and the byte before 4 GiB.
    for (const a of [2 * GiB, 3 * GiB, 4 * GiB - 1]) {
      expect(l.rangeAt(a)).toBeUndefined();
      expect(() => l.pieces(BigInt(a), 8)).toThrow(PhysicalMemoryError);
    }
    expect(() => l.pieces(BigInt(10 * GiB), 1)).toThrow(/0x280000000 is not guest RAM/);
    // An access that runs off the end of the low range into the hole fails too.
    expect(() => l.pieces(BigInt(2 * GiB - 4), 8)).toThrow(/0x80000000 is not guest RAM/);
  });

  it('i440fx (pc) 4 GiB: 3 GiB low, 1 GiB at 4 GiB from block offset 3 GiB', () => {
    expectMapping(new RamLayout(ranges(PC_4G, ['m'])), [
      { gpa: 0, size: 3 * GiB, block: 'm', offset: 0 },
      { gpa: 4 * GiB, size: 1 * GiB, block: 'm', offset: 3 * GiB },
    ]);
  });

  it('two NUMA nodes: one block each; device RAM is not guest RAM', () => {
    const l = new RamLayout(ranges(NUMA_4G, ['m0', 'm1']));
    expectMapping(l, [
      { gpa: 0, size: 2 * GiB, block: 'm0', offset: 0 },
      { gpa: 4 * GiB, size: 2 * GiB, block: 'm1', offset: 0 },
    ]);
    expect(l.blocks).toEqual(['m0', 'm1']);
    expect(l.rangeAt(0xfd00_0000)).toBeUndefined();
  });

  it('the documented fallback split matches what QEMU 7.2 does', () => {
    expect(defaultRamSplit('pc-q35-7.2', 8 * GiB, 'm')).toEqual(ranges(Q35_8G, ['m']));
    expect(defaultRamSplit('pc-i440fx-7.2', 4 * GiB, 'm')).toEqual(ranges(PC_4G, ['m']));
    // Below the thresholds (q35 2.75 GiB, pc 3.5 GiB) everything is low.
    expect(defaultRamSplit('q35', 2816 * MiB - 1, 'm')).toHaveLength(1);
    expect(defaultRamSplit('q35', 2816 * MiB, 'm')[1]).toEqual({
      gpa: 4 * GiB,
      size: 768 * MiB,
      block: 'm',
      offset: 2 * GiB,
    });
    expect(defaultRamSplit('pc', 3584 * MiB - 1, 'm')).toHaveLength(1);
    expect(defaultRamSplit('pc', 3584 * MiB, 'm')[1]).toEqual({
      gpa: 4 * GiB,
      size: 512 * MiB,
      block: 'm',
      offset: 3 * GiB,
    });
  });

  it('refuses overlapping or empty ranges', () => {
    expect(() => new RamLayout([{ gpa: 0, size: 0, block: 'm', offset: 0 }])).toThrow(RangeError);
    expect(
      () =>
        new RamLayout([
          { gpa: 0, size: 2 * MiB, block: 'm', offset: 0 },
          { gpa: MiB, size: MiB, block: 'm', offset: 4 * MiB },
        ]),
    ).toThrow(/overlap/);
  });
});

describe('RamFileMemory over a split layout', () => {
  it('reads and writes each range at its block offset, across touching ranges, and refuses holes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmi-ramlayout-'));
    try {
      // A 64 KiB "block": 16 KiB low at 0, 16 KiB at 0x10000 from offset 16 KiB, and
      // 32 KiB at 0x14000 (touching the previous range) from offset 32 KiB.
      const file = join(dir, 'ram');
      const block = Buffer.alloc(64 * 1024);
      for (let i = 0; i < block.length; i += 4) block.writeUInt32LE(i, i);
      writeFileSync(file, block);
      const layout = new RamLayout([
        { gpa: 0, size: 0x4000, block: 'm', offset: 0 },
        { gpa: 0x10000, size: 0x4000, block: 'm', offset: 0x4000 },
        { gpa: 0x14000, size: 0x8000, block: 'm', offset: 0x8000 },
      ]);
      const mem = new RamFileMemory({ m: file }, layout);
      try {
        expect(mem.readSync(0n, 4).readUInt32LE(0)).toBe(0);
        expect(mem.readSync(0x3ffcn, 4).readUInt32LE(0)).toBe(0x3ffc);
        expect(mem.readSync(0x10000n, 4).readUInt32LE(0)).toBe(0x4000);
        expect(mem.readSync(0x13ffcn, 8)).toEqual(
          Buffer.concat([block.subarray(0x7ffc, 0x8000), block.subarray(0x8000, 0x8004)]),
        );
        expect(mem.readSync(0x1bffcn, 4).readUInt32LE(0)).toBe(0xfffc);
        expect(() => mem.readSync(0x4000n, 4)).toThrow(PhysicalMemoryError);
        expect(() => mem.readSync(0xfffcn, 8)).toThrow(/0xfffc is not guest RAM/);
        expect(() => mem.readSync(0x1c000n, 1)).toThrow(PhysicalMemoryError);
        expect(() => mem.writeSync(0x8000n, Buffer.from([1]))).toThrow(PhysicalMemoryError);
        mem.writeSync(0x10000n, Buffer.from([0xaa, 0xbb]));
        expect(mem.readSync(0x10000n, 2)).toEqual(Buffer.from([0xaa, 0xbb]));
      } finally {
        mem.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
