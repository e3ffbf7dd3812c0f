import { describe, expect, it } from 'vitest';
import {
  OFFSETS,
  X86_64_G_SIZE,
  X86_FIELDS,
  cpl,
  decodeX86Regs,
  encodeForG,
  encodeX86Regs,
  longModeActive,
} from '../../src/qemu/x86-regs.js';

function sample(): Buffer {
  const b = Buffer.alloc(X86_64_G_SIZE);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

describe('x86-64 g layout (QEMU 7.2)', () => {
  it('has the measured offsets and no overlapping fields', () => {
    expect(OFFSETS.cr0).toBe(188);
    expect(OFFSETS.st0).toBe(236);
    expect(OFFSETS.mxcsr).toBe(604);
    const used = new Set<number>();
    for (const f of X86_FIELDS) {
      for (let i = f.offset; i < f.offset + f.size; i++) {
        expect(used.has(i)).toBe(false);
        used.add(i);
      }
    }
    expect(used.size).toBe(16 * 8 + 8 + 4 + 6 * 4 + 3 * 8 + 6 * 8);
  });

  it('decodes a reset-state block', () => {
    const b = Buffer.alloc(X86_64_G_SIZE);
    b.writeBigUInt64LE(0x60fb1n, 3 * 8); // rdx
    b.writeBigUInt64LE(0xfff0n, 128);
    b.writeUInt32LE(2, 136);
    b.writeUInt32LE(0xf000, 140);
    b.writeBigUInt64LE(0x60000010n, 188);
    b.writeUInt32LE(0x37f, 316);
    b.writeUInt32LE(0x1f80, 604);
    const r = decodeX86Regs(b);
    expect(r).toMatchObject({
      rdx: 0x60fb1n,
      rip: 0xfff0n,
      eflags: 2,
      cs: 0xf000,
      cr0: 0x60000010n,
      efer: 0n,
    });
    expect(cpl(r)).toBe(0);
    expect(longModeActive(r)).toBe(false);
  });

  it('round-trips exactly and applies changes', () => {
    const raw = sample();
    const r = decodeX86Regs(raw);
    expect(encodeX86Regs(r).equals(raw)).toBe(true);
    const changed = encodeX86Regs({ ...r, rax: 0xdeadbeefcafef00dn, cs: 0x33, cr3: 0x1234000n, r15: -1n });
    const r2 = decodeX86Regs(changed);
    expect(r2.rax).toBe(0xdeadbeefcafef00dn);
    expect(r2.r15).toBe(0xffffffffffffffffn);
    expect(r2.cs).toBe(0x33);
    expect(cpl(r2)).toBe(3);
    expect(r2.cr3).toBe(0x1234000n);
    expect(changed.subarray(OFFSETS.st0).equals(raw.subarray(OFFSETS.st0))).toBe(true);
    expect(() => decodeX86Regs(Buffer.alloc(100))).toThrow(/too short/);
  });

  it('repacks for G outside 64-bit code (4-byte bases and control registers)', () => {
    const raw = sample();
    const r = decodeX86Regs(raw);
    expect(encodeForG(r, { cs64: true }).equals(raw)).toBe(true);
    const g = encodeForG(raw, { cs64: false });
    expect(g.length).toBe(X86_64_G_SIZE - 9 * 4);
    expect(g.subarray(0, 164).equals(raw.subarray(0, 164))).toBe(true);
    expect(g.readUInt32LE(164)).toBe(raw.readUInt32LE(164)); // fs_base low
    expect(g.readUInt32LE(164 + 3 * 4)).toBe(raw.readUInt32LE(188)); // cr0 low
    expect(g.subarray(164 + 36).equals(raw.subarray(236))).toBe(true);
  });
});
