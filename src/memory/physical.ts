import { closeSync, openSync, readSync, writeSync } from 'node:fs';

/**
 * A source of guest-physical memory. Only this layer knows where the bytes come from
 * (a shared RAM file, the gdbstub, a capture); page walks and the shadow engine sit on top.
 */
export interface PhysicalMemory {
  readonly size: number;
  read(paddr: bigint, length: number): Promise<Buffer>;
  /** Reads into `target` at `offset` (no intermediate buffer). */
  readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void>;
  write(paddr: bigint, data: Uint8Array): Promise<void>;
  close(): void;
}

export class PhysicalMemoryError extends Error {}

/**
 * Guest RAM shared with QEMU through a memory-backend-file (share=on). On q35 with less
 * than 2 GiB of RAM the file offset equals the guest-physical address.
 */
export class RamFileMemory implements PhysicalMemory {
  private readonly fd: number;

  constructor(
    readonly path: string,
    readonly size: number,
    writable = true,
  ) {
    try {
      this.fd = openSync(path, writable ? 'r+' : 'r');
    } catch (err) {
      throw new PhysicalMemoryError(`cannot open guest RAM file ${path}: ${(err as Error).message}`);
    }
  }

  private check(paddr: bigint, length: number): number {
    const offset = Number(paddr);
    if (paddr < 0n || offset + length > this.size) {
      throw new PhysicalMemoryError(
        `physical range 0x${paddr.toString(16)}+${length} is outside guest RAM (${this.size} bytes)`,
      );
    }
    return offset;
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
    const at = this.check(paddr, length);
    if (offset < 0 || offset + length > target.length) {
      throw new RangeError(
        `readInto: ${length} bytes at ${offset} do not fit a ${target.length}-byte buffer`,
      );
    }
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, target, offset + done, length - done, at + done);
      if (n === 0) throw new PhysicalMemoryError(`short read of guest RAM at 0x${paddr.toString(16)}`);
      done += n;
    }
  }

  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.writeSync(paddr, data);
  }

  writeSync(paddr: bigint, data: Uint8Array): void {
    const offset = this.check(paddr, data.length);
    let done = 0;
    while (done < data.length) {
      done += writeSync(this.fd, data, done, data.length - done, offset + done);
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}
