/**
 * Where QEMU puts guest RAM, learnt from QEMU itself: the system address space's flat
 * view (`info mtree -f`, through human-monitor-command) names, for every guest-physical
 * range, the memory region behind it and the offset inside it; `query-memdev` says which
 * of those regions are RAM backends, and each backend's `mem-path` is its file.
 *
 * Measured on QEMU 7.2 (`info mtree -f`, machine paused before boot):
 * - q35, 3 GiB:   m 0-0xbffff, m 0x100000-0x7fffffff, m@0x80000000 at 0x100000000-0x13fffffff
 * - q35, 8 GiB:   same low part; m@0x80000000 at 0x100000000-0x27fffffff
 * - pc, 3.5 GiB and 8 GiB: low part up to 0xbfffffff; m@0xc0000000 from 0x100000000
 * - q35 and pc at 2.5 GiB: one block, low part only (0xc0000-0xfffff is BIOS ROM)
 * - two NUMA nodes of 2 GiB (q35): m0 0-0x7fffffff (less the ROM window), m1 from 4 GiB.
 * The split (q35: 2 GiB low once RAM >= 2.75 GiB; pc: 3 GiB low once RAM >= 3.5 GiB,
 * "gigabyte_align") is the documented fallback when the flat view cannot be read.
 */
import type { QmpClient } from './qmp.js';

/** One guest-physical RAM range: bytes; fits in 2^53. */
export interface RamRange {
  /** Guest-physical address of the first byte. */
  gpa: number;
  /** Length in bytes. */
  size: number;
  /** QEMU RAM block (memory backend id, or `pc.ram` for a plain `-m`). */
  block: string;
  /** Offset of the first byte within the block. */
  offset: number;
}

/** One line of a flat view: [start, end] inclusive, region type, region name, offset in it. */
export interface FlatViewEntry {
  start: number;
  end: number;
  /** `ram`, `rom`, `i/o`, `romd`, ... as QEMU prints it. */
  kind: string;
  region: string;
  offset: number;
}

const FLAT_LINE = /^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ([a-z/]+)\): (\S+)(?: @([0-9a-f]+))?/;

/**
 * The entries of the flat view whose root is `system` (the CPU's address space) in the
 * text of `info mtree -f`. Other flat views (I/O ports, PCI bus masters) are skipped.
 */
