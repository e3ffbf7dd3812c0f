import type { PhysicalMemory } from '../memory/physical.js';
import { PageWalkError, readVirtual, translateRange } from '../memory/page-walk.js';
import { hex, unhex, type ShadowRecord } from './journal.js';
import { CONTROL, LAYOUT } from './layout.js';
import { STUB_CODE_HEX } from './stub/stub-code.js';

export class ShadowLostError extends Error {
  /** Found by the check that precedes every write: nothing of the batch reached the guest. */
  beforeWrite = false;
}

/** The shadow's code or identity was changed by someone else: it must not be used again. */
export class ShadowTamperedError extends ShadowLostError {}

const STUB_CODE = Buffer.from(STUB_CODE_HEX, 'hex');

/**
 * The host's handle on a running shadow: where its scratch region is, which address
 * space it lives in, and the random marker it was born with. Every access goes through
 * a fresh page walk of the shadow's own page tables, and checks the marker first, so a
 * dead shadow whose pages were reused is never written to.
 */
export class ShadowHandle {
  constructor(
    readonly mem: PhysicalMemory,
    readonly base: bigint,
    readonly cr3: bigint,
    readonly cr4: bigint,
    readonly marker: bigint,
    readonly pid: number,
  ) {}

  /** The handle of a shadow the journal recorded. */
  static fromRecord(mem: PhysicalMemory, r: ShadowRecord): ShadowHandle {
    return new ShadowHandle(mem, unhex(r.base), unhex(r.cr3), unhex(r.cr4), unhex(r.marker), r.pid);
  }

  /** What the journal records of this shadow (not resident). */
  toRecord(transport: ShadowRecord['transport']): ShadowRecord {
    return {
      pid: this.pid,
      cr3: hex(this.cr3),
      cr4: hex(this.cr4),
      base: hex(this.base),
      marker: hex(this.marker),
      transport,
    };
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return this.lost(() => readVirtual(this.mem, this.cr3, this.cr4, this.base + BigInt(offset), length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const chunks = await this.lost(() =>
      translateRange(this.mem, this.cr3, this.cr4, this.base + BigInt(offset), data.length, true),
    );
    for (const c of chunks) await this.mem.write(c.paddr, data.subarray(c.offset, c.offset + c.length));
  }

  /** A page walk that fails means the shadow's address space is gone (or being torn down). */
  private async lost<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof PageWalkError) {
        throw new ShadowLostError(`shadow (pid ${this.pid}) is gone: ${err.message}`);
      }
      throw err;
    }
  }

  async readControl(word: keyof typeof CONTROL): Promise<bigint> {
    return (await this.read(LAYOUT.control + CONTROL[word], 8)).readBigUInt64LE(0);
  }

  async writeControl(word: keyof typeof CONTROL, value: bigint): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, value));
    await this.write(LAYOUT.control + CONTROL[word], b);
  }

  /**
   * Checks that the shadow is still itself before anything is written to it: its control
   * page is mapped user-writable in its address space (an exited process's page tables
   * are cleared, so a dead shadow fails here), carries its random marker and the pid it
   * wrote, and its code is byte for byte the stub. Throws ShadowLostError (dead) or
   * ShadowTamperedError (changed) otherwise.
   */
  async verify(): Promise<void> {
    await this.lost(() =>
      translateRange(this.mem, this.cr3, this.cr4, this.base + BigInt(LAYOUT.control), 4096, true),
    );
    const ctl = await this.read(LAYOUT.control, 0x100);
    if (ctl.readBigUInt64LE(CONTROL.marker) !== this.marker) {
      throw new ShadowLostError(
        `shadow (pid ${this.pid}) is gone: its control page no longer carries its marker`,
      );
    }
    if (Number(ctl.readBigInt64LE(CONTROL.pid)) !== this.pid) {
      throw new ShadowLostError(`shadow (pid ${this.pid}) is gone: its control page names another pid`);
    }
    const code = await this.read(0, STUB_CODE.length);
    if (!code.equals(STUB_CODE)) {
      let at = 0;
      while (at < code.length && code[at] === STUB_CODE[at]) at++;
      throw new ShadowTamperedError(
        `shadow (pid ${this.pid}) was tampered with: its code differs from the stub at offset 0x${at.toString(16)}`,
      );
    }
  }
}

// Frozen: code loaded into this process (a pack) cannot replace its methods to reach the guest.
Object.freeze(ShadowHandle.prototype);
