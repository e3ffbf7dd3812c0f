/**
 * Reading QEMU's migration stream (format version 3, QEMU 7.2) without QEMU:
 * - the JSON "vmdesc" QEMU appends at the end describes every device's fields, so the
 *   vCPU state (GPRs, rip, CR0-4, EFER, LSTAR...) can be read out of the `cpu` sections;
 * - a full (non-x-ignore-shared) stream carries guest RAM in the `ram` sections, which
 *   are self-delimiting (every chunk ends with an EOS flag), so raw RAM can be rebuilt.
 * Multi-byte values in the stream are big-endian.
 */
import { open } from 'node:fs/promises';

export class StreamError extends Error {
  override name = 'StreamError';
}

const MAGIC = 0x5145564d; // 'QEVM'
const VERSION = 3;
const SEC = { start: 0x01, part: 0x02, end: 0x03, full: 0x04, subsection: 0x05, vmdesc: 0x06, config: 0x07 };
const FOOTER = 0x7e;
const RAM_FLAG = {
  zero: 0x02,
  memSize: 0x04,
  page: 0x08,
  eos: 0x10,
  continue: 0x20,
  xbzrle: 0x40,
  hook: 0x80,
  compress: 0x100,
  multifdFlush: 0x200,
};
const PAGE = 4096;

/** Registers of one vCPU as the migration stream saved them. */
export interface StreamVcpu {
  index: number;
  /** QEMU's env.regs order: rax rcx rdx rbx rsp rbp rsi rdi r8..r15. */
  regs: bigint[];
  rip: bigint;
  eflags: bigint;
  /** es cs ss ds fs gs: selector and base. */
  segs: { selector: number; base: bigint }[];
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  star: bigint;
  lstar: bigint;
  cstar: bigint;
  fmask: bigint;
  kernelGsBase: bigint;
}

interface VmdescField {
  name: string;
  type: string;
  size: number;
  array_len?: number;
}
interface VmdescDevice {
  name: string;
  instance_id: number;
  version: number;
  fields: VmdescField[];
}

/** The stream header: format version and the machine type from the configuration section. */
export function streamMachineType(head: Buffer): string | undefined {
  if (head.length < 13 || head.readUInt32BE(0) !== MAGIC || head.readUInt32BE(4) !== VERSION) {
    throw new StreamError('not a QEMU migration stream (bad magic or version)');
  }
  if (head[8] !== SEC.config) return undefined;
  const len = head.readUInt32BE(9);
  return head.subarray(13, 13 + len).toString('latin1');
}

/** The JSON device description QEMU appends to the stream. */
export function findVmdesc(stream: Buffer): { devices: VmdescDevice[]; page_size?: number } {
  const i = stream.lastIndexOf('{"page_size"');
  if (i < 5 || stream[i - 5] !== SEC.vmdesc || stream.readUInt32BE(i - 4) !== stream.length - i) {
    throw new StreamError('the stream has no device description (vmdesc) at its end');
  }
  try {
    return JSON.parse(stream.subarray(i).toString('utf8')) as { devices: VmdescDevice[] };
  } catch {
    throw new StreamError('the stream has a malformed device description (vmdesc)');
  }
}

const REG_FIELDS = ['env.eip', 'env.eflags', 'env.cr[0]', 'env.cr[2]', 'env.cr[3]', 'env.cr[4]'];

/** Every vCPU's registers, read from the `cpu` sections with offsets from the vmdesc. */
export function parseVcpus(stream: Buffer): StreamVcpu[] {
  const desc = findVmdesc(stream);
  const cpuDesc = desc.devices.find((d) => d.name === 'cpu');
  if (!cpuDesc) throw new StreamError('the stream has no cpu section');
  const offsets = new Map<string, { offset: number; size: number; count: number }>();
  let off = 0;
  for (const f of cpuDesc.fields) {
    if (!Number.isInteger(f.size)) break; // variable-sized: later fields unknown (not used)
    const count = f.array_len ?? 1;
    offsets.set(f.name, { offset: off, size: f.size, count });
    off += f.size * count;
  }
  const need = (name: string): { offset: number; size: number; count: number } => {
    const o = offsets.get(name);
    if (!o) throw new StreamError(`the cpu section has no field ${name}`);
    return o;
  };
  for (const n of [...REG_FIELDS, 'env.regs', 'env.segs', 'env.efer', 'env.lstar']) need(n);

  const idstr = Buffer.from('cpu');
  const vcpus: StreamVcpu[] = [];
  // Section header: FULL, section id (u32), idstr length + "cpu", instance id, version id.
  for (let p = stream.indexOf(idstr); p >= 0; p = stream.indexOf(idstr, p + 1)) {
    const h = p - 6;
    if (h < 0 || stream[h] !== SEC.full || stream[p - 1] !== 3) continue;
    if (p + 11 > stream.length || stream.readUInt32BE(p + 7) !== cpuDesc.version) continue;
    const index = stream.readUInt32BE(p + 3);
    const data = p + 11;
    if (data + off > stream.length) throw new StreamError('the cpu section is truncated');
    const u64 = (name: string, i = 0): bigint => {
      const o = need(name);
      const at = data + o.offset + i * o.size;
      return o.size === 8 ? stream.readBigUInt64BE(at) : BigInt(stream.readUInt32BE(at));
    };
    const segs = need('env.segs');
    vcpus.push({
      index,
      regs: Array.from({ length: 16 }, (_, i) => u64('env.regs', i)),
      rip: u64('env.eip'),
      eflags: u64('env.eflags'),
      segs: Array.from({ length: 6 }, (_, i) => {
        const at = data + segs.offset + i * segs.size;
        return { selector: stream.readUInt32BE(at), base: stream.readBigUInt64BE(at + 4) };
      }),
      cr0: u64('env.cr[0]'),
      cr2: u64('env.cr[2]'),
      cr3: u64('env.cr[3]'),
      cr4: u64('env.cr[4]'),
      efer: u64('env.efer'),
      star: offsets.has('env.star') ? u64('env.star') : 0n,
      lstar: u64('env.lstar'),
      cstar: offsets.has('env.cstar') ? u64('env.cstar') : 0n,
      fmask: offsets.has('env.fmask') ? u64('env.fmask') : 0n,
      kernelGsBase: offsets.has('env.kernelgsbase') ? u64('env.kernelgsbase') : 0n,
    });
  }
  if (vcpus.length === 0) throw new StreamError('no cpu section found in the stream');
  return vcpus.sort((a, b) => a.index - b.index);
}

