import type { GdbClient } from '../qemu/gdb.js';
import type { PhysicalMemory } from './physical.js';

/**
 * Guest-physical memory through the gdbstub (`Qqemu.PhyMemMode:1`), for guests without
 * a shared RAM file. Slow (20–30 MB/s) but works with any QEMU that has a gdbstub. The
 * stub's mode is switched back to virtual addressing around virtual accesses by others,
 * so the mode is set before every access rather than assumed.
 */
export class GdbPhysicalMemory implements PhysicalMemory {
  private physical = false;

  constructor(
    private readonly gdb: GdbClient,
    readonly size: number,
  ) {}

  private async mode(on: boolean): Promise<void> {
    if (this.physical === on) return;
    await this.gdb.setPhysicalMemoryMode(on);
    this.physical = on;
  }

  async read(paddr: bigint, length: number): Promise<Buffer> {
    await this.mode(true);
    return this.gdb.readMemory(paddr, length);
  }

  async write(paddr: bigint, data: Uint8Array): Promise<void> {
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
