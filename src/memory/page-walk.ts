import type { PhysicalMemory } from './physical.js';

/** x86-64 page-table entry bits used by the walker. */
const PTE_PRESENT = 1n;
const PTE_WRITABLE = 1n << 1n;
const PTE_USER = 1n << 2n;
const PTE_HUGE = 1n << 7n;
const PTE_NX = 1n << 63n;
/** Physical-address bits 12..51 of an entry. */
const ADDR_MASK = 0x000f_ffff_ffff_f000n;
const CR3_ADDR_MASK = 0x000f_ffff_ffff_f000n;
/** CR4.LA57: 5-level paging. */
export const CR4_LA57 = 1n << 12n;

export interface Translation {
  paddr: bigint;
  /** Size of the leaf page: 4 KiB, 2 MiB or 1 GiB. */
  pageSize: number;
  writable: boolean;
  user: boolean;
  executable: boolean;
}

export class PageWalkError extends Error {}

/**
 * Walks the guest's page tables (4- or 5-level, with 2 MiB and 1 GiB leaves) from a CR3
 * value. Returns null for an unmapped address. Translations are never cached: the guest
 * may move pages at any time, so callers walk again before each use.
 */
export async function translate(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vaddr: bigint,
): Promise<Translation | null> {
  const fiveLevel = (cr4 & CR4_LA57) !== 0n;
  const levels = fiveLevel ? 5 : 4;
  let table = cr3 & CR3_ADDR_MASK;
  let writable = true;
  let user = true;
  let executable = true;
  for (let level = levels; level >= 1; level--) {
    const shift = BigInt(12 + 9 * (level - 1));
    const index = (vaddr >> shift) & 0x1ffn;
    const entryAddr = table + index * 8n;
    if (!mem.layout.contains(entryAddr, 8)) {
      throw new PageWalkError(`page table at 0x${table.toString(16)} lies outside guest RAM`);
    }
    const entry = (await mem.read(entryAddr, 8)).readBigUInt64LE(0);
    if ((entry & PTE_PRESENT) === 0n) return null;
    writable &&= (entry & PTE_WRITABLE) !== 0n;
    user &&= (entry & PTE_USER) !== 0n;
    executable &&= (entry & PTE_NX) === 0n;
    const isLeaf = level === 1 || ((level === 2 || level === 3) && (entry & PTE_HUGE) !== 0n);
    if (isLeaf) {
      const pageSize = 1n << shift;
      const base = entry & ADDR_MASK & ~(pageSize - 1n);
      return {
        paddr: base + (vaddr & (pageSize - 1n)),
        pageSize: Number(pageSize),
        writable,
        user,
        executable,
      };
    }
    table = entry & ADDR_MASK;
  }
  return null;
}

/** Walks down to the page table (level-1 table) covering vaddr, or returns a huge-page leaf. */
async function walkToTable(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vaddr: bigint,
): Promise<{ table: bigint } | { leaf: Translation } | null> {
  const levels = (cr4 & CR4_LA57) !== 0n ? 5 : 4;
  let table = cr3 & CR3_ADDR_MASK;
  for (let level = levels; level >= 2; level--) {
    const shift = BigInt(12 + 9 * (level - 1));
    const entryAddr = table + ((vaddr >> shift) & 0x1ffn) * 8n;
    if (!mem.layout.contains(entryAddr, 8)) {
      throw new PageWalkError(`page table at 0x${table.toString(16)} lies outside guest RAM`);
    }
    const entry = (await mem.read(entryAddr, 8)).readBigUInt64LE(0);
    if ((entry & PTE_PRESENT) === 0n) return null;
    if ((level === 2 || level === 3) && (entry & PTE_HUGE) !== 0n) {
      const pageSize = 1n << shift;
      return {
        leaf: {
          paddr: (entry & ADDR_MASK & ~(pageSize - 1n)) + (vaddr & (pageSize - 1n)),
          pageSize: Number(pageSize),
          writable: (entry & PTE_WRITABLE) !== 0n,
          user: (entry & PTE_USER) !== 0n,
          executable: (entry & PTE_NX) === 0n,
        },
      };
    }
    table = entry & ADDR_MASK;
  }
  return { table };
}

export interface PhysicalChunk {
  paddr: bigint;
  length: number;
  /** Offset of this chunk within the virtual range. */
  offset: number;
}

/**
 * Translates a virtual range into physical chunks (adjacent pages that are also
 * physically adjacent are merged). Page tables are read a whole run of entries at a time,
 * so a 4 MiB range costs a dozen reads rather than thousands. Throws when any page of the
 * range is unmapped, or (with requireUserWritable) not a user-writable page.
 */
