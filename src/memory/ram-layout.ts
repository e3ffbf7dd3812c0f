/**
 * The one model of guest-physical memory: a sorted list of RAM ranges, each a
 * guest-physical window onto a RAM block (a memory backend's file, a capture's ram.raw)
 * at some offset. Everything that turns a guest-physical address into bytes (the shared
 * RAM file, the gdbstub, captures, exports, page walks) asks this map first, so an address
 * in a hole (the PCI hole below 4 GiB, the legacy VGA/BIOS window) is an error rather than
 * a read of whatever byte happens to sit at that file offset.
 *
 * Why it matters: QEMU does not lay RAM out flat. q35 with 2.75 GiB or more keeps 2 GiB
 * below 4 GiB and maps the rest at 4 GiB; i440fx (`pc`) with 3.5 GiB or more keeps 3 GiB
 * low. In the RAM block the high part follows the low part, so block offset != address.
 */
import type { RamRange } from '../qemu/ram-map.js';

export type { RamRange } from '../qemu/ram-map.js';

/** Thrown for an access outside every RAM range, or a source that cannot be opened. */
export class PhysicalMemoryError extends Error {}

/** A piece of an access that lies inside one range. */
export interface RamPiece {
  range: RamRange;
  /** Offset inside the range's block. */
  blockOffset: number;
  /** Offset of this piece within the access. */
  at: number;
  length: number;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

export class RamLayout {
  readonly ranges: readonly RamRange[];

  /**
   * @param ranges in any order; must not overlap and must have positive sizes
   *   (RangeError otherwise: a bad layout is a bug or a lying source, never guessed at).
   */
  constructor(ranges: readonly RamRange[]) {
    const sorted = [...ranges].sort((a, b) => a.gpa - b.gpa);
    for (const [i, r] of sorted.entries()) {
      for (const v of [r.gpa, r.size, r.offset]) {
        if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`bad RAM range ${JSON.stringify(r)}`);
      }
      if (r.size === 0) throw new RangeError(`empty RAM range at ${hex(r.gpa)}`);
      const prev = sorted[i - 1];
      if (prev && prev.gpa + prev.size > r.gpa)
        throw new RangeError(`RAM ranges at ${hex(prev.gpa)} and ${hex(r.gpa)} overlap`);
    }
    this.ranges = sorted.map((r) => ({ ...r }));
  }

  /** One flat range at 0 (file offset = address): what a layout-less source means. */
  static flat(size: number, block = 'ram'): RamLayout {
    return new RamLayout([{ gpa: 0, size, block, offset: 0 }]);
  }

  /** Total RAM bytes (holes excluded). */
  get totalBytes(): number {
    return this.ranges.reduce((a, r) => a + r.size, 0);
  }

  /** One past the highest RAM address. */
  get end(): number {
    const last = this.ranges[this.ranges.length - 1];
    return last ? last.gpa + last.size : 0;
  }

  /** Names of the blocks the ranges use, in order of first use. */
  get blocks(): string[] {
    return [...new Set(this.ranges.map((r) => r.block))];
  }

  /** The range holding `paddr`, or undefined in a hole (binary search). */
  rangeAt(paddr: bigint | number): RamRange | undefined {
    const a = Number(paddr);
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid];
      if (a < r.gpa) hi = mid - 1;
      else if (a >= r.gpa + r.size) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /**
   * The one range that holds all of [paddr, paddr+length), or undefined (a hole, or an
   * access running into the next range: pieces then splits or refuses it). No allocation:
   * page walks and the doorbell's polling read a few bytes thousands of times a run.
   */
  within(paddr: bigint | number, length: number): RamRange | undefined {
    const a = Number(paddr);
    if (!Number.isSafeInteger(a) || a < 0 || length < 0) return undefined;
    const r = this.rangeAt(a);
    return r && a + length <= r.gpa + r.size ? r : undefined;
  }

  /** True when every byte of [paddr, paddr+length) is RAM. */
  contains(paddr: bigint | number, length: number): boolean {
    if (this.within(paddr, length)) return true;
    try {
      this.pieces(paddr, length);
      return true;
    } catch (e) {
      if (e instanceof PhysicalMemoryError) return false;
      throw e;
    }
  }

  /**
   * Splits an access into per-range pieces (an access may run from one range into the
   * next when they touch). Throws PhysicalMemoryError naming the first byte that is in
   * no range.
   */
  pieces(paddr: bigint | number, length: number): RamPiece[] {
    // Most accesses lie in one range: one piece, without the BigInt bounds arithmetic.
    const one = this.within(paddr, length);
    if (one) return [{ range: one, blockOffset: one.offset + (Number(paddr) - one.gpa), at: 0, length }];
    const start = typeof paddr === 'bigint' ? paddr : BigInt(paddr);
    if (start < 0n || start + BigInt(length) > BigInt(Number.MAX_SAFE_INTEGER) || length < 0)
      throw new PhysicalMemoryError(`physical range ${hex(start)}+${length} is outside guest RAM`);
    const out: RamPiece[] = [];
    let at = 0;
    while (at < length || (length === 0 && out.length === 0)) {
      const a = Number(start) + at;
      const r = this.rangeAt(a);
      if (!r) {
        throw new PhysicalMemoryError(
          `physical address ${hex(a)} is not guest RAM (RAM: ${this.describe()})`,
        );
      }
      const n = Math.min(length - at, r.gpa + r.size - a);
      out.push({ range: r, blockOffset: r.offset + (a - r.gpa), at, length: n });
      at += n;
      if (length === 0) break;
    }
    return out;
  }

  /** `0x0-0x7fffffff, 0x100000000-0x17fffffff` (inclusive ends, as /proc/iomem writes them). */
  describe(): string {
    return this.ranges.map((r) => `${hex(r.gpa)}-${hex(r.gpa + r.size - 1)}`).join(', ');
  }
}
