import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  EM_X86_64,
  ET_CORE,
  NT_PRSTATUS,
  parseElfCore,
  PR_REG_NAMES,
  PRSTATUS_SIZE,
  PT_LOAD,
  PT_NOTE,
  writeElfCore,
} from '../../src/capture/elf-core.js';
import type { VcpuRecord } from '../../src/capture/manifest.js';

const dir = mkdtempSync(join(tmpdir(), 'vmi-elf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function vcpu(index: number): VcpuRecord {
  const h = (n: number): string => `0x${(0x1000 * (index + 1) + n).toString(16)}`;
  return {
    index,
    rax: h(1),
    rbx: h(2),
    rcx: h(3),
    rdx: h(4),
    rsi: h(5),
    rdi: h(6),
    rbp: h(7),
    rsp: h(8),
    r8: h(9),
    r9: h(10),
    r10: h(11),
    r11: h(12),
    r12: h(13),
    r13: h(14),
    r14: h(15),
    r15: h(16),
    rip: '0xffffffff81a592eb',
    eflags: '0x246',
    cs: 0x10,
    ss: 0x18,
    ds: 0,
    es: 0,
    fs: 0,
    gs: 0,
    fsBase: '0x7f0000001000',
    gsBase: '0xffff88800f600000',
    kernelGsBase: '0x0',
    cr0: '0x80050033',
    cr2: '0x0',
    cr3: '0x62bc000',
    cr4: '0x750ef0',
    efer: '0xd01',
    star: '0x0',
    lstar: '0xffffffff81c00080',
    cstar: '0x0',
    fmask: '0x0',
  };
}

describe('ELF core writer', () => {
  const ram = join(dir, 'ram.raw');
  const ramBytes = Buffer.alloc(3 * 65536);
  for (let i = 0; i < ramBytes.length; i++) ramBytes[i] = (i * 7) & 0xff;
  writeFileSync(ram, ramBytes);
  const out = join(dir, 'core.elf');
  const vcpus = [vcpu(0), vcpu(1)];

  it('writes a core readelf accepts, with one PT_LOAD per range and NT_PRSTATUS per vCPU', async () => {
    await writeElfCore(out, ram, vcpus, [
      { paddr: 0n, size: 65536n, fileOffset: 0 },
      { paddr: 0x100000000n, size: 131072n, fileOffset: 65536 },
    ]);
    const text = execFileSync('readelf', ['-h', '-l', '-n', '-W', out]).toString();
    expect(text).toMatch(/Type:\s+CORE/);
    expect(text).toMatch(/Machine:\s+Advanced Micro Devices X86-64/);
    expect(text.match(/^\s+LOAD\s/gm)).toHaveLength(2);
    expect(text).toMatch(/LOAD\s+0x[0-9a-f]+ 0x0*100000000 0x0*100000000 0x0*20000 0x0*20000/);
    expect(text.match(/CORE\s+0x00000150\s+NT_PRSTATUS/g)).toHaveLength(2);
  });

  it('parses back: header, segments, registers in user_regs_struct order, RAM bytes', () => {
    const buf = readFileSync(out);
    const core = parseElfCore(buf);
    expect(core.type).toBe(ET_CORE);
    expect(core.machine).toBe(EM_X86_64);
    expect(core.phdrs.map((p) => p.type)).toEqual([PT_NOTE, PT_LOAD, PT_LOAD]);
    expect(core.notes.every((n) => n.type === NT_PRSTATUS && n.desc.length === PRSTATUS_SIZE)).toBe(true);
    expect(core.notes[1].desc.readInt32LE(32)).toBe(2); // pr_pid = vCPU + 1
    expect(PR_REG_NAMES.slice(0, 3)).toEqual(['r15', 'r14', 'r13']);
    const r = core.prstatus[1];
    expect(r.r15).toBe(0x2010n);
    expect(r.rax).toBe(0x2001n);
    expect(r.rip).toBe(0xffffffff81a592ebn);
    expect(r.orig_rax).toBe(0xffffffffffffffffn);
    expect(r.cs).toBe(0x10n);
    expect(r.fs_base).toBe(0x7f0000001000n);
    const l2 = core.phdrs[2];
    expect(l2.paddr).toBe(0x100000000n);
    expect(Number(l2.offset) % 4096).toBe(0);
    expect(buf.subarray(Number(l2.offset), Number(l2.offset) + 131072).equals(ramBytes.subarray(65536))).toBe(
      true,
    );
    expect(buf.length).toBe(Number(core.phdrs[1].offset) + 3 * 65536);
  });

  it('leaves nothing behind on failure (short RAM file)', async () => {
    const bad = join(dir, 'bad.elf');
    await expect(
      writeElfCore(bad, ram, vcpus, [{ paddr: 0n, size: 1n << 20n, fileOffset: 0 }]),
    ).rejects.toThrow(/short read/);
    expect(() => readFileSync(bad)).toThrow();
    expect(() => readFileSync(`${bad}.partial-${process.pid}`)).toThrow();
  });
});
