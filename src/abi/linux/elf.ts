/**
 * ELF64 little-endian structures as a process's memory holds them (the System V gABI and
 * its x86-64 supplement; <elf.h>, <link.h>): the file header, program headers, notes, the
 * dynamic section and the public head of glibc's `struct link_map`. Pure decoders: every
 * offset and count comes from guest memory, so each is checked against the bytes given and
 * a bad one yields undefined or an empty list, never an exception or a read past the end.
 */

/** `\x7fELF`. */
export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const;
export const ELF64_EHDR_SIZE = 64;
export const ELF64_PHDR_SIZE = 56;
export const PT_LOAD = 1;
export const PT_DYNAMIC = 2;
export const PT_NOTE = 4;
export const PT_PHDR = 6;
export const NT_GNU_BUILD_ID = 3;
export const DT_NULL = 0;
export const DT_DEBUG = 21;
/** struct r_debug { int r_version; struct link_map *r_map; ... }: r_map at 8. */
export const R_DEBUG_R_MAP = 8;
/** struct link_map { l_addr; l_name; l_ld; l_next; l_prev } (<link.h>, the public part). */
export const LINK_MAP_SIZE = 40;
/** Program headers the decoders accept at most (a guest may claim 65535). */
export const MAX_PHDRS = 256;

/** e_type names. */
export const ELF_TYPES: Readonly<Record<number, string>> = {
  0: 'ET_NONE',
  1: 'ET_REL',
  2: 'ET_EXEC',
  3: 'ET_DYN',
  4: 'ET_CORE',
};

/** e_machine names of the common architectures. */
export const ELF_MACHINES: Readonly<Record<number, string>> = {
  3: 'EM_386',
  8: 'EM_MIPS',
  20: 'EM_PPC',
  21: 'EM_PPC64',
  22: 'EM_S390',
  40: 'EM_ARM',
  62: 'EM_X86_64',
  183: 'EM_AARCH64',
  243: 'EM_RISCV',
  247: 'EM_BPF',
};

/** The fields of an ELF file header vmi reports. */
export interface ElfHeader {
  /** EI_CLASS: 1 = 32-bit, 2 = 64-bit. */
  elfClass: number;
  /** EI_DATA: 1 = little-endian, 2 = big-endian. */
  data: number;
  type: number;
  machine: number;
  /** e_entry (a file value: for ET_DYN relative to the load address). */
  entry: bigint;
  phoff: bigint;
  phentsize: number;
  phnum: number;
}

