/**
 * A small ELF64 core writer and reader for physical-memory dumps (the layout
 * memory-forensics tools expect from `dump-guest-memory`): ET_CORE, EM_X86_64, one
 * PT_NOTE holding an NT_PRSTATUS per vCPU, and one PT_LOAD per guest-physical RAM range
 * (p_paddr = p_vaddr = guest-physical address).
 */
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { fileRamReader, type RamReader } from './compression.js';
import type { VcpuRecord } from './manifest.js';
import { isZero } from './sparse.js';

export const ET_CORE = 4;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const NT_PRSTATUS = 1;
const EHDR = 64;
const PHDR = 56;
/** sizeof(struct elf_prstatus) on x86-64. */
export const PRSTATUS_SIZE = 336;
const PR_REG_OFFSET = 112;
/** user_regs_struct order (elf_gregset_t). */
export const PR_REG_NAMES = [
  'r15',
  'r14',
  'r13',
  'r12',
  'rbp',
  'rbx',
  'r11',
  'r10',
  'r9',
  'r8',
  'rax',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'orig_rax',
  'rip',
  'cs',
  'eflags',
  'rsp',
  'ss',
  'fs_base',
  'gs_base',
  'ds',
  'es',
  'fs',
  'gs',
] as const;

export interface RamRange {
  /** Guest-physical address. */
  paddr: bigint;
  size: bigint;
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

function regValue(v: VcpuRecord, name: (typeof PR_REG_NAMES)[number]): bigint {
  switch (name) {
    case 'orig_rax':
      return 0xffff_ffff_ffff_ffffn; // -1: not in a syscall restart
    case 'fs_base':
      return BigInt(v.fsBase);
    case 'gs_base':
      return BigInt(v.gsBase);
    case 'cs':
    case 'ss':
    case 'ds':
    case 'es':
    case 'fs':
    case 'gs':
      return BigInt(v[name]);
    default:
      return BigInt(v[name]);
  }
}

export function prstatus(v: VcpuRecord): Buffer {
  const b = Buffer.alloc(PRSTATUS_SIZE);
  b.writeInt32LE(v.index + 1, 32); // pr_pid: vCPU number + 1, as QEMU writes it
  PR_REG_NAMES.forEach((n, i) =>
    b.writeBigUInt64LE(BigInt.asUintN(64, regValue(v, n)), PR_REG_OFFSET + i * 8),
  );
  return b;
}

function note(name: string, type: number, desc: Buffer): Buffer {
  const nameBuf = Buffer.from(name + '\0', 'latin1');
  const h = Buffer.alloc(12);
  h.writeUInt32LE(nameBuf.length, 0);
  h.writeUInt32LE(desc.length, 4);
  h.writeUInt32LE(type, 8);
  const n = Buffer.alloc(align(nameBuf.length, 4));
  nameBuf.copy(n);
  const d = Buffer.alloc(align(desc.length, 4));
  desc.copy(d);
  return Buffer.concat([h, n, d]);
}

/** ELF header, program headers and notes; RAM ranges follow at their p_offset. */
export function buildCoreHeader(
  vcpus: readonly VcpuRecord[],
  ranges: readonly RamRange[],
): { header: Buffer; offsets: number[] } {
  const notes = Buffer.concat(vcpus.map((v) => note('CORE', NT_PRSTATUS, prstatus(v))));
  const phnum = 1 + ranges.length;
  const notesOff = EHDR + PHDR * phnum;
  let dataOff = align(notesOff + notes.length, 4096);
  const header = Buffer.alloc(dataOff);
  // e_ident
  header.write('\x7fELF', 0, 'latin1');
  header[4] = 2; // ELFCLASS64
  header[5] = 1; // little-endian
  header[6] = 1; // EV_CURRENT
  header[7] = 0; // SYSV ABI
  header.writeUInt16LE(ET_CORE, 16);
  header.writeUInt16LE(EM_X86_64, 18);
  header.writeUInt32LE(1, 20);
  header.writeBigUInt64LE(0n, 24); // e_entry
  header.writeBigUInt64LE(BigInt(EHDR), 32); // e_phoff
  header.writeBigUInt64LE(0n, 40); // e_shoff
  header.writeUInt32LE(0, 48); // e_flags
  header.writeUInt16LE(EHDR, 52);
  header.writeUInt16LE(PHDR, 54);
  header.writeUInt16LE(phnum, 56);
  header.writeUInt16LE(64, 58); // e_shentsize
  header.writeUInt16LE(0, 60);
  header.writeUInt16LE(0, 62);
  const ph = (
    i: number,
    type: number,
    flags: number,
    off: number,
    addr: bigint,
    size: bigint,
    alignTo: bigint,
  ): void => {
    const o = EHDR + i * PHDR;
    header.writeUInt32LE(type, o);
    header.writeUInt32LE(flags, o + 4);
    header.writeBigUInt64LE(BigInt(off), o + 8);
    header.writeBigUInt64LE(addr, o + 16); // p_vaddr
    header.writeBigUInt64LE(addr, o + 24); // p_paddr
    header.writeBigUInt64LE(size, o + 32); // p_filesz
    header.writeBigUInt64LE(size, o + 40); // p_memsz
    header.writeBigUInt64LE(alignTo, o + 48);
  };
  ph(0, PT_NOTE, 0, notesOff, 0n, BigInt(notes.length), 4n);
  notes.copy(header, notesOff);
  const offsets: number[] = [];
  ranges.forEach((r, i) => {
    ph(1 + i, PT_LOAD, 7, dataOff, r.paddr, r.size, 4096n);
    offsets.push(dataOff);
    dataOff += Number(r.size);
  });
  return { header, offsets };
}

/**
 * Copies `size` bytes from `from` in the source to `to` in `dst` for each piece (in
 * increasing `from` order: a RamReader may be forward-only). All-zero 1 MiB chunks are not
 * written, so a mostly untouched 8 GiB guest makes a sparse file of what it touched.
 */
export async function copyRanges(
  src: RamReader,
  dst: FileHandle,
  pieces: readonly { from: number; to: number; size: number }[],
): Promise<void> {
  const buf = Buffer.allocUnsafe(1024 * 1024);
  for (const p of pieces) {
    for (let done = 0; done < p.size;) {
      const n = Math.min(buf.length, p.size - done);
      await src.read(buf, n, p.from + done);
      if (!isZero(buf, n)) await dst.write(buf, 0, n, p.to + done);
      done += n;
    }
  }
}

/**
 * Writes an ELF core from a raw RAM file (offset = guest-physical address for each range's
 * `fileOffset`), or from a RamReader (e.g. decompressing ram.raw.gz; ranges in increasing
 * `fileOffset` order; closed here), atomically: OUT.partial-<pid> then rename.
 */
export async function writeElfCore(
  out: string,
  ramFile: string | RamReader,
  vcpus: readonly VcpuRecord[],
  ranges: readonly (RamRange & { fileOffset: number })[],
): Promise<number> {
  const tmp = `${out}.partial-${process.pid}`;
  const { header, offsets } = buildCoreHeader(vcpus, ranges);
  const src = typeof ramFile === 'string' ? await fileRamReader(ramFile) : ramFile;
  try {
    const dst = await open(tmp, 'wx', 0o600);
    try {
      await dst.write(header, 0, header.length, 0);
      await copyRanges(
        src,
        dst,
        ranges.map((r, i) => ({ from: r.fileOffset, to: offsets[i], size: Number(r.size) })),
      );
      const total = header.length + ranges.reduce((a, r) => a + Number(r.size), 0);
      // Trailing zero RAM was skipped: the size comes from truncate (the tail stays a hole).
      await dst.truncate(total);
      await dst.sync();
    } finally {
      await dst.close();
    }
    await rename(tmp, out);
    return header.length + ranges.reduce((a, r) => a + Number(r.size), 0);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await src.close();
  }
}

export interface ParsedCore {
  type: number;
  machine: number;
  phdrs: {
    type: number;
    flags: number;
    offset: bigint;
    vaddr: bigint;
    paddr: bigint;
    filesz: bigint;
    memsz: bigint;
  }[];
  notes: { name: string; type: number; desc: Buffer }[];
  /** pr_reg of each NT_PRSTATUS note, by register name. */
  prstatus: Record<string, bigint>[];
}

/** Parses an ELF64 little-endian core's headers and notes (enough of it to check ours). */
export function parseElfCore(buf: Buffer): ParsedCore {
  if (buf.length < EHDR || buf.toString('latin1', 0, 4) !== '\x7fELF') throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('not ELF64 little-endian');
  const type = buf.readUInt16LE(16);
  const machine = buf.readUInt16LE(18);
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  const phdrs: ParsedCore['phdrs'] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    phdrs.push({
      type: buf.readUInt32LE(o),
      flags: buf.readUInt32LE(o + 4),
      offset: buf.readBigUInt64LE(o + 8),
      vaddr: buf.readBigUInt64LE(o + 16),
      paddr: buf.readBigUInt64LE(o + 24),
      filesz: buf.readBigUInt64LE(o + 32),
      memsz: buf.readBigUInt64LE(o + 40),
    });
  }
  const notes: ParsedCore['notes'] = [];
  for (const p of phdrs.filter((h) => h.type === PT_NOTE)) {
    let o = Number(p.offset);
    const end = o + Number(p.filesz);
    while (o + 12 <= end) {
      const namesz = buf.readUInt32LE(o);
      const descsz = buf.readUInt32LE(o + 4);
      const t = buf.readUInt32LE(o + 8);
      const name = buf.toString('latin1', o + 12, o + 12 + namesz).replace(/\0+$/, '');
      const d = o + 12 + align(namesz, 4);
      notes.push({ name, type: t, desc: buf.subarray(d, d + descsz) });
      o = d + align(descsz, 4);
    }
  }
  const prstatus = notes
    .filter((n) => n.name === 'CORE' && n.type === NT_PRSTATUS && n.desc.length >= PRSTATUS_SIZE)
    .map((n) =>
      Object.fromEntries(PR_REG_NAMES.map((r, i) => [r, n.desc.readBigUInt64LE(PR_REG_OFFSET + i * 8)])),
    );
  return { type, machine, phdrs, notes, prstatus };
}
