/**
 * The process-memory plugins (issue 17) against the fake guest's /proc/PID/mem: what each
 * finds in memory laid out as the real thing lays it out (bash's HIST_ENTRY, an RWX page,
 * an ELF image with a build-id note, a link map), and the guest entries each costs, which
 * their header comments promise; the scan cap truncates with a warning, never silently.
 */
import { describe, expect, it } from 'vitest';
import { validateTable, type ResultTable } from '../../src/output/table.js';
import { bash, findEntries, findTimestamps } from '../../src/plugins/bash.js';
import { elfs } from '../../src/plugins/elfs.js';
import { library_list } from '../../src/plugins/library_list.js';
import { malfind } from '../../src/plugins/malfind.js';
import { vmaregexscan } from '../../src/plugins/vmaregexscan.js';
import { vmayarascan } from '../../src/plugins/vmayarascan.js';
import { runPlugin, type PluginDefinition, type RowValue } from '../../src/sdk/index.js';
import { addFakeProcess, fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

const HEAP = 0x5555_5556_0000n;
const RWX = 0x7f00_0000_0000n;
const EXE = 0x5600_0000_0000n;
const LIBC = 0x7f10_0000_0000n;
const LD = 0x7f20_0000_0000n;
const CODE = [0x31, 0xc0, 0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05, 0xc3];
const enc = new TextEncoder();

const put64 = (b: Uint8Array, at: number, v: bigint) => new DataView(b.buffer).setBigUint64(at, v, true);
const put32 = (b: Uint8Array, at: number, v: number) => new DataView(b.buffer).setUint32(at, v, true);
const put16 = (b: Uint8Array, at: number, v: number) => new DataView(b.buffer).setUint16(at, v, true);
const mapLine = (start: bigint, end: bigint, perm: string, path = '', inode = 0) =>
  `${start.toString(16)}-${end.toString(16)} ${perm} 00000000 ${inode ? '08:01' : '00:00'} ${inode} ${path}\n`;

/** A 4 KiB ELF64 image: header, PT_LOAD, PT_PHDR, PT_NOTE (build-id) and optionally PT_DYNAMIC. */
function elfImage(opts: { type: number; entry: bigint; dynamicAt?: number }): Uint8Array {
  const b = new Uint8Array(4096);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  put16(b, 16, opts.type);
  put16(b, 18, 62);
  put64(b, 24, opts.entry);
  put64(b, 32, 64n);
  put16(b, 54, 56);
  const ph = [
    [1, 0n, 0n, 4096n],
    [6, 64n, 64n, 4n * 56n],
    [4, 0x400n, 0x400n, 36n],
    ...(opts.dynamicAt ? [[2, BigInt(opts.dynamicAt), BigInt(opts.dynamicAt), 64n]] : []),
  ] as [number, bigint, bigint, bigint][];
  put16(b, 56, ph.length);
  ph.forEach(([type, off, vaddr, size], i) => {
    const o = 64 + i * 56;
    put32(b, o, type);
    put64(b, o + 8, off);
    put64(b, o + 16, vaddr);
    put64(b, o + 32, size);
    put64(b, o + 40, size);
  });
  // Note: namesz 4, descsz 20, NT_GNU_BUILD_ID, "GNU\0", 20 bytes of id.
  put32(b, 0x400, 4);
  put32(b, 0x404, 20);
  put32(b, 0x408, 3);
  b.set(enc.encode('GNU\0'), 0x40c);
  for (let i = 0; i < 20; i++) b[0x410 + i] = i + 1;
  return b;
}

/** pid 10 a bash with three history entries; pid 11 labmem: RWX page, PIE with a link map, a planted string. */
function memGuest(n = 5): FakeGuest {
  const g = fakeProcGuest(n);
  addFakeProcess(g, 10, 'bash');
  g.addFile('/proc/10/comm', 'bash\n');
  g.addFile('/proc/10/maps', mapLine(HEAP, HEAP + 0x21000n, 'rw-p', '[heap]'));
  const heap = new Uint8Array(0x21000);
  const history: [number, string, number, string][] = [
    [0x100, '#1764460000', 0x200, 'echo first'],
    [0x140, '#1764460005', 0x240, 'ls -la /tmp'],
    [0x180, '\u00001764460009', 0x280, 'cat /etc/passwd'],
  ];
  history.forEach(([ts, stamp, line, text], i) => {
    heap.set(enc.encode(stamp + '\0'), ts);
    heap.set(enc.encode(text + '\0'), line);
    put64(heap, 0x400 + i * 32, HEAP + BigInt(line));
    put64(heap, 0x408 + i * 32, HEAP + BigInt(ts));
  });
  // A '#' string nothing points at, and a pointer to it from a line outside the heap: neither is an entry.
  heap.set(enc.encode('#1764460100\0'), 0x600);
  put64(heap, 0x700, 0x1234_0000n);
  put64(heap, 0x708, HEAP + 0x600n);
  g.mem.set('/proc/10/mem', [{ start: HEAP, data: heap }]);

  addFakeProcess(g, 11, 'labmem');
  g.addFile('/proc/11/comm', 'labmem\n');
  const rwx = new Uint8Array(4096).fill(0xcc);
  rwx.set(CODE);
  rwx.set(enc.encode('VMI-LAB-RWX-MARKER'), 32);
  const exe = elfImage({ type: 3, entry: 0x1290n, dynamicAt: 0x800 });
  const libc = elfImage({ type: 3, entry: 0x27410n });
  const ld = elfImage({ type: 3, entry: 0x1ab70n });
  // The dynamic section: DT_DEBUG → r_debug at heap2 + 0; r_map → three link_map nodes.
  const heap2 = new Uint8Array(0x4000);
  const H2 = 0x5600_0001_0000n;
  put64(exe, 0x800, 21n);
  put64(exe, 0x808, H2);
  put64(heap2, 8, H2 + 0x100n);
  const nodes: [bigint, string][] = [
    [EXE, ''],
    [LIBC, '/lib/x86_64-linux-gnu/libc.so.6'],
    [LD, '/lib64/ld-linux-x86-64.so.2'],
  ];
  nodes.forEach(([addr, name], i) => {
    const o = 0x100 + i * 0x480;
    put64(heap2, o, addr);
    put64(heap2, o + 8, H2 + 0x3000n + BigInt(i * 0x100));
    put64(heap2, o + 24, i < nodes.length - 1 ? H2 + BigInt(0x100 + (i + 1) * 0x480) : 0n);
    heap2.set(enc.encode(name + '\0'), 0x3000 + i * 0x100);
  });
  heap2.set(enc.encode('vmi-planted-needle'), 0x2000);
  g.addFile(
    '/proc/11/maps',
    mapLine(EXE, EXE + 0x1000n, 'r-xp', '/usr/sbin/labmem', 7) +
      mapLine(H2, H2 + 0x4000n, 'rw-p', '[heap]') +
      mapLine(RWX, RWX + 0x1000n, 'rwxp') +
      mapLine(LIBC, LIBC + 0x1000n, 'r-xp', '/lib/x86_64-linux-gnu/libc.so.6', 8) +
      mapLine(LD, LD + 0x1000n, 'r-xp', '/lib64/ld-linux-x86-64.so.2', 9) +
      mapLine(0x7fff_0000_0000n, 0x7fff_0000_2000n, 'r-xp', '[vdso]'),
  );
  const auxv = new Uint8Array(64);
  put64(auxv, 0, 3n); // AT_PHDR
  put64(auxv, 8, EXE + 64n);
  put64(auxv, 16, 5n); // AT_PHNUM
  put64(auxv, 24, 4n);
  put64(auxv, 32, 7n); // AT_BASE
  put64(auxv, 40, LD);
  g.addFile('/proc/11/auxv', auxv);
  g.mem.set('/proc/11/mem', [
    { start: EXE, data: exe },
    { start: H2, data: heap2 },
    { start: RWX, data: rwx },
    { start: LIBC, data: libc },
    { start: LD, data: ld },
  ]);
  for (let pid = 1; pid <= n; pid++) g.addFile(`/proc/${pid}/maps`, '');
  return g;
}

async function run(def: PluginDefinition, g: FakeGuest, options: Record<string, unknown> = {}) {
  const r = await runPlugin(def, { executor: g, options });
  return { rows: records(r.table), runs: r.runs, errors: r.table.errors };
}

describe('bash', () => {
  it('finds the history entries by their timestamps, with or without HISTTIMEFORMAT, in 4 guest entries', async () => {
    const { rows, runs } = await run(bash, memGuest());
    expect(
      rows.map((r) => [r.PID, r.Command, (r.CommandTime as Date).getTime() / 1000, r.TimeSource]),
    ).toEqual([
      [10, 'echo first', 1764460000, '#'],
      [10, 'ls -la /tmp', 1764460005, '#'],
      [10, 'cat /etc/passwd', 1764460009, 'nul'],
    ]);
    expect(rows[0].HIST_ENTRY).toBe(HEAP + 0x400n);
    // listing, comm+maps, the heap (one batch), the lines outside it (none: no batch).
    expect(runs).toBeLessThanOrEqual(4);
  });

  it('finds nothing in memory without the structure', () => {
    const held = [{ start: 0x1000n, data: enc.encode('#1764460000\0 plain text # 12\0') }];
    expect(findEntries(held, findTimestamps(held))).toEqual([]);
  });
});

describe('malfind', () => {
  it('reports the RWX page with hex and disassembly, not the vdso nor file text, in 3 entries', async () => {
    const { rows, runs } = await run(malfind, memGuest());
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ PID: 11, Start: RWX, End: RWX + 0x1000n, Protection: 'rwx', Path: '' });
    expect(String(rows[0].Hexdump).startsWith('31 c0 b8 3c 00 00 00 31 ff 0f 05 c3 cc')).toBe(true);
    expect(String(rows[0].Hexdump).split(' ')).toHaveLength(64);
    expect(rows[0].Disasm).toMatch(
      /^0x7f0000000000: xor eax,eax; 0x7f0000000002: mov eax,3Ch; .*syscall; .*ret/,
    );
    expect(runs).toBeLessThanOrEqual(3);
  });
});

