/**
 * Pure parts of modxview / check_syscall and the lab's test rootkit: the module-area page
 * enumeration, the kernel page-table choice under KPTI, /proc/kallsyms parsing and lookups,
 * taint letters, the lab's module selection and the header packages of a kernel release.
 */
import { describe, expect, it } from 'vitest';
import { mappedRanges } from '../../src/memory/page-walk.js';
import { RamLayout, type PhysicalMemory } from '../../src/memory/physical.js';
import { HostKernelView } from '../../src/shadow/kernel-view.js';
import { formatSymbol, parseKallsyms, SymbolIndex } from '../../src/abi/linux/proc/kallsyms.js';
import { attributeScan, taintLetters } from '../../src/plugins/modxview.js';
import { selectLabModules } from '../../src/lab/kernel.js';
import { headerPackages } from '../../src/lab/testkit.js';

class BufferMemory implements PhysicalMemory {
  readonly buf: Buffer;
  readonly layout: RamLayout;
  constructor(readonly size: number) {
    this.buf = Buffer.alloc(size);
    this.layout = RamLayout.flat(size);
  }
  async read(paddr: bigint, length: number): Promise<Buffer> {
    const o = Number(paddr);
    if (o < 0 || o + length > this.size) throw new Error('out of range');
    return Buffer.from(this.buf.subarray(o, o + length));
  }
  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    target.set(await this.read(paddr, length), offset);
  }
  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.buf.set(data, Number(paddr));
  }
  close(): void {}
  set(table: number, index: number, value: bigint): void {
    this.buf.writeBigUInt64LE(value, table + index * 8);
  }
}

const P = 1n,
  W = 2n,
  PS = 0x80n,
  NX = 1n << 63n;
