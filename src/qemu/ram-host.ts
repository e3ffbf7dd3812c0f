/**
 * Where QEMU keeps guest RAM in its own address space, asked of QEMU: HMP `gpa2hva ADDR`
 * (monitor/misc.c hmp_gpa2hva, QEMU >= 2.10) resolves a guest-physical address through
 * the system memory map to the RAM block's host pointer and names the memory region:
 *
 *   Host virtual address for 0x1000 (pc.ram) is 0x7f527fe01000
 *   No memory is mapped at address 0x4000000
 *
 * A RAM block is one host allocation, so block host base = hva(range start) - range
 * offset; asking the last byte of every range too proves the range is contiguous in the
 * host (a different block or a remap would break the arithmetic). No guessing from
 * mapping sizes, which two blocks (or two QEMUs' blocks) of one size would fool.
 *
 * HMP `xp /Nxg ADDR` reads guest-physical words through QEMU itself: the reference that a
 * host mapping's bytes are checked against before anyone trusts them.
 */
import type { QmpClient } from './qmp.js';
import type { RamRange } from './ram-map.js';

export class RamHostError extends Error {
  override name = 'RamHostError';
}

/** Where a QEMU process keeps guest RAM: what GuestEndpoints.qemuRam records. */
export interface QemuRamHost {
  pid: number;
  /** /proc/PID/stat field 22: a reused PID is refused. */
  startTime: number;
  /** RAM block name → host-virtual address of the block's first byte in QEMU. */
  blockBases: Record<string, number>;
}

export interface Gpa2hva {
  gpa: number;
  /** The memory region's name (memory backend id, or `pc.ram`). */
  region: string;
  hva: number;
}

/** One `gpa2hva` answer (pure); undefined for "No memory is mapped" or anything else. */
export function parseGpa2hva(text: string): Gpa2hva | undefined {
  const m = /Host virtual address for 0x([0-9a-f]+) \((.*)\) is (?:0x)?([0-9a-f]+)/i.exec(text);
  if (!m) return undefined;
  const gpa = parseInt(m[1], 16);
  const hva = parseInt(m[3], 16);
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(hva) || hva === 0) return undefined;
  return { gpa, region: m[2], hva };
}

/**
 * Host base of every RAM block from per-range answers (pure): `answer(gpa)` is QEMU's
 * reply for that address. Each range's first and last byte must resolve to its own block
 * and to base + offset, with one base per block.
 * @throws RamHostError naming the first range that does not add up
 */
export async function blockHostBases(
  ranges: readonly RamRange[],
  answer: (gpa: number) => Promise<string>,
): Promise<Record<string, number>> {
  const bases: Record<string, number> = {};
  const hex = (v: number) => `0x${v.toString(16)}`;
  for (const r of ranges) {
    for (const at of [r.gpa, r.gpa + r.size - 1]) {
      const text = await answer(at);
      const a = parseGpa2hva(text);
      if (!a || a.gpa !== at)
        throw new RamHostError(`QEMU gave no host address for ${hex(at)}: ${text.trim().slice(0, 120)}`);
      if (a.region !== r.block)
        throw new RamHostError(`${hex(at)} is in region ${a.region}, not RAM block ${r.block}`);
      const base = a.hva - (r.offset + (at - r.gpa));
      if (bases[r.block] === undefined) bases[r.block] = base;
      else if (bases[r.block] !== base)
        throw new RamHostError(`RAM block ${r.block} is not one host allocation (${hex(at)} maps elsewhere)`);
    }
  }
  return bases;
}

/** The host base of each RAM block of `ranges`, asked of a running QEMU (read-only, ~1 ms per question). */
export function queryBlockHostBases(
  qmp: QmpClient,
  ranges: readonly RamRange[],
): Promise<Record<string, number>> {
  return blockHostBases(ranges, (gpa) => qmp.hmp(`gpa2hva 0x${gpa.toString(16)}`));
}

/**
 * The bytes of an `xp /Nxg` answer (pure): lines `ADDR: 0xWORD 0xWORD`, words little-endian.
 * @throws RamHostError when the text is not that (an error message, an unmapped address)
 */
export function parseXpWords(text: string, gpa: number, words: number): Buffer {
  const out = Buffer.alloc(words * 8);
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+):((?:\s+0x[0-9a-f]+)+)\s*$/i.exec(line.trim());
    if (!m) continue;
    const addr = parseInt(m[1], 16);
    if (addr !== gpa + n * 8) throw new RamHostError(`xp answered for 0x${addr.toString(16)} out of order`);
    for (const w of m[2].trim().split(/\s+/)) {
      if (n >= words) break;
      out.writeBigUInt64LE(BigInt(w), n * 8);
      n++;
    }
  }
  if (n !== words) throw new RamHostError(`xp gave ${n} of ${words} words: ${text.trim().slice(0, 120)}`);
  return out;
}

/** Reads `words` 8-byte words of guest-physical memory through QEMU's monitor (slow; for checks only). */
export async function monitorReadPhysical(qmp: QmpClient, gpa: number, words: number): Promise<Buffer> {
  return parseXpWords(await qmp.hmp(`xp /${words}xg 0x${gpa.toString(16)}`), gpa, words);
}
