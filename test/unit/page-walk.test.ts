import { describe, expect, it } from 'vitest';
import { translate, translateRange, PageWalkError, CR4_LA57 } from '../../src/memory/page-walk.js';
import { RamLayout, type PhysicalMemory } from '../../src/memory/physical.js';

/** A small guest-physical memory held in a Buffer, for building page tables by hand. */
class BufferMemory implements PhysicalMemory {
  readonly buf: Buffer;
  readonly layout: RamLayout;
  constructor(readonly size: number) {
    this.buf = Buffer.alloc(size);
    this.layout = RamLayout.flat(size);
  }
  async read(paddr: bigint, length: number): Promise<Buffer> {
    const o = Number(paddr);
    if (o < 0 || o + length > this.size) throw new Error('out of range');
    return Buffer.from(this.buf.subarray(o, o + length));
  }
  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    target.set(await this.read(paddr, length), offset);
  }
  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.buf.set(data, Number(paddr));
  }
  close(): void {}
  set(table: number, index: number, value: bigint): void {
    this.buf.writeBigUInt64LE(value, table + index * 8);
  }
}

const P = 1n,
  W = 2n,
  U = 4n,
  PS = 0x80n,
  NX = 1n << 63n;
const idx = (va: bigint, level: number) => Number((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);

describe('x86-64 page walk', () => {
  it('translates 4 KiB, 2 MiB and 1 GiB leaves with 4-level paging', async () => {
    const m = new BufferMemory(1 << 22);
    const pml4 = 0x1000,
      pdpt = 0x2000,
      pd = 0x3000,
      pt = 0x4000;
    const va = 0x7f12_3456_7000n;
    m.set(pml4, idx(va, 4), BigInt(pdpt) | P | W | U);
    m.set(pdpt, idx(va, 3), BigInt(pd) | P | W | U);
    m.set(pd, idx(va, 2), BigInt(pt) | P | W | U);
    m.set(pt, idx(va, 1), 0x20_0000n | P | W | U | NX);
    const t = await translate(m, BigInt(pml4), 0n, va + 0x123n);
    expect(t).toMatchObject({
      paddr: 0x20_0123n,
      pageSize: 4096,
      writable: true,
      user: true,
      executable: false,
    });

    const va2 = 0x4000_0000n; // 1 GiB leaf
    m.set(pml4, idx(va2, 4), BigInt(pdpt) | P | W);
    m.set(pdpt, idx(va2, 3), 0x4000_0000n | P | PS);
    expect(await translate(m, BigInt(pml4), 0n, va2 + 0x1234n)).toMatchObject({
      paddr: 0x4000_1234n,
      pageSize: 1 << 30,
      writable: false,
    });

    const va3 = 0x7f12_3460_0000n; // 2 MiB leaf in the same PD
    m.set(pd, idx(va3, 2), 0x60_0000n | P | W | U | PS);
    expect(await translate(m, BigInt(pml4), 0n, va3 + 0x1_2345n)).toMatchObject({
      paddr: 0x61_2345n,
      pageSize: 2 << 20,
    });
  });

  it('walks five levels when CR4.LA57 is set', async () => {
    const m = new BufferMemory(1 << 20);
    const pml5 = 0x1000,
      pml4 = 0x2000,
      pdpt = 0x3000,
      pd = 0x4000,
      pt = 0x5000;
    const va = 0x00ff_1234_5678_9000n;
    m.set(pml5, Number((va >> 48n) & 0x1ffn), BigInt(pml4) | P | W | U);
    m.set(pml4, idx(va, 4), BigInt(pdpt) | P | W | U);
    m.set(pdpt, idx(va, 3), BigInt(pd) | P | W | U);
    m.set(pd, idx(va, 2), BigInt(pt) | P | W | U);
    m.set(pt, idx(va, 1), 0x8000n | P | W | U);
    expect((await translate(m, BigInt(pml5), CR4_LA57, va))?.paddr).toBe(0x8000n);
    // The same tables read as 4-level paging lead elsewhere (not mapped).
    expect(await translate(m, BigInt(pml5), 0n, va)).toBeNull();
  });

  it('returns null for unmapped addresses and rejects tables outside RAM', async () => {
    const m = new BufferMemory(0x10000);
    expect(await translate(m, 0x1000n, 0n, 0x1234n)).toBeNull();
    m.set(0x1000, 0, 0x7fff_f000n | P); // points far outside the 64 KiB of RAM
    await expect(translate(m, 0x1000n, 0n, 0x1234n)).rejects.toThrow(PageWalkError);
  });

  it('translates ranges across pages, merging physically adjacent pages', async () => {
    const m = new BufferMemory(1 << 20);
    const pml4 = 0x1000,
      pdpt = 0x2000,
      pd = 0x3000,
      pt = 0x4000;
    const va = 0x40_0000n;
    m.set(pml4, 0, BigInt(pdpt) | P | W | U);
    m.set(pdpt, 0, BigInt(pd) | P | W | U);
    m.set(pd, idx(va, 2), BigInt(pt) | P | W | U);
    m.set(pt, 0, 0x10000n | P | W | U);
    m.set(pt, 1, 0x11000n | P | W | U); // adjacent to the first
    m.set(pt, 2, 0x30000n | P | U); // read-only
    const chunks = await translateRange(m, BigInt(pml4), 0n, va + 0x800n, 0x2000);
    expect(chunks).toEqual([
      { paddr: 0x10800n, length: 0x1800, offset: 0 },
      { paddr: 0x30000n, length: 0x800, offset: 0x1800 },
    ]);
    await expect(translateRange(m, BigInt(pml4), 0n, va, 0x3000, true)).rejects.toThrow(
      /not a user-writable page/,
    );
    await expect(translateRange(m, BigInt(pml4), 0n, va, 0x4000)).rejects.toThrow(/not mapped/);
  });
});
