import { describe, expect, it } from 'vitest';
import { DoorbellTransport, POLL_SPIN_MS, pollStepMs } from '../../src/shadow/transport.js';
import { CONTROL, LAYOUT } from '../../src/shadow/layout.js';
import { RamLayout, type PhysicalMemory } from '../../src/memory/physical.js';
import type { ShadowHandle } from '../../src/shadow/shadow.js';

const BASE = 0x7f00_0000_0000n;
/** Where the fake's control page lies in guest-physical memory. */
const CONTROL_PADDR = 0x10000;

/**
 * Guest RAM with one mapped page (the shadow's control page) whose done word reaches `seq`
 * once `busyMs` have passed since the first look: a batch that takes that long.
 */
class BatchMemory implements PhysicalMemory {
  readonly buf = Buffer.alloc(0x20000);
  readonly layout = RamLayout.flat(0x20000);
  looks = 0;
  private firstLook = 0;

  constructor(
    private readonly seq: bigint,
    private readonly busyMs: number,
  ) {
    // 4-level tables at 0x1000..0x4000 mapping BASE + control → CONTROL_PADDR (P|W|U).
    const va = BASE + BigInt(LAYOUT.control);
    const idx = (level: number) => Number((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
    const tables = [0x1000, 0x2000, 0x3000, 0x4000];
    for (let l = 4; l >= 1; l--) {
      const next = l > 1 ? tables[4 - l + 1] : CONTROL_PADDR;
      this.buf.writeBigUInt64LE(BigInt(next) | 7n, tables[4 - l] + idx(l) * 8);
    }
  }

  readIntoSync(paddr: bigint, target: Uint8Array, offset: number, length: number): void {
    if (paddr === BigInt(CONTROL_PADDR + CONTROL.done)) {
      const now = performance.now();
      if (this.looks++ === 0) this.firstLook = now;
      if (now - this.firstLook >= this.busyMs)
        this.buf.writeBigUInt64LE(this.seq, CONTROL_PADDR + CONTROL.done);
    }
    target.set(this.buf.subarray(Number(paddr), Number(paddr) + length), offset);
  }
  async read(paddr: bigint, length: number): Promise<Buffer> {
    const b = Buffer.alloc(length);
    this.readIntoSync(paddr, b, 0, length);
    return b;
  }
  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    this.readIntoSync(paddr, target, offset, length);
  }
  async write(): Promise<void> {
    throw new Error('the poll must not write');
  }
  close(): void {}
}

function fakeShadow(mem: BatchMemory): ShadowHandle {
  return {
    mem,
    cr3: 0x1000n,
    cr4: 0n,
    base: BASE,
    pid: 1,
    verify: async () => {},
    readControl: async (word: keyof typeof CONTROL) => mem.buf.readBigUInt64LE(CONTROL_PADDR + CONTROL[word]),
  } as unknown as ShadowHandle;
}

describe("the doorbell's poll", () => {
  it('spins only briefly, then sleeps between looks', async () => {
    // A 10 ms batch: ~50 µs of looks with only an event-loop turn between them, ~2 ms of
    // 50 µs sleeps, then 200 µs ones: ~30 looks here. Spinning a hundred looks first (each
    // with an event-loop turn) took ~2 ms of host CPU per batch from QEMU's core (and made
    // more than a hundred looks here).
    const mem = new BatchMemory(1n, 10);
    await new DoorbellTransport(fakeShadow(mem)).finish(1n, 5000);
    expect(mem.looks).toBeGreaterThan(2);
    expect(mem.looks).toBeLessThan(80);
  });

  it('sleeps nothing within the spin window, then longer steps the longer it waits', () => {
    expect(pollStepMs(0)).toBe(0);
    expect(pollStepMs(POLL_SPIN_MS / 2)).toBe(0);
    expect(pollStepMs(POLL_SPIN_MS)).toBe(0.05);
    expect(pollStepMs(1.9)).toBe(0.05);
    expect(pollStepMs(2)).toBe(0.2);
    expect(pollStepMs(1000)).toBe(1);
  });
});
