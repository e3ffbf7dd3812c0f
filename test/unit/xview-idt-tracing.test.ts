/**
 * check_idt and tracing without a VM: the IDTR parser of QEMU's `info registers`, the gate
 * decoder, the tracefs/debugfs parsers, the detached-mount shape of the read-only policy
 * (both ways), and both plugins over a fake guest and a fake hypervisor.
 */
import { describe, expect, it } from 'vitest';
import { parseDescriptorTables } from '../../src/qemu/hmp-registers.js';
import { checkIdt, decodeIdt } from '../../src/plugins/check-idt.js';
import { tracing } from '../../src/plugins/tracing.js';
import {
  parseFtraceFunctions,
  parseKprobeEvents,
  parseKprobeList,
  parsePrintedSymbol,
} from '../../src/abi/linux/proc/tracing.js';
import { checkCall, PolicyViolationError } from '../../src/sdk/policy.js';
import { sysno } from '../../src/abi/linux/syscalls.js';
import { cPath } from '../../src/sdk/batch.js';
import type { Call, CallArg } from '../../src/sdk/syscall-types.js';
import { runPlugin, type RowValue } from '../../src/sdk/index.js';
import type { HypervisorView, KernelMemory } from '../../src/sdk/hypervisor.js';
import { validateTable, type ResultTable } from '../../src/output/table.js';
import { FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

describe('IDTR from info registers', () => {
  const block = (cpu: number | undefined, base: string) =>
    `${cpu === undefined ? '' : `CPU#${cpu}\n`}RAX=0000000000000000 RBX=0000000000000000\n` +
    `GDT=     fffffe0000001000 0000007f\nIDT=     ${base} 00000fff\nCR0=80050033\n`;

  it('reads every vCPU block of info registers -a', () => {
    expect(parseDescriptorTables(block(0, 'fffffe0000000000') + '\n' + block(1, 'fffffe0000000000'))).toEqual(
      [
        {
          cpu: 0,
          idt: { base: 0xfffffe0000000000n, limit: 0xfff },
          gdt: { base: 0xfffffe0000001000n, limit: 0x7f },
        },
        {
          cpu: 1,
          idt: { base: 0xfffffe0000000000n, limit: 0xfff },
          gdt: { base: 0xfffffe0000001000n, limit: 0x7f },
        },
      ],
    );
  });

  it('takes a dump without headers for the default vCPU; 32-bit bases too', () => {
    expect(parseDescriptorTables(block(undefined, '0000b000'), 2)[0]).toMatchObject({
      cpu: 2,
      idt: { base: 0xb000n, limit: 0xfff },
    });
  });

  it('drops malformed blocks and duplicate vCPUs, never guesses', () => {
    expect(parseDescriptorTables('CPU#0\nIDT= zz 0fff\nCPU#1\n')).toEqual([]);
    expect(parseDescriptorTables('IDT=     1fffffe0000000000 00000fff\n')).toEqual([]);
    expect(parseDescriptorTables(block(0, 'fffffe0000000000') + block(0, 'ffffffff81000000'))).toHaveLength(
      1,
    );
    expect(() => parseDescriptorTables('x'.repeat(5 << 20))).toThrow(RangeError);
  });
});

/** A 16-byte x86-64 interrupt gate. */
function gate(
  handler: bigint,
  opts: { selector?: number; type?: number; present?: boolean; ist?: number } = {},
) {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint16(0, Number(handler & 0xffffn), true);
  v.setUint16(2, opts.selector ?? 0x10, true);
  v.setUint8(4, opts.ist ?? 0);
  v.setUint8(5, (opts.present === false ? 0 : 0x80) | (opts.type ?? 0xe));
  v.setUint16(6, Number((handler >> 16n) & 0xffffn), true);
  v.setUint32(8, Number((handler >> 32n) & 0xffffffffn), true);
  return b;
}

describe('IDT gate decoding', () => {
  it('splits the handler, selector, IST, type, DPL and P bit (SDM vol. 3, 6.14.1)', () => {
    const g = gate(0xffffffff81c00a30n, { ist: 3 });
    g[5] |= 0x60; // DPL 3
    expect(decodeIdt(g)).toEqual([
      { index: 0, handler: 0xffffffff81c00a30n, selector: 0x10, ist: 3, type: 0xe, dpl: 3, present: true },
    ]);
    expect(decodeIdt(new Uint8Array(15))).toEqual([]);
    expect(decodeIdt(new Uint8Array(16 * 300))).toHaveLength(256);
  });
});

describe('tracefs and debugfs parsers', () => {
  it('reads enabled_functions lines with trampolines, shared callbacks and direct calls', () => {
    const text =
      '__x64_sys_getdents64 (1) R I   \ttramp: 0xffffffffc0208000 (thunk+0x0/0x50 [vmi_testkit]) ->ftrace_ops_assist_func+0x0/0xf0\n' +
      'tcp4_seq_show (1) R I   \ttramp: 0xffffffffc020a000 (0xffffffffc01f2010) ->ftrace_ops_assist_func+0x0/0xf0\n' +
      'vfs_read (2) R     ->ftrace_ops_list_func+0x0/0x1a0\n' +
      'tcp_v4_connect (1)     D \n\tdirect-->bpf_trampoline_6442+0x0/0x1000 [bpf]\n' +
      'nf_hook_slow [nf_tables] (1)    \ttramp: ftrace_trampoline+0x0/0x120 [__builtin__ftrace] (function_trace_call+0x0/0x140)\n' +
      '#### all functions enabled ####\n' +
      'garbage line\n';
    const { entries, errors } = parseFtraceFunctions(text);
    expect(errors).toHaveLength(1);
    expect(entries.map((e) => [e.function, e.module, e.count, e.flags])).toEqual([
      ['__x64_sys_getdents64', undefined, 1, ['R', 'I']],
      ['tcp4_seq_show', undefined, 1, ['R', 'I']],
      ['vfs_read', undefined, 2, ['R']],
      ['tcp_v4_connect', undefined, 1, ['D']],
      ['nf_hook_slow', 'nf_tables', 1, []],
    ]);
    expect(entries[0].callbacks[0]).toMatchObject({
      kind: 'tramp',
      holder: { address: 0xffffffffc0208000n },
      func: { name: 'thunk', offset: 0n, module: 'vmi_testkit' },
      calls: { name: 'ftrace_ops_assist_func' },
    });
    expect(entries[1].callbacks[0].func.address).toBe(0xffffffffc01f2010n);
    expect(entries[2].callbacks).toEqual([]);
    expect(entries[2].calls?.name).toBe('ftrace_ops_list_func');
    expect(entries[3].direct).toMatchObject({ name: 'bpf_trampoline_6442', module: 'bpf' });
    expect(entries[4].callbacks[0].holder.module).toBe('__builtin__ftrace');
  });

  it('parses %pS renderings and keeps unknown shapes as text only', () => {
    expect(parsePrintedSymbol('do_sys_open+0x1c/0x80')).toEqual({
      text: 'do_sys_open+0x1c/0x80',
      name: 'do_sys_open',
      offset: 0x1cn,
    });
    expect(parsePrintedSymbol('a b c')).toEqual({ text: 'a b c' });
  });

  it('reads kprobes/list and kprobe_events', () => {
    const list =
      'ffffffff81234560  k  tcp_v4_connect+0x0    [FTRACE]\n' +
      'ffffffffc0100010  r  some_fn+0x10  mymod [DISABLED]\n' +
      '0000000000000000  k  do_exit+0x0    \n' +
      'nonsense\n';
    const k = parseKprobeList(list);
    expect(k.errors).toHaveLength(1);
    expect(k.entries).toEqual([
      {
        address: 0xffffffff81234560n,
        kind: 'kprobe',
        where: { text: 'tcp_v4_connect+0x0', name: 'tcp_v4_connect', offset: 0n },
        flags: ['FTRACE'],
      },
      {
        address: 0xffffffffc0100010n,
        kind: 'kretprobe',
        where: { text: 'some_fn+0x10', name: 'some_fn', offset: 0x10n },
        module: 'mymod',
        flags: ['DISABLED'],
      },
      { address: 0n, kind: 'kprobe', where: { text: 'do_exit+0x0', name: 'do_exit', offset: 0n }, flags: [] },
    ]);
    expect(
      parseKprobeEvents('p:kprobes/myopen do_sys_openat2 dfd=%di\nr16:kprobes/ret vfs_read\n').entries,
    ).toEqual([
      { kind: 'kprobe', event: 'kprobes/myopen', target: 'do_sys_openat2' },
      { kind: 'kretprobe', event: 'kprobes/ret', target: 'vfs_read' },
    ]);
  });
});

describe('the read-only policy: a detached read-only tracefs/debugfs mount and nothing more', () => {
  const int = (v: number | bigint): CallArg => ({ kind: 'int', value: BigInt(v) });
  const str = (s: string): CallArg => ({ kind: 'in', data: cPath(s) });
  const ref = (i: number): CallArg => ({ kind: 'result', index: i });
  const call = (name: Parameters<typeof sysno>[0], ...args: CallArg[]): Call => ({ nr: sysno(name), args });
  const check = (batch: Call[]) => batch.map((c) => checkCall(c, { plugin: 'tracing' }, batch));
  const ok = (fs = 'tracefs', attr = 0xf, flags = 1) => [
    call('fsopen', str(fs), int(1)),
    call('fsconfig', ref(0), int(6), int(0), int(0), int(0)),
    call('fsmount', ref(0), int(flags), int(attr)),
    call('close', ref(0)),
  ];

  it('allows fsopen(tracefs|debugfs) → fsconfig(CMD_CREATE) → fsmount(RDONLY…) in one batch', () => {
    expect(check(ok())).toEqual([undefined, undefined, undefined, undefined]);
    expect(check(ok('debugfs', 0x1, 0))).toEqual([undefined, undefined, undefined, undefined]);
  });

  it('refuses every other shape', () => {
    const refused = (batch: Call[], i: number) => {
      const v = check(batch)[i];
      expect(v).toBeInstanceOf(PolicyViolationError);
      return v!.message;
    };
    // Other filesystems, a name with a NUL inside, unknown fsopen flags.
    expect(refused(ok('proc'), 0)).toMatch(/detached read-only tracefs/);
    expect(refused(ok('cgroup2'), 2)).toMatch(/fsmount/);
    expect(
      refused(
        [{ ...ok()[0], args: [{ kind: 'in', data: new Uint8Array([...cPath('tracefs'), 0]) }, int(1)] }],
        0,
      ),
    ).toMatch(/fsopen/);
    expect(refused([call('fsopen', str('tracefs'), int(2))], 0)).toMatch(/fsopen/);
    // A writable mount, an attribute that does not only restrict (idmap 0x100000), other flags.
    expect(refused(ok('tracefs', 0xe), 2)).toMatch(/fsmount/);
    expect(refused(ok('tracefs', 0x1 | 0x100000), 2)).toMatch(/fsmount/);
    expect(refused(ok('tracefs', 0x1, 2), 2)).toMatch(/fsmount/);
    // fsconfig: a superblock option (FSCONFIG_SET_FLAG "ro" would remount the shared superblock), reconfigure.
    const setFlag = ok();
    setFlag[1] = call('fsconfig', ref(0), int(0), str('ro'), int(0), int(0));
    expect(refused(setFlag, 1)).toMatch(/fsconfig/);
    const reconf = ok();
    reconf[1] = call('fsconfig', ref(0), int(7), int(0), int(0), int(0));
    expect(refused(reconf, 1)).toMatch(/fsconfig/);
    // On an fd number (someone else's fs context) or on a call that is no allowed fsopen.
    expect(refused([call('fsmount', int(3), int(1), int(1))], 0)).toMatch(/fsmount/);
    expect(refused([call('getpid'), call('fsmount', ref(0), int(1), int(1))], 1)).toMatch(/fsmount/);
    // Attaching it anywhere, or any other mount call.
    for (const name of ['move_mount', 'mount', 'open_tree', 'fspick', 'mount_setattr', 'umount2'] as const) {
      const nr = sysno(name as Parameters<typeof sysno>[0]);
      expect(checkCall({ nr, args: [int(3)] }, { plugin: 'tracing' }, [])).toBeInstanceOf(
        PolicyViolationError,
      );
    }
  });
});

const STEXT = 0xffffffff81000000n;
const ETEXT = 0xffffffff82000000n;
const KALLSYMS = [
  `${STEXT.toString(16)} T _stext`,
  'ffffffff81c00a00 T asm_exc_divide_error',
  'ffffffff81c01000 T irq_entries_start',
  'ffffffff81200000 T tcp4_seq_show',
  'ffffffff81300000 T __x64_sys_getdents64',
  'ffffffff81400000 T kprobe_ftrace_handler',
  `${ETEXT.toString(16)} T _etext`,
  'ffffffff83079000 T early_idt_handler_array',
  'ffffffff83079000 T _sinittext',
  'ffffffff83100000 T _einittext',
  'ffffffff83000000 d idt_table',
  'ffffffffc0100000 t good_hook\t[goodmod]',
].join('\n');

function kernelGuest(): FakeGuest {
  const g = new FakeGuest();
  g.addFile('/proc/kallsyms', KALLSYMS + '\n');
  g.addFile('/proc/modules', 'goodmod 16384 0 - Live 0xffffffffc0100000\n');
  return g;
}

/** A hypervisor over a map of kernel pages; idtr() as given. */
function fakeHypervisor(
  pages: Map<bigint, Uint8Array>,
  idtBase: bigint,
  execPages: ReadonlySet<bigint> = new Set(),
): HypervisorView {
  const memory: KernelMemory = {
    async read(vaddr, length) {
      const p = pages.get(vaddr);
      if (!p) throw new Error(`unmapped 0x${vaddr.toString(16)}`);
      return p.subarray(0, length);
    },
    async mappings(start) {
      return execPages.has(start) ? [{ start, size: 0x1000n, writable: false, executable: true }] : [];
    },
  };
  return {
    memory: 'fake',
    kernel: async () => memory,
    idtr: async () => [
      { cpu: 0, base: idtBase, limit: 0xfff },
      { cpu: 1, base: idtBase, limit: 0xfff },
    ],
  };
}

function idtPage(handlers: (bigint | undefined)[]): Uint8Array {
  const page = new Uint8Array(4096);
  handlers.forEach((h, i) => {
    if (h !== undefined) page.set(gate(h), i * 16);
  });
  return page;
}

describe('check_idt over a fake hypervisor', () => {
  const CEA = 0xfffffe0000000000n;
  const sound = Array.from({ length: 256 }, (_, i) =>
    i === 15
      ? undefined
      : i >= 22 && i < 32
        ? 0xffffffff83079000n + BigInt(i) * 9n // never set after boot: the early stubs
        : i < 32
          ? 0xffffffff81c00a00n
          : 0xffffffff81c01000n + BigInt(i - 32) * 8n,
  );

  it('passes a Linux-shaped IDT: gates in the core text, vectors 32+ inside irq_entries_start, one table for both vCPUs', async () => {
    const pages = new Map([
      [CEA, idtPage(sound)],
      [0xffffffff83000000n, idtPage(sound)],
    ]);
    const { table } = await runPlugin(checkIdt, {
      executor: kernelGuest(),
      hypervisor: fakeHypervisor(pages, CEA),
    });
    const rows = records(table);
    expect(rows).toHaveLength(256);
    expect(rows.filter((r) => r.HOOKED)).toEqual([]);
    expect(rows[0]).toMatchObject({ CPU: '0,1', Index: 0, Module: 'kernel', Symbol: 'asm_exc_divide_error' });
    expect(rows[33].Symbol).toBe('irq_entries_start+0x8');
    expect(rows[15]).toMatchObject({ Present: false, HOOKED: false, Module: '' });
    expect(rows[22]).toMatchObject({
      Module: 'kernel (freed init text)',
      Symbol: 'early_idt_handler_array+0xc6',
    });
  });

  it('flags an early stub whose freed init page is executable again', async () => {
    const pages = new Map([
      [CEA, idtPage(sound)],
      [0xffffffff83000000n, idtPage(sound)],
    ]);
    const hv = fakeHypervisor(pages, CEA, new Set([0xffffffff83079000n]));
    const { table } = await runPlugin(checkIdt, { executor: kernelGuest(), hypervisor: hv });
    const flagged = records(table).filter((r) => r.HOOKED);
    expect(flagged.map((r) => r.Index)).toEqual([22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);
    expect(String(flagged[0].EVIDENCE)).toMatch(/freed init text, yet mapped executable/);
  });

  it('flags a gate into code of no listed module, a listed module is named, a copy that differs from idt_table', async () => {
    const hooked = [...sound];
    hooked[3] = 0xffffffffc0200000n; // no module
    hooked[4] = 0xffffffffc0100000n; // goodmod
    const ref = [...sound];
    ref[5] = 0xffffffff81c00a00n + 0x40n; // the live IDT's gate 5 differs from idt_table's
    const pages = new Map([
      [CEA, idtPage(hooked)],
      [0xffffffff83000000n, idtPage(ref.map((h, i) => (i === 3 || i === 4 ? hooked[i] : h)))],
    ]);
    const { table } = await runPlugin(checkIdt, {
      executor: kernelGuest(),
      hypervisor: fakeHypervisor(pages, CEA),
    });
    const flagged = records(table).filter((r) => r.HOOKED);
    expect(flagged.map((r) => [r.Index, r.Module])).toEqual([
      [3, '?'],
      [5, 'kernel'],
    ]);
    expect(String(flagged[0].EVIDENCE)).toMatch(/outside the kernel text/);
    expect(String(flagged[1].EVIDENCE)).toMatch(/differs from idt_table\[5\]/);
    expect(records(table)[4]).toMatchObject({
      Module: 'goodmod',
      Symbol: 'good_hook [goodmod]',
      HOOKED: false,
    });
  });

  it('refuses to run without vCPU state', async () => {
    const hv = fakeHypervisor(new Map(), CEA);
    delete (hv as { idtr?: unknown }).idtr;
    await expect(runPlugin(checkIdt, { executor: kernelGuest(), hypervisor: hv })).rejects.toThrow(
      /vCPU state/,
    );
  });
});

describe('tracing over a fake guest', () => {
  const ENABLED =
    '__x64_sys_getdents64 (1) R I   \ttramp: 0xffffffffc0208000 (thunk+0x0/0x50 [rk]) ->ftrace_ops_assist_func+0x0/0xf0\n' +
    'tcp4_seq_show (1) R I   \ttramp: 0xffffffffc020a000 (0xffffffffc0301000) ->ftrace_ops_assist_func+0x0/0xf0\n' +
    'vfs_read (1) R     \ttramp: 0xffffffffc020c000 (good_hook+0x0/0x10 [goodmod])\n' +
    'do_exit (1) R     \ttramp: 0xffffffffc020e000 (kprobe_ftrace_handler+0x0/0x150)\n';

  function traceGuest(): FakeGuest {
    const g = kernelGuest();
    g.addFile('/proc/filesystems', 'nodev\tproc\nnodev\ttracefs\nnodev\tdebugfs\n');
    g.addFile('/proc/self/mountinfo', '22 1 0:5 / / rw - rootfs rootfs rw\n');
    g.detachedFs.set('tracefs', '/__tracefs').set('debugfs', '/__debugfs');
    g.addFile('/__tracefs/enabled_functions', ENABLED);
    g.addFile('/__tracefs/kprobe_events', '');
    g.addFile('/__debugfs/kprobes/list', 'ffffffff81400000  k  do_exit+0x0    [FTRACE]\n');
    return g;
  }

  it('attributes each hook to its module and flags those of no listed module, through detached mounts it closes', async () => {
    const g = traceGuest();
    const { table } = await runPlugin(tracing, { executor: g });
    expect(table.errors).toEqual([]);
    const rows = records(table);
    expect(rows.slice(0, 4).map((r) => [r.Kind, r.Function, r.Module, r.HOOKED])).toEqual([
      ['ftrace', '__x64_sys_getdents64', 'rk', true],
      ['ftrace', 'tcp4_seq_show', '?', true],
      ['ftrace', 'vfs_read', 'goodmod', false],
      ['ftrace', 'do_exit', 'kernel', false],
    ]);
    expect(rows[4]).toMatchObject({
      Kind: 'kprobe',
      Function: 'do_exit+0x0',
      Flags: 'FTRACE',
      HOOKED: false,
    });
    expect(rows[0].EVIDENCE).toMatch(/module rk, which \/proc\/modules does not list/);
    expect(rows[1]['Callback Address']).toBe(0xffffffffc0301000n);
    expect(rows[2]['Callback Address']).toBe(0xffffffffc0100000n);
    expect(rows[0].Source).toBe('tracefs (detached read-only mount): enabled_functions');
    const calls = g.runs.flat().map((c) => c.nr);
    expect(calls).toContain(sysno('fsmount'));
    expect(g.openFds).toBe(0);
  });

  it('reads a tracefs the guest has mounted, without a new mount', async () => {
    const g = traceGuest();
    g.detachedFs.clear();
    g.addFile(
      '/proc/self/mountinfo',
      '22 1 0:5 / / rw - rootfs rootfs rw\n30 22 0:12 / /sys/kernel/tracing rw - tracefs tracefs rw\n',
    );
    g.addFile('/sys/kernel/tracing/enabled_functions', ENABLED);
    g.addFile('/sys/kernel/tracing/kprobe_events', '');
    const rows = records((await runPlugin(tracing, { executor: g })).table);
    expect(rows.filter((r) => r.Kind === 'ftrace')).toHaveLength(4);
    expect(rows[0].Source).toBe('tracefs at /sys/kernel/tracing: enabled_functions');
    const fsopens = g.runs.flat().filter((c) => c.nr === sysno('fsopen'));
    expect(
      fsopens.map((c) => (c.args[0].kind === 'in' ? new TextDecoder().decode(c.args[0].data) : '')),
    ).toEqual(['debugfs\0']);
    // debugfs could not be mounted (fsopen ENODEV): a row says so.
    expect(rows.filter((r) => r.Kind === 'unavailable').map((r) => r.EVIDENCE)).toEqual([
      expect.stringMatching(/fsopen\(debugfs\)/),
    ]);
  });

  it('says so when the kernel lacks tracefs and debugfs: never a silently empty table', async () => {
    const g = kernelGuest();
    g.addFile('/proc/filesystems', 'nodev\tproc\n');
    g.addFile('/proc/self/mountinfo', '22 1 0:5 / / rw - rootfs rootfs rw\n');
    const rows = records((await runPlugin(tracing, { executor: g })).table);
    expect(rows.map((r) => [r.Kind, r.HOOKED])).toEqual([
      ['unavailable', false],
      ['unavailable', false],
      ['unavailable', false],
    ]);
    expect(rows.map((r) => r.EVIDENCE)).toEqual([
      'tracefs is not in /proc/filesystems (kernel without it)',
      'debugfs is not in /proc/filesystems (kernel without it)',
      'tracefs is not in /proc/filesystems (kernel without it)',
    ]);
  });
});
