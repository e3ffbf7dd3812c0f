import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { PhysicalMemoryError, RamLayout } from './ram-layout.js';

export { PhysicalMemoryError, RamLayout } from './ram-layout.js';
export type { RamRange } from './ram-layout.js';

/**
 * A source of guest-physical memory. Only this layer knows where the bytes come from
 * (a shared RAM file, the gdbstub, a capture); page walks and the shadow engine sit on top.
 * Every source checks accesses against its {@link RamLayout}: an address in no RAM range
 * throws PhysicalMemoryError.
 */
export interface PhysicalMemory {
  /** Where guest RAM is (guest-physical ranges and the blocks behind them). */
  readonly layout: RamLayout;
  read(paddr: bigint, length: number): Promise<Buffer>;
  /** Reads into `target` at `offset` (no intermediate buffer). */
  readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void>;
  /**
   * readInto without a promise, for sources that read with a plain pread (the RAM file,
   * QEMU's process memory): the doorbell polls its done word this way.
   */
  readIntoSync?(paddr: bigint, target: Uint8Array, offset: number, length: number): void;
  write(paddr: bigint, data: Uint8Array): Promise<void>;
  close(): void;
}

/**
 * Guest RAM shared with QEMU through memory-backend-file(s) (share=on): one file per RAM
 * block, each range of the layout a window into its block's file at the range's offset.
 * (Only on q35 below 2.75 GiB, or pc below 3.5 GiB, is file offset = guest-physical address.)
 */
export class RamFileMemory implements PhysicalMemory {
  /** Block name → fd. */
  private readonly fds = new Map<string, number>();

  /**
   * @param files block name → path of its RAM file, or one path for a layout of one block
   * @param layout the guest's RAM ranges; default one flat range of the file's size
   *   (`size` bytes) at 0
   * @throws PhysicalMemoryError when a file cannot be opened or a block has no file
   */
  constructor(
    files: string | Readonly<Record<string, string>>,
    readonly layout: RamLayout,
    writable = true,
  ) {
    const byBlock: Record<string, string> =
      typeof files === 'string' ? Object.fromEntries(layout.blocks.map((b) => [b, files])) : { ...files };
    try {
      for (const block of layout.blocks) {
        const path = byBlock[block];
        if (!path) throw new PhysicalMemoryError(`no RAM file for RAM block ${block}`);
        try {
          this.fds.set(block, openSync(path, writable ? 'r+' : 'r'));
        } catch (err) {
          throw new PhysicalMemoryError(`cannot open guest RAM file ${path}: ${(err as Error).message}`);
        }
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  async read(paddr: bigint, length: number): Promise<Buffer> {
    return this.readSync(paddr, length);
  }

  /** Synchronous read: page walks do many tiny reads and gain nothing from the event loop. */
  readSync(paddr: bigint, length: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    this.readIntoSync(paddr, buf, 0, length);
    return buf;
  }

  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    this.readIntoSync(paddr, target, offset, length);
  }

  /** The doorbell's polling loop reads its words this way: no allocation per poll. */
  readIntoSync(paddr: bigint, target: Uint8Array, offset: number, length: number): void {
    const pieces = this.layout.pieces(paddr, length);
    if (offset < 0 || offset + length > target.length) {
      throw new RangeError(
        `readInto: ${length} bytes at ${offset} do not fit a ${target.length}-byte buffer`,
      );
    }
    for (const p of pieces) {
      const fd = this.fds.get(p.range.block)!;
      let done = 0;
      while (done < p.length) {
        const n = readSync(fd, target, offset + p.at + done, p.length - done, p.blockOffset + done);
        if (n === 0) throw new PhysicalMemoryError(`short read of guest RAM at 0x${paddr.toString(16)}`);
        done += n;
      }
    }
  }

  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.writeSync(paddr, data);
  }

  writeSync(paddr: bigint, data: Uint8Array): void {
    for (const p of this.layout.pieces(paddr, data.length)) {
      const fd = this.fds.get(p.range.block)!;
      let done = 0;
      while (done < p.length) {
        done += writeSync(fd, data, p.at + done, p.length - done, p.blockOffset + done);
      }
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