const idx = (va: bigint, level: number) => Number((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
const MOD = 0xffff_ffff_c000_0000n;

/** Kernel tables at 0x2000 (PGD), user PGD at 0x3000 (KPTI pair), module area populated. */
function kernelTables(): BufferMemory {
  const m = new BufferMemory(1 << 22);
  const pgd = 0x2000,
    pud = 0x4000,
    pmd = 0x5000,
    pt = 0x6000;
  m.set(pgd, idx(MOD, 4), BigInt(pud) | P | W);
  m.set(pud, idx(MOD, 3), BigInt(pmd) | P | W);
  // A 2 MiB executable leaf at MOD, a page table at MOD + 2 MiB.
  m.set(pmd, idx(MOD, 2), 0x20_0000n | P | PS);
  m.set(pmd, idx(MOD + 0x20_0000n, 2), BigInt(pt) | P | W);
  // Pages 0,1 executable (merged), 2 NX data, 4 executable again.
  m.set(pt, 0, 0x10_0000n | P);
  m.set(pt, 1, 0x10_1000n | P);
  m.set(pt, 2, 0x10_2000n | P | W | NX);
  m.set(pt, 4, 0x10_4000n | P);
  return m;
}

describe('module-area page enumeration', () => {
  it('lists mapped runs with rights, merged, with huge leaves and sign-extended addresses', async () => {
    const m = kernelTables();
    const r = await mappedRanges(m, 0x2000n, 0n, MOD, MOD + 0x40_0000n);
    expect(r).toEqual([
      { start: MOD, size: 0x20_2000n, writable: false, executable: true, user: false },
      { start: MOD + 0x20_2000n, size: 0x1000n, writable: true, executable: false, user: false },
      { start: MOD + 0x20_4000n, size: 0x1000n, writable: false, executable: true, user: false },
    ]);
    // Clipped to the range asked for.
    expect(await mappedRanges(m, 0x2000n, 0n, MOD + 0x20_1000n, MOD + 0x20_2000n)).toEqual([
      { start: MOD + 0x20_1000n, size: 0x1000n, writable: false, executable: true, user: false },
    ]);
  });

  it('refuses page tables outside guest RAM (hostile guest)', async () => {
    const m = kernelTables();
    m.set(0x5000, idx(MOD + 0x40_0000n, 2), 0x7fff_f000n | P);
    await expect(mappedRanges(m, 0x2000n, 0n, MOD, MOD + 0x60_0000n)).rejects.toThrow(/outside guest RAM/);
  });

  it('HostKernelView takes the kernel half of a KPTI pair when it maps the anchor', async () => {
    const m = kernelTables();
    // The shadow's CR3 is the user PGD (bit 12 set) with a PCID; the user PGD maps nothing here.
    const view = new HostKernelView(m, 0x3000n | 0x5n, 0n, 'test');
    const k = await view.kernel(MOD + 0x20_0000n);
    m.buf.write('hello', 0x10_0000);
    expect(Buffer.from(await k.read(MOD + 0x20_0000n, 5)).toString()).toBe('hello');
    expect((await k.mappings(MOD, MOD + 0x40_0000n)).length).toBe(3);
    await expect(view.kernel(0xffff_ffff_8100_0000n)).rejects.toThrow(/no kernel page table maps/);
    await expect(k.read(MOD, 2 << 20)).rejects.toThrow(RangeError);
  });
});

describe('/proc/kallsyms', () => {
  const text = [
    'ffffffff81000000 T _stext',
    'ffffffff810045c0 T __x64_sys_ni_syscall',
    'ffffffff813910e0 T __x64_sys_sysfs',
    'ffffffff82000360 D sys_call_table',
    'ffffffffc0201000 t dummy_setup\t[dummy]',
    'ffffffffc022e000 t ftrace_trampoline\t[__builtin__ftrace]',
    'garbage line',
    '',
  ].join('\n');

  it('parses core, module and pseudo-module symbols; bad lines are errors', () => {
    const r = parseKallsyms(text);
    expect(r.symbols).toHaveLength(6);
    expect(r.symbols[4]).toEqual({
      address: 0xffff_ffff_c020_1000n,
      type: 't',
      name: 'dummy_setup',
      module: 'dummy',
    });
    expect(r.errors).toHaveLength(1);
    expect(r.hidden).toBe(false);
    expect(parseKallsyms('0000000000000000 T _stext\n').hidden).toBe(true);
  });

  it('looks addresses up like %pS', () => {
    const ix = new SymbolIndex(parseKallsyms(text).symbols);
    expect(formatSymbol(ix.lookup(0xffff_ffff_8139_10e0n))).toBe('__x64_sys_sysfs');
    expect(formatSymbol(ix.lookup(0xffff_ffff_c020_1010n))).toBe('dummy_setup+0x10 [dummy]');
    expect(ix.lookup(0x1000n)).toBeUndefined();
    expect(ix.within(0xffff_ffff_c020_0000n, 0xffff_ffff_c030_0000n).map((s) => s.name)).toEqual([
      'dummy_setup',
      'ftrace_trampoline',
    ]);
  });
});

describe('taints, lab modules, header packages', () => {
  it('names taint bits as kernel/panic.c does', () => {
    expect(taintLetters(12288n)).toBe('OE');
    expect(taintLetters(0n)).toBe('');
    expect(taintLetters(1n | (1n << 9n))).toBe('PW');
  });

  it('keeps a module only after everything it depends on', () => {
    expect(
      selectLabModules([
        { name: 'dummy', depends: [] },
        { name: 'tcp_diag', depends: ['inet_diag'] },
        { name: 'inet_diag', depends: [] },
        { name: 'udp_diag', depends: ['inet_diag'] },
        { name: 'unix_diag', depends: [] },
        { name: 'x', depends: ['missing'] },
      ]),
    ).toEqual(['dummy', 'inet_diag', 'udp_diag', 'unix_diag']);
  });

  it('knows the Debian header packages of 6.1 and 6.12 releases', () => {
    expect(headerPackages('6.1.0-57-amd64', '6.1.192-3')).toEqual([
      'linux-headers-6.1.0-57-amd64',
      'linux-headers-6.1.0-57-common',
      'linux-kbuild-6.1=6.1.192-3',
    ]);
    expect(headerPackages('6.12.117+deb12-rt-amd64', '6.12.117-1~deb12u1')).toEqual([
      'linux-headers-6.12.117+deb12-rt-amd64',
      'linux-headers-6.12.117+deb12-common-rt',
      'linux-kbuild-6.12.117+deb12',
    ]);
    expect(() => headerPackages('weird', '1')).toThrow(/header packages/);
  });
});

describe('modxview: the code scan attributed to modules', () => {
  const P = 0x1000n;
  const A = 0xffffffffc0000000n;
  it('a page inside two claims is seen by both; unclaimed pages are orphan runs; pseudo symbols claim theirs', () => {
    // libcrc32c's one text page lies inside a neighbour's base + size (all its memory
    // types added up, 6.4+), which the neighbour lists first.
    const { seen, orphans } = attributeScan(
      [{ start: A, size: 6n * P }],
      [
        { name: 'neighbour', claims: [{ start: A, end: A + 3n * P }] },
        { name: 'libcrc32c', claims: [{ start: A + 2n * P, end: A + 3n * P }] },
      ],
      [A + 5n * P + 0x10n],
    );
    expect([...seen].sort()).toEqual(['libcrc32c', 'neighbour']);
    expect(orphans).toEqual([{ start: A + 3n * P, size: 2n * P }]);
  });
});