export function parseSystemFlatView(text: string): FlatViewEntry[] {
  const out: FlatViewEntry[] = [];
  for (const view of text.split(/^FlatView #/m)) {
    if (!/^\s*Root memory region: system\s*$/m.test(view)) continue;
    for (const line of view.split('\n')) {
      const m = FLAT_LINE.exec(line);
      if (!m) continue;
      out.push({
        start: parseInt(m[1], 16),
        end: parseInt(m[2], 16),
        kind: m[3],
        region: m[4],
        offset: m[5] ? parseInt(m[5], 16) : 0,
      });
    }
    break;
  }
  return out;
}

/** End of the legacy window: 0xa0000-0xfffff holds VGA, option ROMs and the BIOS. */
export const LEGACY_WINDOW_END = 0x10_0000;

/**
 * RAM ranges from flat-view entries: `ram` entries of the given blocks, adjacent pieces
 * of one block (contiguous in address and in block offset) merged. A gap below 1 MiB
 * between two pieces of one block that map it 1:1 (address - offset the same on both
 * sides) is merged too: that is the legacy window, which the firmware switches between
 * the RAM block, ROM and MMIO (PAM/SMRAM) as it boots, so the flat view's pieces there
 * change over the guest's life (measured: 0-0xbffff + 0x100000- before the BIOS ran,
 * 0-0xc2fff, 0xe8000-0xeffff, 0x100000- on a booted guest). The block's own bytes are
 * used there, which keeps one stable layout for the guest's whole life.
 */
export function ramRangesFromFlatView(
  entries: readonly FlatViewEntry[],
  blocks: ReadonlySet<string>,
): RamRange[] {
  const out: RamRange[] = [];
  for (const e of [...entries].sort((a, b) => a.start - b.start)) {
    if (e.kind !== 'ram' || !blocks.has(e.region)) continue;
    const size = e.end - e.start + 1;
    const last = out[out.length - 1];
    const sameBlock = last && last.block === e.region && e.start - last.gpa === e.offset - last.offset;
    if (last && sameBlock && (last.gpa + last.size === e.start || e.start <= LEGACY_WINDOW_END))
      last.size = e.start + size - last.gpa;
    else out.push({ gpa: e.start, size, block: e.region, offset: e.offset });
  }
  return out;
}

const GiB = 1024 ** 3;

/**
 * The split QEMU 7.2 makes for one RAM block of `bytes` (hw/i386/pc_q35.c, pc_piix.c):
 * q35 keeps 2 GiB below 4 GiB once RAM reaches 0xb0000000 (2.75 GiB), pc (i440fx, with
 * gigabyte alignment) keeps 3 GiB once RAM reaches 0xe0000000 (3.5 GiB); the rest starts
 * at 4 GiB. Used only when the flat view cannot be read.
 */
export function defaultRamSplit(machineType: string, bytes: number, block: string): RamRange[] {
  const q35 = /q35/.test(machineType);
  const low = q35 ? (bytes >= 0xb000_0000 ? 2 * GiB : bytes) : bytes >= 0xe000_0000 ? 3 * GiB : bytes;
  const ranges: RamRange[] = [{ gpa: 0, size: low, block, offset: 0 }];
  if (bytes > low) ranges.push({ gpa: 4 * GiB, size: bytes - low, block, offset: low });
  return ranges;
}

/** The RAM map of a running (or paused) QEMU, and each backend's file if it has one. */
export interface GuestRamMap {
  ranges: RamRange[];
  /** Block name → mem-path of a memory-backend-file (absent for anonymous RAM). */
  files: Record<string, string>;
  /** Block name → size in bytes. */
  blockSizes: Record<string, number>;
  /** `flatview` when learnt from `info mtree -f`, `fallback` when computed from the split rule. */
  source: 'flatview' | 'fallback';
}

/**
 * Asks QEMU where its RAM is. Read-only (query-memdev, qom-get, `info mtree -f`); the
 * guest keeps running. Falls back to {@link defaultRamSplit} for a single block when the
 * flat view shows no RAM of a known block.
 */
export async function queryRamMap(qmp: QmpClient): Promise<GuestRamMap> {
  const memdevs = await qmp.execute<{ id?: string; size: number }[]>('query-memdev');
  const blockSizes: Record<string, number> = {};
  const files: Record<string, string> = {};
  for (const m of memdevs) {
    if (!m.id) continue;
    blockSizes[m.id] = m.size;
    const path = await qmp
      .execute<string>('qom-get', { path: `/objects/${m.id}`, property: 'mem-path' })
      .catch(() => undefined);
    if (path) files[m.id] = path;
  }
  // Without any backend, -m makes the machine's own block, named pc.ram on pc and q35.
  const blocks = new Set(Object.keys(blockSizes).length ? Object.keys(blockSizes) : ['pc.ram']);
  const text = await qmp.hmp('info mtree -f').catch(() => '');
  const ranges = ramRangesFromFlatView(parseSystemFlatView(text), blocks);
  if (ranges.length > 0) return { ranges, files, blockSizes, source: 'flatview' };
  const names = [...blocks];
  if (names.length !== 1)
    throw new Error(`cannot tell where QEMU maps its ${names.length} RAM blocks (no flat view)`);
  const machineType = (await qmp.execute<string>('qom-get', { path: '/machine', property: 'type' })).replace(
    /-machine$/,
    '',
  );
  const bytes =
    blockSizes[names[0]] ??
    (await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary'))['base-memory'];
  return {
    ranges: defaultRamSplit(machineType, bytes, names[0]),
    files,
    blockSizes: { [names[0]]: bytes },
    source: 'fallback',
  };
}