describe('elfs', () => {
  it('reads the ELF headers and build-ids of the mapped images in 5 entries', async () => {
    const { rows, runs } = await run(elfs, memGuest());
    expect(rows.map((r) => [r['File Path'], r.Type, r.Machine, r.Entry, r.PhNum])).toEqual([
      ['/usr/sbin/labmem', 'ET_DYN', 'EM_X86_64', 0x1290n, 4],
      ['/lib/x86_64-linux-gnu/libc.so.6', 'ET_DYN', 'EM_X86_64', 0x27410n, 3],
      ['/lib64/ld-linux-x86-64.so.2', 'ET_DYN', 'EM_X86_64', 0x1ab70n, 3],
    ]);
    expect(rows[1].BuildID).toBe('0102030405060708090a0b0c0d0e0f1011121314');
    expect(runs).toBeLessThanOrEqual(5);
  });
});

describe('library_list', () => {
  it('walks the link map from auxv, in at most 9 entries', async () => {
    const { rows, runs } = await run(library_list, memGuest());
    expect(rows).toEqual([
      { Name: 'labmem', Pid: 11, LoadAddress: LIBC, Path: '/lib/x86_64-linux-gnu/libc.so.6', Mapped: true },
      { Name: 'labmem', Pid: 11, LoadAddress: LD, Path: '/lib64/ld-linux-x86-64.so.2', Mapped: true },
    ]);
    // listing, comm+maps, auxv, phdrs, dynamic, r_debug, nodes (one 8 KiB window), names.
    expect(runs).toBeLessThanOrEqual(9);
  });
});