/**
 * Rebuilds raw guest RAM (file offset = offset in the RAM block) from a full migration
 * stream: writes the pages of `block` (default: the largest RAM block) into `out`.
 * Reads the stream in one buffer; supports plain, zero and continued pages.
 */
export async function extractRam(
  stream: Buffer,
  out: string,
  block?: string,
): Promise<{ block: string; size: number; pages: number }> {
  machineAndBody(stream);
  let p = 8;
  if (stream[p] === SEC.config) p += 5 + stream.readUInt32BE(p + 1);
  const blocks = new Map<string, number>();
  let ramSection = -1;
  let target: string | undefined = block;
  let current = '';
  let pages = 0;
  const fh = await open(out, 'wx', 0o600);
  try {
    for (;;) {
      if (p >= stream.length) throw new StreamError('the stream ended inside the RAM sections');
      const type = stream[p];
      if (type === SEC.start) {
        const id = stream.readUInt32BE(p + 1);
        const len = stream[p + 5];
        const name = stream.subarray(p + 6, p + 6 + len).toString('latin1');
        p += 6 + len + 8;
        if (name !== 'ram') throw new StreamError(`unsupported iterative section ${name}`);
        ramSection = id;
      } else if (type === SEC.part || type === SEC.end) {
        const id = stream.readUInt32BE(p + 1);
        p += 5;
        if (id !== ramSection) throw new StreamError(`unsupported iterative section id ${id}`);
      } else if (type === SEC.full) {
        break; // device state: RAM is complete
      } else {
        throw new StreamError(`unexpected section type 0x${type.toString(16)} at ${p}`);
      }
      // RAM chunk: records until EOS.
      for (;;) {
        const word = stream.readBigUInt64BE(p);
        p += 8;
        const flags = Number(word & 0xfffn);
        const addr = word & ~0xfffn;
        if (flags & RAM_FLAG.memSize) {
          let left = addr;
          while (left > 0n) {
            const len = stream[p];
            const name = stream.subarray(p + 1, p + 1 + len).toString('latin1');
            const size = stream.readBigUInt64BE(p + 1 + len);
            p += 1 + len + 8;
            blocks.set(name, Number(size));
            left -= size;
          }
          if (!target) target = [...blocks.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
        } else if (flags & (RAM_FLAG.zero | RAM_FLAG.page)) {
          if (!(flags & RAM_FLAG.continue)) {
            const len = stream[p];
            current = stream.subarray(p + 1, p + 1 + len).toString('latin1');
            p += 1 + len;
          }
          const mine = current === target;
          if (flags & RAM_FLAG.zero) {
            const fill = stream[p];
            p += 1;
            if (mine && fill !== 0) {
              await fh.write(Buffer.alloc(PAGE, fill), 0, PAGE, Number(addr));
              pages++;
            }
          } else {
            if (mine) {
              await fh.write(stream, p, PAGE, Number(addr));
              pages++;
            }
            p += PAGE;
          }
        } else if (flags & RAM_FLAG.eos) {
          break;
        } else if (flags & (RAM_FLAG.xbzrle | RAM_FLAG.hook | RAM_FLAG.compress)) {
          throw new StreamError(`unsupported RAM encoding (flags 0x${flags.toString(16)})`);
        } else if (flags & RAM_FLAG.multifdFlush) {
          // nothing to do
        } else {
          throw new StreamError(`unknown RAM record flags 0x${flags.toString(16)} at ${p - 8}`);
        }
      }
      if (stream[p] === FOOTER) p += 5;
    }
    if (!target || !blocks.has(target)) throw new StreamError('the stream has no RAM block');
    await fh.truncate(blocks.get(target)!);
    await fh.sync();
    return { block: target, size: blocks.get(target)!, pages };
  } finally {
    await fh.close();
  }
}

function machineAndBody(stream: Buffer): void {
  streamMachineType(stream.subarray(0, 256));
}
