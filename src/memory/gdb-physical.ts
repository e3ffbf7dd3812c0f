import type { GdbClient } from '../qemu/gdb.js';
import type { PhysicalMemory } from './physical.js';
import type { RamLayout } from './ram-layout.js';

/**
 * Guest-physical memory through the gdbstub (`Qqemu.PhyMemMode:1`), for guests without
 * a shared RAM file. Slow (10–30 MB/s) but works with any QEMU that has a gdbstub. The
 * stub's addressing mode is (re)asserted before every access, since virtual accesses by
 * the engine switch it back.
 */
export class GdbPhysicalMemory implements PhysicalMemory {
  constructor(
    private readonly gdb: GdbClient,
    readonly layout: RamLayout,
  ) {}

  /** The client tracks the stub's mode, so this is free unless someone switched it. */
  private mode(on: boolean): Promise<void> {
    return this.gdb.setPhysicalMemoryMode(on);
  }

  /**
   * The stub reads whatever QEMU maps at an address (MMIO, ROM, nothing): only RAM
   * ranges are allowed through, so a wrong address is an error, not wrong bytes.
   */
  async read(paddr: bigint, length: number): Promise<Buffer> {
    this.layout.pieces(paddr, length);
    await this.mode(true);
    return this.gdb.readMemory(paddr, length);
  }

  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    target.set(await this.read(paddr, length), offset);
  }

  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.layout.pieces(paddr, data.length);
    await this.mode(true);
    await this.gdb.writeMemory(paddr, data);
  }

  /** Virtual accesses (through the current vCPU's page tables) go through here too. */
  async withVirtual<T>(fn: () => Promise<T>): Promise<T> {
    await this.mode(false);
    return fn();
  }

  close(): void {}
}
