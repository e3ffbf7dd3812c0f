/**
 * QEMU 7.2's x86-64 `g`/`G` register block (qemu-system-x86_64, no target.xml needed).
 *
 * Layout of the `g` reply (608 bytes, little-endian), measured on QEMU 7.2 (reset state and
 * `info registers`): the control registers come right after the segment bases, *before*
 * the x87/SSE block (target/i386/gdbstub.c: IDX_CTL_REGS precedes IDX_FP_REGS).
 *   0    rax rbx rcx rdx rsi rdi rbp rsp r8..r15   16 × 8
 *   128  rip 8, 136 eflags 4
 *   140  cs ss ds es fs gs                        6 × 4
 *   164  fs_base gs_base k_gs_base                3 × 8
 *   188  cr0 cr2 cr3 cr4 cr8 efer                 6 × 8
 *   236  st0..st7                                 8 × 10
 *   316  fctrl fstat ftag fiseg fioff foseg fooff fop  8 × 4
 *   348  xmm0..xmm15                              16 × 16
 *   604  mxcsr 4
 *   608  end
 *
 * QEMU *reads* the block with 8-byte bases/control registers whatever the CPU mode, but on
 * `G` it *parses* fs_base, gs_base, k_gs_base and cr0..efer as 4 bytes each unless the CPU
 * is in 64-bit code (CS.L with EFER.LMA), and it drops the upper halves of the GPRs and
 * r8..r15 entirely. Use `encodeForG(regs, { cs64: false })` in real/protected/compat mode.
 */

export const X86_64_G_SIZE = 608;

export interface X86Regs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rbp: bigint;
  rsp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  eflags: number;
  cs: number;
  ss: number;
  ds: number;
  es: number;
  fs: number;
  gs: number;
  fsBase: bigint;
  gsBase: bigint;
  kernelGsBase: bigint;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  /** The full `g` block as read; x87/SSE state and anything unnamed round-trip from here. */
  raw: Buffer;
}

export type X86RegName = Exclude<keyof X86Regs, 'raw'>;

type Field = { name: X86RegName; offset: number; size: 4 | 8 };

export const GPR_NAMES = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rbp',
  'rsp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
] as const;

const SEG_NAMES = ['cs', 'ss', 'ds', 'es', 'fs', 'gs'] as const;
const CTL_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer'] as const;

export const OFFSETS = {
  rip: 128,
  eflags: 136,
  segs: 140,
  fsBase: 164,
  gsBase: 172,
  kernelGsBase: 180,
  cr0: 188,
  st0: 236,
  fctrl: 316,
  xmm0: 348,
  mxcsr: 604,
  end: 608,
} as const;

export const X86_FIELDS: readonly Field[] = [
  ...GPR_NAMES.map((name, i): Field => ({ name, offset: i * 8, size: 8 })),
  { name: 'rip', offset: OFFSETS.rip, size: 8 },
  { name: 'eflags', offset: OFFSETS.eflags, size: 4 },
  ...SEG_NAMES.map((name, i): Field => ({ name, offset: OFFSETS.segs + i * 4, size: 4 })),
  { name: 'fsBase', offset: OFFSETS.fsBase, size: 8 },
  { name: 'gsBase', offset: OFFSETS.gsBase, size: 8 },
  { name: 'kernelGsBase', offset: OFFSETS.kernelGsBase, size: 8 },
  ...CTL_NAMES.map((name, i): Field => ({ name, offset: OFFSETS.cr0 + i * 8, size: 8 })),
];

/** Decode a `g` block. Throws if it is shorter than the 608-byte x86-64 layout. */
export function decodeX86Regs(raw: Buffer): X86Regs {
  if (raw.length < X86_64_G_SIZE) {
    throw new Error(`x86-64 register block too short: ${raw.length} bytes, expected ${X86_64_G_SIZE}`);
  }
  const out: Record<string, unknown> = { raw: Buffer.from(raw) };
  for (const f of X86_FIELDS) {
    out[f.name] = f.size === 8 ? raw.readBigUInt64LE(f.offset) : raw.readUInt32LE(f.offset);
  }
  return out as unknown as X86Regs;
}

/** Encode back to the `g` layout: the raw block with every named field written over it. */
export function encodeX86Regs(regs: X86Regs): Buffer {
  const buf = Buffer.alloc(Math.max(X86_64_G_SIZE, regs.raw?.length ?? 0));
  regs.raw?.copy(buf);
  for (const f of X86_FIELDS) {
    const v = regs[f.name];
    if (f.size === 8) buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), f.offset);
    else buf.writeUInt32LE(Number(v) >>> 0, f.offset);
  }
  return buf;
}

/**
 * Bytes to send with `G`. In 64-bit mode (`cs64: true`) this is the `g` layout. Otherwise QEMU
 * 7.2 parses the three segment bases and the six control registers as 4 bytes each, so the
 * block is repacked accordingly (upper halves are lost, as QEMU would drop them anyway).
 */
export function encodeForG(regs: X86Regs | Buffer, opts: { cs64: boolean }): Buffer {
  const g = Buffer.isBuffer(regs) ? regs : encodeX86Regs(regs);
  if (opts.cs64) return g;
  const parts: Buffer[] = [g.subarray(0, OFFSETS.fsBase)];
  // 3 segment bases then 6 control registers, 8 bytes each in `g`, 4 bytes each for `G`
  for (let i = 0; i < 9; i++) parts.push(g.subarray(OFFSETS.fsBase + i * 8, OFFSETS.fsBase + i * 8 + 4));
  parts.push(g.subarray(OFFSETS.st0));
  return Buffer.concat(parts);
}

/** Current privilege level (CS selector RPL, which equals CPL for a code segment). */
export function cpl(regs: Pick<X86Regs, 'cs'>): number {
  return regs.cs & 3;
}

/** EFER.LMA (long mode active). */
export function longModeActive(regs: Pick<X86Regs, 'efer'>): boolean {
  return (regs.efer & (1n << 10n)) !== 0n;
}

/** Copy with some fields changed (raw is kept, encode applies the changes). */
export function withRegs(regs: X86Regs, changes: Partial<Omit<X86Regs, 'raw'>>): X86Regs {
  return { ...regs, ...changes };
}