describe('vmaregexscan and vmayarascan', () => {
  it('find a planted string at its address', async () => {
    const g = memGuest();
    const re = await run(vmaregexscan, g, { pattern: 'vmi-planted-[a-z]+' });
    expect(re.rows).toEqual([
      {
        PID: 11,
        Process: 'labmem',
        Offset: 0x5600_0001_2000n,
        Text: 'vmi-planted-needle',
        Hex: [...enc.encode('vmi-planted-needle')].map((x) => x.toString(16).padStart(2, '0')).join(' '),
        Path: '[heap]',
      },
    ]);
    const y = await run(vmayarascan, g, {
      'yara-string': 'rule p { strings: $n = "vmi-planted-needle" condition: $n }',
    });
    expect(y.rows.map((r) => [r.Offset, r.PID, r.Rule, r.Component, r.Value])).toEqual([
      [0x5600_0001_2000n, 11, 'p', '$n', 'vmi-planted-needle'],
    ]);
    // --max-matches: the first N rows, and a warning that the scan did not finish.
    for (const [plugin, opts] of [
      [vmaregexscan, { pattern: 'planted|needle' }],
      [
        vmayarascan,
        { 'yara-string': 'rule q { strings: $a = "planted" $b = "needle" condition: any of them }' },
      ],
    ] as const) {
      const all = await run(plugin, g, opts);
      const two = await run(plugin, g, { ...opts, 'max-matches': 1 });
      expect(all.rows.length).toBe(2);
      expect(all.errors.join('\n')).not.toMatch(/stopped at/);
      expect(two.rows).toEqual(all.rows.slice(0, 1));
      expect(two.errors.join('\n')).toMatch(/stopped at 1 matches \(--max-matches raises it\)/);
    }
    await expect(run(vmayarascan, g, { 'yara-string': 'rule {' })).rejects.toThrow(/do not compile/);
    await expect(run(vmaregexscan, g, { pattern: '(' })).rejects.toThrow(/bad --pattern/);
  });

  it('scan 40 MiB in ⌈40/3⌉ + 2 entries, a match across a chunk boundary once, and stop at the cap with a warning', async () => {
    const g = fakeProcGuest(1);
    const big = new Uint8Array(40 << 20);
    const at = (3 << 20) - 6; // straddles the first 3 MiB chunk's end
    big.set(enc.encode('NEEDLE-ACROSS'), at);
    g.addFile('/proc/1/comm', 'big\n');
    g.addFile('/proc/1/maps', mapLine(0x1000_0000n, 0x1000_0000n + BigInt(big.length), 'rw-p'));
    g.mem.set('/proc/1/mem', [{ start: 0x1000_0000n, data: big }]);
    const whole = await run(vmaregexscan, g, { pattern: 'NEEDLE-[A-Z]+' });
    expect(whole.errors).toEqual([]);
    expect(whole.rows.map((r) => r.Offset)).toEqual([0x1000_0000n + BigInt(at)]);
    expect(whole.errors).toEqual([]);
    expect(whole.runs).toBeLessThanOrEqual(Math.ceil(40 / 3) + 2 + 1);
    const capped = await run(vmaregexscan, g, { pattern: 'NEEDLE-[A-Z]+', 'max-scan': 2 });
    expect(capped.rows).toEqual([]);
    expect(capped.errors.join('\n')).toMatch(
      /scan truncated: read 2\.0 MiB of 40\.0 MiB .*--max-scan.*1 \(38\.0 MiB\)/,
    );
  });
});