/** True when the bytes start with the ELF magic. */
export function isElfMagic(b: Uint8Array): boolean {
  return b.length >= 4 && ELF_MAGIC.every((v, i) => b[i] === v);
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/**
 * The file header. Undefined unless the magic is there and the header is whole; for a
 * 32-bit or big-endian ELF only class, data, type and machine are meaningful (entry,
 * phoff and phnum are 0: vmi decodes ELF64 little-endian, the x86-64 ABI).
 */
export function parseElfHeader(b: Uint8Array): ElfHeader | undefined {
  if (!isElfMagic(b) || b.length < 20) return undefined;
  const elfClass = b[4];
  const data = b[5];
  const le = data !== 2;
  const dv = view(b);
  const type = dv.getUint16(16, le);
  const machine = dv.getUint16(18, le);
  if (elfClass !== 2 || data !== 1 || b.length < ELF64_EHDR_SIZE) {
    return { elfClass, data, type, machine, entry: 0n, phoff: 0n, phentsize: 0, phnum: 0 };
  }
  return {
    elfClass,
    data,
    type,
    machine,
    entry: dv.getBigUint64(24, true),
    phoff: dv.getBigUint64(32, true),
    phentsize: dv.getUint16(54, true),
    phnum: dv.getUint16(56, true),
  };
}

/** One program header. */
export interface ProgramHeader {
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  filesz: bigint;
  memsz: bigint;
}

/**
 * Program headers from `b`, where `b[0]` is the byte at file offset `base` (the table is
 * at e_phoff). Headers that do not fit in `b` are left out.
 */
export function parseProgramHeaders(b: Uint8Array, hdr: ElfHeader, base = 0n): ProgramHeader[] {
  if (hdr.elfClass !== 2 || hdr.phentsize < ELF64_PHDR_SIZE) return [];
  const out: ProgramHeader[] = [];
  const dv = view(b);
  const start = hdr.phoff - base;
  for (let i = 0; i < Math.min(hdr.phnum, MAX_PHDRS); i++) {
    const off = start + BigInt(i * hdr.phentsize);
    if (off < 0n || off + BigInt(ELF64_PHDR_SIZE) > BigInt(b.length)) break;
    const o = Number(off);
    out.push({
      type: dv.getUint32(o, true),
      flags: dv.getUint32(o + 4, true),
      offset: dv.getBigUint64(o + 8, true),
      vaddr: dv.getBigUint64(o + 16, true),
      filesz: dv.getBigUint64(o + 32, true),
      memsz: dv.getBigUint64(o + 40, true),
    });
  }
  return out;
}

/**
 * The load bias of an image whose file offset 0 is mapped at `mapStart`: mapStart minus
 * the page-aligned vaddr of the PT_LOAD with offset 0 (0 for ET_EXEC, the base for ET_DYN).
 */
export function loadBias(phdrs: readonly ProgramHeader[], mapStart: bigint, pageSize = 4096n): bigint {
  const first =
    phdrs.find((p) => p.type === PT_LOAD && p.offset === 0n) ?? phdrs.find((p) => p.type === PT_LOAD);
  if (!first) return mapStart;
  return mapStart - (first.vaddr & ~(pageSize - 1n));
}

/** One ELF note. */
export interface ElfNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

/** The notes of a PT_NOTE segment's bytes (namesz/descsz/type, each padded to 4). */
export function parseNotes(b: Uint8Array): ElfNote[] {
  const out: ElfNote[] = [];
  const dv = view(b);
  let o = 0;
  const pad = (n: number) => (n + 3) & ~3;
  while (o + 12 <= b.length && out.length < 64) {
    const namesz = dv.getUint32(o, true);
    const descsz = dv.getUint32(o + 4, true);
    const type = dv.getUint32(o + 8, true);
    const nameAt = o + 12;
    const descAt = nameAt + pad(namesz);
    const next = descAt + pad(descsz);
    if (namesz > 256 || descsz > 4096 || descAt + descsz > b.length) break;
    const nameBytes = b.subarray(nameAt, nameAt + namesz);
    const nul = nameBytes.indexOf(0);
    const name = String.fromCharCode(...(nul >= 0 ? nameBytes.subarray(0, nul) : nameBytes));
    out.push({ name, type, desc: b.subarray(descAt, descAt + descsz) });
    o = next;
  }
  return out;
}

/** The GNU build-id of a PT_NOTE segment's bytes, as lowercase hex; undefined when there is none. */
export function gnuBuildId(b: Uint8Array): string | undefined {
  const note = parseNotes(b).find((n) => n.name === 'GNU' && n.type === NT_GNU_BUILD_ID);
  if (!note || note.desc.length === 0) return undefined;
  return [...note.desc].map((x) => x.toString(16).padStart(2, '0')).join('');
}

/** Dynamic-section entries (d_tag, d_val) up to DT_NULL or the end of the bytes. */
export function parseDynamic(b: Uint8Array): { tag: bigint; val: bigint }[] {
  const out: { tag: bigint; val: bigint }[] = [];
  const dv = view(b);
  for (let o = 0; o + 16 <= b.length; o += 16) {
    const tag = dv.getBigInt64(o, true);
    if (tag === BigInt(DT_NULL)) break;
    out.push({ tag, val: dv.getBigUint64(o + 8, true) });
  }
  return out;
}

/** The public head of a `struct link_map`. */
export interface LinkMapEntry {
  /** Difference between the addresses in the ELF file and in memory (the load bias). */
  addr: bigint;
  /** Address of the NUL-terminated path. */
  name: bigint;
  /** Address of the object's dynamic section. */
  ld: bigint;
  next: bigint;
  prev: bigint;
}

/** Decodes a link_map head (40 bytes); undefined when fewer bytes are given. */
export function parseLinkMap(b: Uint8Array): LinkMapEntry | undefined {
  if (b.length < LINK_MAP_SIZE) return undefined;
  const dv = view(b);
  return {
    addr: dv.getBigUint64(0, true),
    name: dv.getBigUint64(8, true),
    ld: dv.getBigUint64(16, true),
    next: dv.getBigUint64(24, true),
    prev: dv.getBigUint64(32, true),
  };
}
