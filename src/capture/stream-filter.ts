/**
 * A QEMU migration stream (format version 3, QEMU 7.2, migration/savevm.c and
 * migration/ram.c) with the pages of one RAM block taken out on the fly: what is left is
 * the device and vCPU state plus the other RAM blocks (firmware, option ROMs, ACPI
 * tables), i.e. the stream an x-ignore-shared migration writes when that block is shared.
 * A capture that read the block's bytes some other way (QEMU's process memory) keeps this
 * as its devstate.bin; a replay loads it with x-ignore-shared over its own copy of ram.raw.
 *
 * Stream layout parsed here (multi-byte values big-endian):
 *   'QEVM' u32 version=3
 *   [0x07 configuration: u32 len, name; subsections 0x05 u8 len, name, u32 version, fields]
 *   iterable sections: 0x01 START  u32 id, u8 len, idstr, u32 instance, u32 version, body
 *                      0x02 PART / 0x03 END  u32 id, body
 *                      each optionally followed by the footer 0x7e u32 id
 *   then 0x04 FULL device sections, 0x1f EOF, 0x06 vmdesc JSON: copied verbatim.
 * A RAM body (ram_load_precopy) is records `u64 addr|flags` up to EOS:
 *   MEM_SIZE: total; per block u8 len, idstr, u64 used_length [, u64 mr addr with
 *             x-ignore-shared]
 *   PAGE / ZERO: [u8 len, idstr unless CONTINUE]; 4096 bytes / 1 fill byte
 * Only the RAM section may be iterable (no block migration, dirty bitmaps, postcopy);
 * anything else is a StreamError and the caller falls back to the full stream.
 *
 * Guest data is untrusted only in the page bytes, which are not interpreted; lengths come
 * from QEMU. Every read is still bounded: a truncated or malformed stream is an error.
 */
import { closeSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { StreamError } from './migration-stream.js';

const MAGIC = 0x5145564d; // 'QEVM'
const SEC = { start: 0x01, part: 0x02, end: 0x03, full: 0x04, subsection: 0x05, config: 0x07 };
const FOOTER = 0x7e;
const FLAG = {
  zero: 0x02,
  memSize: 0x04,
  page: 0x08,
  eos: 0x10,
  continue: 0x20,
  multifdFlush: 0x200,
};
export const STREAM_PAGE = 4096;

/** Thrown inside the parser when the buffered bytes end mid-unit: wait for more. */
class NeedMore extends Error {}

class Cursor {
  constructor(
    readonly buf: Buffer,
    public pos: number,
  ) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new NeedMore();
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  peek(): number {
    this.need(1);
    return this.buf[this.pos];
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  str(): string {
    return this.bytes(this.u8()).toString('latin1');
  }
}

export interface RamFilterOptions {
  /** The RAM block whose pages are dropped (e.g. `pc.ram`). */
  block: string;
  /** Its size in bytes (each of its pages must come by at least once). */
  blockBytes: number;
  /** x-ignore-shared was on at the source: MEM_SIZE entries carry the region address. */
  ignoreShared: boolean;
  /** Keep the last copy of every page whose index is a multiple of this (cross-check); 0: none. */
  sampleEvery?: number;
  /**
   * Name the block gets in the output's RAM list (MEM_SIZE): the replay clone's RAM
   * backend id, which QEMU matches by name (`Unknown ramblock` otherwise).
   */
  renameTo?: string;
  /** Sees every page record of the block as it goes by: its offset and 4096 bytes (zero pages: undefined). */
  onPage?: (offset: number, data: Buffer | undefined) => void;
}

export interface RamFilterResult {
  /** Page records of the block seen (a page sent twice counts twice). */
  pages: number;
  /** Distinct pages of the block seen. */
  covered: number;
  /** Bytes of the block's page data left out of the output. */
  droppedBytes: number;
  /** Sampled pages: block offset → last content (undefined: a zero page). */
  samples: Map<number, Buffer | undefined>;
  /** Per page of the block: 1 when its last copy in the stream was not all zeros. */
  nonZero: Uint8Array;
}

type State = 'header' | 'section' | 'ram' | 'footer' | 'tail';

/**
 * Push-based filter: `push(chunk)` returns the bytes to keep (in order), `end()` checks
 * that the stream was complete. Holds at most one record (≤ 4 KiB + a header) between
 * pushes, never the dropped pages.
 */
export class RamStreamFilter {
  private state: State = 'header';
  private pending: Buffer = Buffer.alloc(0);
  private ramSection = -1;
  /** Block of the last page record in the source stream (what CONTINUE refers to). */
  private lastBlock = '';
  /** Block of the last page record kept. */
  private lastKept = '';
  private sectionId = -1;
  private blockSize: number | undefined;
  private readonly seen: Uint8Array;
  private readonly res: RamFilterResult;
  private sawTail = false;

  constructor(private readonly opts: RamFilterOptions) {
    if (!Number.isSafeInteger(opts.blockBytes) || opts.blockBytes <= 0 || opts.blockBytes % STREAM_PAGE)
      throw new RangeError(`RAM block size ${opts.blockBytes} is not a positive multiple of ${STREAM_PAGE}`);
    this.seen = new Uint8Array(opts.blockBytes / STREAM_PAGE);
    this.res = {
      pages: 0,
      covered: 0,
      droppedBytes: 0,
      samples: new Map(),
      nonZero: new Uint8Array(opts.blockBytes / STREAM_PAGE),
    };
  }

  push(chunk: Buffer): Buffer[] {
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    if (this.state === 'tail') {
      this.pending = Buffer.alloc(0);
      return [buf];
    }
    const out: Buffer[] = [];
    let keepFrom = 0;
    const c = new Cursor(buf, 0);
    try {
      while (c.pos < buf.length) {
        const at = c.pos;
        if (this.inTail()) {
          c.pos = buf.length;
          break;
        }
        const r = this.step(c);
        if (r !== false) {
          // [at, c.pos) is a page of the block (skipped) or a record rewritten (replaced).
          if (at > keepFrom) out.push(buf.subarray(keepFrom, at));
          if (r !== true) out.push(r);
          keepFrom = c.pos;
        }
      }
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
    }
    // c.pos stops at the start of an incomplete unit (step() rewinds on NeedMore).
    if (c.pos > keepFrom) out.push(buf.subarray(keepFrom, c.pos));
    this.pending = Buffer.from(buf.subarray(c.pos));
    return out;
  }

  private inTail(): boolean {
    return this.state === 'tail';
  }

  /** @throws StreamError when the stream stopped before its device state */
  end(): RamFilterResult {
    if (this.state !== 'tail' || !this.sawTail)
      throw new StreamError(`the migration stream ended early (in ${this.state})`);
    if (this.blockSize === undefined) throw new StreamError(`the stream has no RAM block ${this.opts.block}`);
    return this.res;
  }

  /**
   * Parses one unit at c.pos: false to keep it, true to drop it (a page of the block), or
   * the bytes that replace it. Rewinds on NeedMore.
   */
  private step(c: Cursor): boolean | Buffer {
    const start = c.pos;
    try {
      switch (this.state) {
        case 'header':
          this.header(c);
          this.state = 'section';
          return false;
        case 'section':
          this.section(c);
          return false;
        case 'ram':
          return this.record(c);
        case 'footer':
          if (c.peek() === FOOTER) {
            c.u8();
            const id = c.u32();
            if (id !== this.sectionId)
              throw new StreamError(`section footer for ${id}, expected ${this.sectionId}`);
          }
          this.state = 'section';
          return false;
        default:
          return false;
      }
    } catch (e) {
      if (e instanceof NeedMore) c.pos = start;
      throw e;
    }
  }

  private header(c: Cursor): void {
    if (c.u32() !== MAGIC) throw new StreamError('not a QEMU migration stream (bad magic)');
    const v = c.u32();
    if (v !== 3) throw new StreamError(`migration stream version ${v}, expected 3`);
    if (c.peek() !== SEC.config) return;
    c.u8();
    c.bytes(c.u32()); // machine type
    // vmstate_configuration's subsections (savevm.c): known ones only.
    while (c.peek() === SEC.subsection) {
      c.u8();
      const name = c.str();
      c.u32(); // version
      if (name === 'configuration/target-page-bits') {
        const bits = c.u32();
        if (bits !== 12) throw new StreamError(`target page bits ${bits}: only 4 KiB pages are supported`);
      } else if (name === 'configuration/capabilities') {
        const n = c.u32();
        if (n > 64) throw new StreamError(`configuration lists ${n} capabilities`);
        for (let i = 0; i < n; i++) c.str();
      } else if (name === 'configuration/uuid') {
        c.bytes(16);
      } else {
        throw new StreamError(`unknown configuration subsection ${name}`);
      }
    }
  }

  private section(c: Cursor): void {
    const type = c.u8();
    if (type === SEC.start) {
      const id = c.u32();
      const name = c.str();
      c.u32(); // instance
      c.u32(); // version
      if (name !== 'ram') throw new StreamError(`unsupported iterative section ${name}`);
      this.ramSection = id;
      this.sectionId = id;
      this.state = 'ram';
    } else if (type === SEC.part || type === SEC.end) {
      const id = c.u32();
      if (id !== this.ramSection) throw new StreamError(`unsupported iterative section id ${id}`);
      this.sectionId = id;
      this.state = 'ram';
    } else if (type === SEC.full) {
      // Device state from here on: kept verbatim (this byte included).
      c.pos--;
      this.state = 'tail';
      this.sawTail = true;
    } else {
      throw new StreamError(`unexpected section type 0x${type.toString(16)} before the device state`);
    }
  }

  /** One RAM record: false (keep), true (a page of the block: drop) or its replacement. */
  private record(c: Cursor): boolean | Buffer {
    const word = c.u64();
    const flags = Number(word & 0xfffn);
    const addr = word & ~0xfffn;
    switch (flags & ~FLAG.continue) {
      case FLAG.memSize: {
        let left = addr;
        let n = 0;
        const parts: Buffer[] = [c.buf.subarray(c.pos - 8, c.pos)];
        while (left > 0n) {
          if (++n > 4096) throw new StreamError('too many RAM blocks in the stream');
          const from = c.pos;
          const name = c.str();
          const size = c.u64();
          if (this.opts.ignoreShared) c.u64();
          if (size > left) throw new StreamError(`RAM block ${name} is larger than the RAM total`);
          if (name === this.opts.block) {
            if (size !== BigInt(this.opts.blockBytes))
              throw new StreamError(`RAM block ${name} is ${size} bytes, expected ${this.opts.blockBytes}`);
            this.blockSize = Number(size);
          }
          const to = this.opts.renameTo;
          if (name === this.opts.block && to !== undefined) {
            const id = Buffer.from(to, 'latin1');
            if (id.length === 0 || id.length > 255) throw new RangeError(`bad RAM block name ${to}`);
            parts.push(Buffer.from([id.length]), id, c.buf.subarray(from + 1 + name.length, c.pos));
          } else {
            parts.push(c.buf.subarray(from, c.pos));
          }
          left -= size;
        }
        return this.opts.renameTo === undefined ? false : Buffer.concat(parts);
      }
      case FLAG.zero:
      case FLAG.page: {
        let block = this.lastBlock;
        if (!(flags & FLAG.continue)) block = c.str();
        else if (!block) throw new StreamError('a continued RAM page with no block before it');
        const zero = (flags & ~FLAG.continue) === FLAG.zero;
        const data = zero ? c.bytes(1) : c.bytes(STREAM_PAGE);
        this.lastBlock = block;
        if (block !== this.opts.block) {
          // CONTINUE on a kept record means "the block of the record before it": only
          // records of the dropped block ever come between two kept ones in another block.
          if (flags & FLAG.continue && this.lastKept !== block)
            throw new StreamError(`a continued page of ${block} follows a page of another block`);
          this.lastKept = block;
          return false;
        }
        const off = Number(addr);
        if (off + STREAM_PAGE > this.opts.blockBytes)
          throw new StreamError(`page at 0x${off.toString(16)} is outside RAM block ${block}`);
        const idx = off / STREAM_PAGE;
        this.res.pages++;
        if (!this.seen[idx]) {
          this.seen[idx] = 1;
          this.res.covered++;
        }
        if (!zero) this.res.droppedBytes += STREAM_PAGE;
        this.res.nonZero[idx] = zero && data[0] === 0 ? 0 : 1;
        if (this.opts.onPage)
          this.opts.onPage(
            off,
            zero ? (data[0] === 0 ? undefined : Buffer.alloc(STREAM_PAGE, data[0])) : data,
          );
        const every = this.opts.sampleEvery ?? 0;
        if (every > 0 && idx % every === 0) {
          const filled = zero && data[0] !== 0 ? Buffer.alloc(STREAM_PAGE, data[0]) : undefined;
          this.res.samples.set(off, zero ? filled : Buffer.from(data));
        }
        return true;
      }
      case FLAG.eos:
        this.state = 'footer';
        return false;
      case FLAG.multifdFlush:
        return false;
      default:
        throw new StreamError(`unsupported RAM record (flags 0x${flags.toString(16)})`);
    }
  }
}

/**
 * Splits a complete migration stream file (x-ignore-shared on at the source, so its RAM
 * list carries region addresses) in two: `devOut`, the stream without the pages of
 * `opts.block` (renamed as `opts.renameTo`), and `ramOut`, that block as raw RAM (sparse:
 * zero pages are holes; a page sent twice keeps its last copy). Streams the input.
 * @throws StreamError when the stream is not one this filter reads
 */
export function splitStreamFile(
  src: string,
  devOut: string,
  ramOut: string,
  opts: Omit<RamFilterOptions, 'onPage' | 'ignoreShared'>,
): RamFilterResult {
  const fds: number[] = [];
  const openFd = (p: string, f: string, m?: number): number => {
    const fd = openSync(p, f, m);
    fds.push(fd);
    return fd;
  };
  try {
    const inFd = openFd(src, 'r');
    const devFd = openFd(devOut, 'wx', 0o600);
    const ramFd = openFd(ramOut, 'wx', 0o600);
    const zero = Buffer.alloc(STREAM_PAGE);
    const writeAll = (fd: number, b: Buffer, pos: number | null): void => {
      for (let done = 0; done < b.length;)
        done += writeSync(fd, b, done, b.length - done, pos === null ? null : pos + done);
    };
    const written = new Uint8Array(opts.blockBytes / STREAM_PAGE);
    const filter = new RamStreamFilter({
      ...opts,
      ignoreShared: true,
      onPage: (off, data) => {
        const i = off / STREAM_PAGE;
        // Zero pages stay holes, unless an earlier copy of the page wrote data there.
        if (!data && !written[i]) return;
        writeAll(ramFd, data ?? zero, off);
        written[i] = data ? 1 : 0;
      },
    });
    const buf = Buffer.alloc(4 << 20);
    for (let pos = 0; ;) {
      const n = readSync(inFd, buf, 0, buf.length, pos);
      if (n === 0) break;
      pos += n;
      for (const b of filter.push(buf.subarray(0, n))) writeAll(devFd, b, null);
    }
    const res = filter.end();
    ftruncateSync(ramFd, opts.blockBytes);
    return res;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