export async function translateRange(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vaddr: bigint,
  length: number,
  requireUserWritable = false,
): Promise<PhysicalChunk[]> {
  const chunks: PhysicalChunk[] = [];
  const push = (paddr: bigint, n: number, offset: number): void => {
    const last = chunks[chunks.length - 1];
    if (last && last.paddr + BigInt(last.length) === paddr) last.length += n;
    else chunks.push({ paddr, length: n, offset });
  };
  const check = (ok: boolean, va: bigint): void => {
    if (requireUserWritable && !ok) {
      throw new PageWalkError(`virtual address 0x${va.toString(16)} is not a user-writable page`);
    }
  };
  let offset = 0;
  while (offset < length) {
    const va = vaddr + BigInt(offset);
    const step = await walkToTable(mem, cr3, cr4, va);
    if (!step) throw new PageWalkError(`virtual address 0x${va.toString(16)} is not mapped`);
    if ('leaf' in step) {
      check(step.leaf.writable && step.leaf.user, va);
      const inPage = Number(va & BigInt(step.leaf.pageSize - 1));
      const n = Math.min(length - offset, step.leaf.pageSize - inPage);
      push(step.leaf.paddr, n, offset);
      offset += n;
      continue;
    }
    // Read the run of level-1 entries this range needs from this table in one go.
    const first = Number((va >> 12n) & 0x1ffn);
    const pagesLeft = Math.ceil((Number(va & 0xfffn) + (length - offset)) / 4096);
    const count = Math.min(512 - first, pagesLeft);
    const entries = await mem.read(step.table + BigInt(first * 8), count * 8);
    for (let i = 0; i < count && offset < length; i++) {
      const entry = entries.readBigUInt64LE(i * 8);
      const pva = vaddr + BigInt(offset);
      if ((entry & PTE_PRESENT) === 0n) {
        throw new PageWalkError(`virtual address 0x${pva.toString(16)} is not mapped`);
      }
      check((entry & PTE_WRITABLE) !== 0n && (entry & PTE_USER) !== 0n, pva);
      const inPage = Number(pva & 0xfffn);
      const n = Math.min(length - offset, 4096 - inPage);
      push((entry & ADDR_MASK) + BigInt(inPage), n, offset);
      offset += n;
    }
  }
  return chunks;
}

/** Reads a virtual range through the page tables. */
export async function readVirtual(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vaddr: bigint,
  length: number,
): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  // translateRange covers every byte of the range (or throws), so nothing stays uninitialised.
  for (const c of await translateRange(mem, cr3, cr4, vaddr, length)) {
    await mem.readInto(c.paddr, out, c.offset, c.length);
  }
  return out;
}

/** Writes a virtual range through the page tables (the pages must be mapped). */
export async function writeVirtual(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  vaddr: bigint,
  data: Uint8Array,
): Promise<void> {
  for (const c of await translateRange(mem, cr3, cr4, vaddr, data.length)) {
    await mem.write(c.paddr, data.subarray(c.offset, c.offset + c.length));
  }
}

/** A run of mapped virtual pages with the same rights (from {@link mappedRanges}). */
export interface MappedRange {
  /** First virtual address (page aligned). */
  start: bigint;
  /** Bytes (a multiple of 4 KiB). */
  size: bigint;
  writable: boolean;
  executable: boolean;
  user: boolean;
}

/** Most page-table pages one {@link mappedRanges} call reads (a hostile guest cannot make it walk forever). */
export const MAX_WALKED_TABLES = 1 << 16;

/**
 * Every mapped page in the virtual range [start, end), as runs of adjacent pages with the
 * same effective rights (NX, R/W and U/S combined down the walk, as the MMU does). Each
 * page-table page is read once as a whole (4 KiB); absent entries skip their whole span.
 * Addresses are canonical 48- or 57-bit (CR4.LA57). Source: Intel SDM vol. 3A §4.5.
 * @throws PageWalkError when a table lies outside guest RAM or more than MAX_WALKED_TABLES are met
 */
export async function mappedRanges(
  mem: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  start: bigint,
  end: bigint,
): Promise<MappedRange[]> {
  const levels = (cr4 & CR4_LA57) !== 0n ? 5 : 4;
  const vaBits = BigInt(12 + 9 * levels);
  const canonMask = (1n << vaBits) - 1n;
  const signExtend = (va: bigint): bigint =>
    (va & (1n << (vaBits - 1n)) ? va | ~canonMask : va) & 0xffff_ffff_ffff_ffffn;
  const out: MappedRange[] = [];
  let tables = 0;
  const emit = (va: bigint, size: bigint, w: boolean, x: boolean, u: boolean): void => {
    const last = out[out.length - 1];
    if (
      last &&
      last.start + last.size === va &&
      last.writable === w &&
      last.executable === x &&
      last.user === u
    )
      last.size += size;
    else out.push({ start: va, size, writable: w, executable: x, user: u });
  };
  const lo = start & canonMask;
  const hi = ((end - 1n) & canonMask) + 1n;
  const walk = async (
    table: bigint,
    level: number,
    base: bigint,
    w: boolean,
    x: boolean,
    u: boolean,
  ): Promise<void> => {
    if (++tables > MAX_WALKED_TABLES)
      throw new PageWalkError(`more than ${MAX_WALKED_TABLES} page tables in range`);
    if (!mem.layout.contains(table, 4096)) {
      throw new PageWalkError(`page table at 0x${table.toString(16)} lies outside guest RAM`);
    }
    const shift = BigInt(12 + 9 * (level - 1));
    const span = 1n << shift;
    const entries = await mem.read(table, 4096);
    for (let i = 0; i < 512; i++) {
      const va = base + BigInt(i) * span;
      if (va + span <= lo || va >= hi) continue;
      const entry = entries.readBigUInt64LE(i * 8);
      if ((entry & PTE_PRESENT) === 0n) continue;
      const ew = w && (entry & PTE_WRITABLE) !== 0n;
      const ex = x && (entry & PTE_NX) === 0n;
      const eu = u && (entry & PTE_USER) !== 0n;
      if (level === 1 || ((level === 2 || level === 3) && (entry & PTE_HUGE) !== 0n)) {
        const from = va < lo ? lo : va;
        const to = va + span > hi ? hi : va + span;
        emit(signExtend(from), to - from, ew, ex, eu);
      } else {
        await walk(entry & ADDR_MASK, level - 1, va, ew, ex, eu);
      }
    }
  };
  if (lo < hi) await walk(cr3 & CR3_ADDR_MASK, levels, 0n, true, true, true);
  return out;
}
