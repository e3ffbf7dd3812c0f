/**
 * The kernel-facing plugins of issue 17 (capabilities, ptrace, pscallstack, kthreads,
 * boottime, kallsyms, iomem, ebpf, netfilter) against a fake guest: their rows, their
 * cost in batches (the figures their headers state), and the read-only policy's terms for
 * the bpf(2), nf_tables netlink and iptables getsockopt queries. The fake answers bpf,
 * netlink and getsockopt itself and hands every other call to FakeGuest.
 */
import { describe, expect, it } from 'vitest';
import { BPF_PROG_GET_NEXT_ID, encodeIdAttr } from '../../src/abi/linux/bpf.js';
import { describeCaps } from '../../src/abi/linux/capabilities.js';
import { encodeNftDump, NETLINK_NETFILTER } from '../../src/abi/linux/nfnetlink.js';
import { parseIomem } from '../../src/abi/linux/proc/iomem.js';
import { parseKallsyms, parseStack } from '../../src/abi/linux/proc/kallsyms.js';
import { sysno } from '../../src/abi/linux/syscalls.js';
import { isAbsent, type AbsentValue } from '../../src/output/columns.js';
import { validateTable, type ResultTable } from '../../src/output/table.js';
import { boottime } from '../../src/plugins/boottime.js';
import { capabilities } from '../../src/plugins/capabilities.js';
import { ebpf } from '../../src/plugins/ebpf.js';
import { iomem } from '../../src/plugins/iomem.js';
import { kallsyms } from '../../src/plugins/kallsyms.js';
import { kthreads } from '../../src/plugins/kthreads.js';
import { netfilter } from '../../src/plugins/netfilter.js';
import { pscallstack } from '../../src/plugins/pscallstack.js';
import { ptrace } from '../../src/plugins/ptrace.js';
import { builtinPlugins } from '../../src/plugins/index.js';
import { describePlugins, pluginCatalog } from '../../src/cli/plugin-list.js';
import { decodeResults, encodeBatch, resultExtent } from '../../src/shadow/batch-codec.js';
import { LAYOUT } from '../../src/shadow/layout.js';
import {
  checkCall,
  PolicyExecutor,
  runPlugin,
  type Call,
  type CallArg,
  type CallResult,
  type PluginDefinition,
  type RowValue,
  type SyscallExecutor,
} from '../../src/sdk/index.js';
import { fakeProcGuest, fakeStat, fakeStatus, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

const int = (v: number | bigint): CallArg => ({ kind: 'int', value: BigInt(v) });

// ------------------------------------------------------------------ a fake kernel for bpf and netfilter

interface FakeBpfObj {
  kind: 'prog' | 'map' | 'link';
  id: number;
  info: Uint8Array;
}

/** Netlink message bytes: nlmsghdr + nfgenmsg + attributes. */
function nlmsg(type: number, family: number, attrs: Uint8Array): Uint8Array {
  const b = new Uint8Array(20 + attrs.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, b.length, true);
  dv.setUint16(4, type, true);
  b[16] = family;
  b.set(attrs, 20);
  return b;
}
function nla(type: number, data: Uint8Array): Uint8Array {
  const len = 4 + data.length;
  const b = new Uint8Array((len + 3) & ~3);
  new DataView(b.buffer).setUint16(0, len, true);
  new DataView(b.buffer).setUint16(2, type, true);
  b.set(data, 4);
  return b;
}
const cat = (...p: Uint8Array[]) => {
  const out = new Uint8Array(p.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of p) {
    out.set(x, o);
    o += x.length;
  }
  return out;
};
const s = (t: string) => new TextEncoder().encode(t + '\0');
const be32 = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, v, false);
  return b;
};
const be64 = (v: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), false);
  return b;
};

class KernelFake implements SyscallExecutor {
  bpf: FakeBpfObj[] = [];
  /** nf_tables answers by GET message type; undefined: nf_tables not loaded. */
  nft?: Map<number, Uint8Array[]>;
  /** iptables tables: name → [getinfo bytes, entries bytes]. */
  ipt = new Map<string, [Uint8Array, Uint8Array]>();
  private fds = new Map<number, { what: string; queue?: Uint8Array[]; obj?: FakeBpfObj }>();
  private nextFd = 500;

  constructor(readonly g: FakeGuest) {}

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    const done: CallResult[] = [];
    for (const c of calls) {
      const args = c.args.map((a) => (a.kind === 'result' ? int(done[a.index].ret) : a));
      const mine = this.exec({ nr: c.nr, args });
      done.push(mine ?? (await this.g.run([{ nr: c.nr, args }]))[0]);
    }
    return done;
  }

  private exec(c: Call): CallResult | undefined {
    const n = (i: number) =>
      c.args[i]?.kind === 'int' ? Number((c.args[i] as { value: bigint }).value) : NaN;
    const fail = (e: number): CallResult => ({
      ret: BigInt(-e),
      out: c.args.filter((a) => a.kind === 'out').map(() => new Uint8Array(0)),
    });
    const fd = (what: string, extra: object = {}) => {
      const f = this.nextFd++;
      this.fds.set(f, { what, ...extra });
      return { ret: BigInt(f), out: [] };
    };
    switch (c.nr) {
      case sysno('bpf'): {
        const cmd = n(0);
        const a = c.args[1];
        if (cmd === 11 || cmd === 12 || cmd === 31) {
          if (a.kind !== 'out' || !a.init) throw new Error('fake: NEXT_ID attr must be in-out');
          const kind = cmd === 11 ? 'prog' : cmd === 12 ? 'map' : 'link';
          const start = new DataView(a.init.buffer, a.init.byteOffset).getUint32(0, true);
          const next = this.bpf.filter((o) => o.kind === kind && o.id > start).sort((x, y) => x.id - y.id)[0];
          if (!next) return fail(2);
          const out = new Uint8Array(a.size);
          out.set(a.init);
          new DataView(out.buffer).setUint32(4, next.id, true);
          return { ret: 0n, out: [out] };
        }
        if (cmd === 13 || cmd === 14 || cmd === 30) {
          if (a.kind !== 'in') throw new Error('fake: GET_FD_BY_ID attr must be in');
          const kind = cmd === 13 ? 'prog' : cmd === 14 ? 'map' : 'link';
          const id = new DataView(a.data.buffer, a.data.byteOffset).getUint32(0, true);
          const obj = this.bpf.find((o) => o.kind === kind && o.id === id);
          return obj ? fd('bpf', { obj }) : fail(2);
        }
        if (cmd === 15) {
          if (a.kind !== 'out' || !a.init) throw new Error('fake: GET_INFO attr must be in-out');
          const f = this.fds.get(new DataView(a.init.buffer, a.init.byteOffset).getUint32(0, true));
          if (!f?.obj) return fail(9);
          const out = new Uint8Array(a.size);
          out.set(a.init);
          // The fake has no guest addresses: info lands at the self-relative offset 16.
          out.set(f.obj.info.subarray(0, a.size - 16), 16);
          return { ret: 0n, out: [out] };
        }
        return fail(1);
      }
      case sysno('socket'):
        if (n(0) === 16 && n(2) === NETLINK_NETFILTER) return this.nft ? fd('nl', { queue: [] }) : fail(93);
        if (n(0) === 2 && n(2) === 255) return fd('raw');
        return undefined;
      case sysno('sendto'): {
        const f = this.fds.get(n(0));
        const a = c.args[1];
        if (!f || a.kind !== 'in') return fail(9);
        const type = new DataView(a.data.buffer, a.data.byteOffset).getUint16(4, true);
        const done = new Uint8Array(20);
        new DataView(done.buffer).setUint32(0, 20, true);
        new DataView(done.buffer).setUint16(4, 3, true);
        f.queue = [...(this.nft!.get(type & 0xff) ?? []), done];
        return { ret: BigInt(a.data.length), out: [] };
      }
      case sysno('recvfrom'): {
        const f = this.fds.get(n(0));
        const msg = f?.queue?.shift();
        if (!msg) return fail(11);
        return { ret: BigInt(msg.length), out: [msg] };
      }
      case sysno('getsockopt'): {
        const a = c.args[3];
        if (a.kind !== 'out' || !a.init) throw new Error('fake: optval must be in-out');
        const name = new TextDecoder().decode(a.init.subarray(0, a.init.indexOf(0)));
        const t = this.ipt.get(name);
        if (!t) return fail(2);
        const out = new Uint8Array(a.size);
        out.set(a.init);
        if (n(2) === 64) out.set(t[0].subarray(32), 32);
        else out.set(t[1], 40);
        return { ret: 0n, out: [out] };
      }
      case sysno('close'):
        return this.fds.delete(n(0)) ? { ret: 0n, out: [] } : undefined;
      default:
        return undefined;
    }
  }
}

async function run(def: PluginDefinition, executor: SyscallExecutor, options: Record<string, unknown> = {}) {
  const r = await runPlugin(def, { executor: new PolicyExecutor(executor, { plugin: def.name }), options });
  return { rows: records(r.table), runs: r.runs, calls: r.calls, errors: r.table.errors };
}

function status(pid: number, comm: string, extra: string): string {
  return fakeStatus(pid, comm) + extra;
}
const CAPS = (inh: string, prm: string, eff: string, bnd: string, amb: string) =>
  `CapInh:\t${inh}\nCapPrm:\t${prm}\nCapEff:\t${eff}\nCapBnd:\t${bnd}\nCapAmb:\t${amb}\n`;

describe('capabilities', () => {
  it('names every set and keeps the masks, in 3 batches', async () => {
    const g = fakeProcGuest(3);
    g.addFile(
      '/proc/2/task/2/status',
      status(
        2,
        'capper',
        CAPS(
          '0000000000002400',
          '000001fffffeffff',
          '000001fffffbffff',
          '000001fffffeffff',
          '0000000000002000',
        ) + 'TracerPid:\t0\n',
      ),
    );
    for (const p of [1, 3])
      g.addFile(
        `/proc/${p}/task/${p}/status`,
        status(
          p,
          `proc${p}`,
          CAPS(
            '0000000000000000',
            '000001ffffffffff',
            '000001ffffffffff',
            '000001ffffffffff',
            '0000000000000000',
          ),
        ),
      );
    const { rows, runs } = await run(capabilities, new KernelFake(g));
    expect(runs).toBe(3);
    const r = rows.find((x) => x.Pid === 2)!;
    expect(r.cap_inheritable).toBe('CAP_NET_BIND_SERVICE, CAP_NET_RAW');
    expect(r.cap_ambient).toBe('CAP_NET_RAW');
    expect(r.CapBnd).toBe(0x1fffffeffffn);
    expect(String(r.cap_bounding)).not.toContain('CAP_SYS_MODULE');
    expect(rows.find((x) => x.Pid === 1)!.cap_effective).toBe('all');
    expect(describeCaps(0n)).toBe('-');
  });
});

describe('ptrace', () => {
  it('pairs a tracee with its tracer, both sides; --pid reads the tracer too (4 batches)', async () => {
    const g = fakeProcGuest(3);
    for (const p of [1, 2, 3]) g.addFile(`/proc/${p}/task/${p}/status`, status(p, `proc${p}`, ''));
    g.addFile('/proc/2/task/2/status', status(2, 'tracee', '').replace('TracerPid:\t0', 'TracerPid:\t3'));
    const all = await run(ptrace, new KernelFake(g));
    expect(all.runs).toBe(3);
    expect(
      all.rows.map((r) => [r.PID, r['Tracer TID'], r['Tracee TID']].map((v) => (isAbsent(v) ? null : v))),
    ).toEqual([
      [3, null, 2],
      [2, 3, null],
    ]);
    const one = await run(ptrace, new KernelFake(g), { pid: [2] });
    expect(one.runs).toBe(4);
    expect(one.rows).toHaveLength(1);
    expect(one.rows[0]['Tracer Process']).toBe('proc3');
  });
});

const KALLSYMS =
  'ffffffff81000000 T _stext\nffffffff810ba7a0 t __do_sys_pause\nffffffff810ba800 T kthread\n' +
  'ffffffff810c5e10 t rescuer_thread\nffffffff810c6000 T __ksymtab_kthread\nffffffffc0001000 t nft_do_chain\t[nf_tables]\n' +
  'ffffffffc0002000 t dup\t[mod_a]\nffffffffc0003000 t dup\t[mod_a]\n';

describe('pscallstack and kthreads', () => {
  function guest(): FakeGuest {
    const g = fakeProcGuest(3);
    g.addFile('/proc/kallsyms', KALLSYMS);
    g.addFile('/proc/1/task/1/stack', '[<0>] __do_sys_pause+0x24/0x50\n[<0>] do_syscall_64+0x5d/0xb0\n');
    g.addFile('/proc/1/task/1/comm', 'sleeper\n');
    g.addFile('/proc/2/task/2/stack', '', { openErrno: 13 });
    g.addFile('/proc/2/task/2/comm', 'hidden\n');
    g.addFile('/proc/3/task/3/stack', '');
    g.addFile('/proc/3/task/3/comm', 'running\n');
    return g;
  }

  it('symbolises frames with kallsyms, and says when the kernel hides a stack (5 batches: kallsyms read to its end, then closed)', async () => {
    const { rows, runs, errors } = await run(pscallstack, new KernelFake(guest()));
    expect(runs).toBe(5);
    const one = rows.filter((r) => r.TID === 1);
    expect(one.map((r) => r.Name)).toEqual(['__do_sys_pause', 'do_syscall_64']);
    expect(one[0].Value).toBe(0xffffffff810ba7c4n);
    expect(one[0].Type).toBe('t');
    expect(isAbsent(one[1].Value)).toBe(true); // not in this kallsyms
    expect((rows.find((r) => r.TID === 2)!.Name as AbsentValue).reason).toMatch(/hides the stack/);
    expect(errors.join('\n')).toMatch(/not readable/);
  });

  it('finds each kernel thread’s function above kthread() (4 batches)', async () => {
    const g = guest();
    g.addFile('/proc/2/stat', fakeStat(2, 'kthreadd', { ppid: 0 }).replace(' 4194560 ', ' 2129984 '));
    g.addFile('/proc/2/stack', '', { openErrno: 13 });
    g.addFile(
      '/proc/3/stat',
      fakeStat(3, 'rcu_gp', { ppid: 2, state: 'I' }).replace(' 4194560 ', ' 69238880 '),
    );
    g.addFile(
      '/proc/3/stack',
      '[<0>] rescuer_thread+0x2e5/0x3c0\n[<0>] kthread+0xe8/0x110\n[<0>] ret_from_fork+0x22/0x30\n',
    );
    g.addFile('/proc/3/wchan', 'rescuer_thread');
    const { rows, runs } = await run(kthreads, new KernelFake(g));
    expect(runs).toBe(4);
    expect(rows.map((r) => r.TID)).toEqual([2, 3]);
    expect(rows[1]).toMatchObject({
      Symbol: 'rescuer_thread',
      Module: 'kernel',
      'Handler Address': 0xffffffff810c5e10n,
      WCHAN: 'rescuer_thread',
    });
    expect(isAbsent(rows[0].Symbol)).toBe(true);
  });

  it('parses /proc/PID/stack lines with modules', () => {
    const { frames } = parseStack('[<0>] nft_do_chain+0x10/0x400 [nf_tables]\n[<ffffffff81000000>] weird\n');
    expect(frames[0]).toMatchObject({ symbol: 'nft_do_chain', offset: 0x10n, module: 'nf_tables' });
    expect(frames[1].printed).toBe(0xffffffff81000000n);
  });
});

describe('kallsyms', () => {
  it('types, sizes, exports and modules; 7 MiB in 4 batches (3 of page reads, one close)', async () => {
    const g = fakeProcGuest(1);
    g.addFile('/proc/kallsyms', KALLSYMS);
    const { rows, runs } = await run(kallsyms, new KernelFake(g));
    expect(runs).toBe(2);
    const kt = rows.find((r) => r.SymbolName === 'kthread')!;
    expect(kt).toMatchObject({
      Exported: true,
      ModuleName: 'kernel',
      SubSystem: 'core',
      Type: 'T',
      Size: 0xb610n,
    });
    expect(rows.find((r) => r.SymbolName === 'nft_do_chain')).toMatchObject({
      ModuleName: 'nf_tables',
      SubSystem: 'module',
    });
    const big = fakeProcGuest(1);
    const line = 'ffffffff81000000 T some_symbol_name_of_a_kernel\n';
    big.addFile('/proc/kallsyms', new TextEncoder().encode(line.repeat(Math.ceil((7 << 20) / line.length))));
    const r2 = await run(kallsyms, new KernelFake(big));
    expect(r2.runs).toBe(4);
    expect(r2.rows).toHaveLength(Math.ceil((7 << 20) / line.length));
    const broken = parseKallsyms('0000000000000000 T x\nbroken\n');
    expect(broken.symbols).toHaveLength(1);
    expect(broken.errors.map((e) => e.message)).toEqual([expect.stringContaining('/proc/kallsyms:2')]);
  }, 60_000);
});

describe('iomem', () => {
  it('is the resource tree with depths, in 1 batch', async () => {
    const g = fakeProcGuest(1);
    g.addFile(
      '/proc/iomem',
      '00000000-00000fff : Reserved\n00100000-0ffdffff : System RAM\n  01000000-01e01d31 : Kernel code\n',
    );
    const { rows, runs } = await run(iomem, new KernelFake(g));
    expect(runs).toBe(1);
    expect(rows.map((r) => [r.Name, r.Depth, r.Size])).toEqual([
      ['Reserved', 0, 4096n],
      ['System RAM', 0, 0xfee0000n],
      ['Kernel code', 1, 0xe01d32n],
    ]);
    expect(parseIomem('0-1 : x\n   0-1 : odd indent\n').bad).toEqual([2]);
  });
});

describe('boottime', () => {
  it('boot time per time namespace from the clocks, in 4 batches', async () => {
    const g = fakeProcGuest(2);
    g.addLink('/proc/1/ns/time', 'time:[4026531834]');
    g.addLink('/proc/2/ns/time', 'time:[4026531834]');
    g.addFile('/sys/devices/system/clocksource/clocksource0/current_clocksource', 'tsc\n');
    g.addFile('/sys/devices/system/clocksource/clocksource0/available_clocksource', 'tsc hpet\n');
    g.addFile('/proc/1/timens_offsets', 'monotonic           0         0\nboottime            0         0\n');
    const fake = new KernelFake(g);
    const { rows, runs } = await run(boottime, {
      run: async (calls) => {
        // clock_gettime: REALTIME 1700000100.5 s, BOOTTIME 100.25 s.
        if (calls[0]?.nr === sysno('clock_gettime'))
          return calls.map((c) => {
            const ts = new Uint8Array(16);
            const dv = new DataView(ts.buffer);
            const real = (c.args[0] as { value: bigint }).value === 0n;
            dv.setBigInt64(0, real ? 1700000100n : 100n, true);
            dv.setBigInt64(8, real ? 500_000_000n : 250_000_000n, true);
            return { ret: 0n, out: [ts] };
          });
        return fake.run(calls);
      },
    });
    expect(runs).toBe(4);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      'TIME NS': 4026531834,
      'Boot Time': 1700000000250,
      BTIME: 1700000000000,
      Clocksource: 'tsc',
      Processes: 2,
    });
  });
});

/** bpf_prog_info / bpf_map_info bytes as the kernel fills them. */
function progInfo(id: number, name: string, mapIds: number[]): Uint8Array {
  const b = new Uint8Array(256 + 256);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 1, true); // socket_filter
  dv.setUint32(4, id, true);
  b.set([0x33, 0x40, 0xc3, 0x6c, 0x32, 0x1a, 0xd9, 0xdb], 8);
  dv.setUint32(20, 32, true);
  dv.setBigUint64(40, 5_000_000_000n, true);
  dv.setUint32(52, mapIds.length, true);
  b.set(new TextEncoder().encode(name), 64);
  mapIds.forEach((m, i) => dv.setUint32(256 + 4 * i, m, true));
  return b;
}
function mapInfo(id: number, name: string): Uint8Array {
  const b = new Uint8Array(128);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 2, true); // array
  dv.setUint32(4, id, true);
  dv.setUint32(8, 4, true);
  dv.setUint32(12, 8, true);
  dv.setUint32(16, 4, true);
  b.set(new TextEncoder().encode(name), 24);
  return b;
}

describe('ebpf', () => {
  it('walks ids, reads each object’s info and finds who holds it (8 batches)', async () => {
    const g = fakeProcGuest(3);
    g.addLink('/proc/3/fd/3', 'anon_inode:bpf-map');
    g.addLink('/proc/3/fd/4', 'anon_inode:bpf-prog');
    g.addFile('/proc/3/fdinfo/3', 'pos:\t0\nmap_type:\t2\nmap_id:\t4\n');
    g.addFile('/proc/3/fdinfo/4', 'pos:\t0\nprog_type:\t1\nprog_id:\t7\n');
    g.addFile('/proc/3/comm', 'labkern\n');
    const k = new KernelFake(g);
    k.bpf = [
      { kind: 'prog', id: 7, info: progInfo(7, 'vmilab_sockflt', [4]) },
      { kind: 'map', id: 4, info: mapInfo(4, 'vmilab_map') },
    ];
    const { rows, runs, errors } = await run(ebpf, k);
    expect(errors).toEqual([]);
    expect(runs).toBe(8);
    expect(rows.map((r) => [r.Kind, r.ID, r.Name, r.Type])).toEqual([
      ['prog', 7, 'vmilab_sockflt', 'socket_filter'],
      ['map', 4, 'vmilab_map', 'array'],
    ]);
    expect(rows[0]).toMatchObject({
      Tag: '3340c36c321ad9db',
      Maps: '4',
      Holders: '3(labkern):4',
      'Load Time': 1700000005000,
    });
    expect(rows[1].Holders).toBe('3(labkern):3');
  });

  it('ids above the first window take one more batch each', async () => {
    const g = fakeProcGuest(1);
    const k = new KernelFake(g);
    k.bpf = [
      { kind: 'prog', id: 1000, info: progInfo(1000, 'late', []) },
      { kind: 'prog', id: 3, info: progInfo(3, 'early', []) },
    ];
    const { rows, runs } = await run(ebpf, k);
    expect(rows.map((r) => r.ID)).toEqual([3, 1000]);
    // 2 id windows, fds, info, /proc/stat, /proc listing, fd directories (no descriptors: no more).
    expect(runs).toBe(7);
  });
});

describe('netfilter', () => {
  const TABLE = nlmsg((10 << 8) | 0, 1, cat(nla(1, s('vmilab')), nla(4, be64(1))));
  const CHAIN = nlmsg(
    (10 << 8) | 3,
    1,
    cat(
      nla(1, s('vmilab')),
      nla(2, be64(1)),
      nla(3, s('input')),
      nla(4, cat(nla(1, be32(1)), nla(2, be32(0)))),
      nla(5, be32(1)),
      nla(7, s('filter')),
    ),
  );
  const expr = (name: string, data: Uint8Array) => nla(1, cat(nla(1, s(name)), nla(2, data)));
  const RULE = nlmsg(
    (10 << 8) | 6,
    1,
    cat(
      nla(1, s('vmilab')),
      nla(2, s('input')),
      nla(3, be64(2)),
      nla(
        4,
        cat(
          expr('cmp', cat(nla(1, be32(1)), nla(2, be32(0)), nla(3, nla(1, new Uint8Array([0x7a, 0x69]))))),
          expr('counter', cat(nla(1, be64(60)), nla(2, be64(1)))),
          expr('immediate', cat(nla(1, be32(0)), nla(2, nla(2, nla(1, be32(0)))))),
        ),
      ),
      nla(7, new Uint8Array([0, 12, ...s('vmilab-rule')])),
    ),
  );
  /** filter table: INPUT (policy entry at 0), FORWARD (152), OUTPUT (304), ERROR at 456. */
  function iptFilter(): [Uint8Array, Uint8Array] {
    const entry = (target: string, verdict?: number, errname?: string) => {
      const e = new Uint8Array(152);
      const dv = new DataView(e.buffer);
      dv.setUint16(88, 112, true);
      dv.setUint16(90, 152, true);
      dv.setUint16(112, 40, true);
      e.set(new TextEncoder().encode(target), 114);
      if (verdict !== undefined) dv.setInt32(144, verdict, true);
      if (errname) e.set(new TextEncoder().encode(errname), 144);
      return e;
    };
    const entries = cat(entry('', -2), entry('', -2), entry('', -1), entry('ERROR', undefined, 'ERROR'));
    const info = new Uint8Array(84);
    const dv = new DataView(info.buffer);
    dv.setUint32(32, 0b01110, true);
    [0, 0, 152, 304, 0].forEach((v, i) => dv.setUint32(36 + 4 * i, v, true));
    [0, 0, 152, 304, 0].forEach((v, i) => dv.setUint32(56 + 4 * i, v, true));
    dv.setUint32(76, 4, true);
    dv.setUint32(80, entries.length, true);
    return [info, entries];
  }

  it('lists nf_tables tables, chains and rules, and the iptables filter table (5 batches)', async () => {
    const g = fakeProcGuest(1);
    g.addLink('/proc/self/ns/net', 'net:[4026531840]');
    g.addFile('/proc/net/ip_tables_names', 'filter\n');
    const k = new KernelFake(g);
    k.nft = new Map([
      [1, [TABLE]],
      [4, [CHAIN]],
      [7, [RULE]],
    ]);
    k.ipt.set('filter', iptFilter());
    const { rows, runs, errors } = await run(netfilter, k);
    expect(errors).toEqual([]);
    expect(runs).toBe(5);
    expect(rows.map((r) => [r.Module, r.Kind, r.Table, r.Chain, r.Hook, r.Policy])).toEqual([
      ['nf_tables', 'table', 'vmilab', '', '', ''],
      ['nf_tables', 'chain', 'vmilab', 'input', 'input', 'accept'],
      ['nf_tables', 'rule', 'vmilab', 'input', 'input', ''],
      ['ip_tables', 'table', 'filter', '', '', ''],
      ['ip_tables', 'chain', 'filter', 'INPUT', 'input', 'ACCEPT'],
      ['ip_tables', 'chain', 'filter', 'FORWARD', 'forward', 'ACCEPT'],
      ['ip_tables', 'chain', 'filter', 'OUTPUT', 'output', 'DROP'],
    ]);
    expect(rows[2]).toMatchObject({
      Rule: 'cmp eq reg 1 0x7a69 ; counter packets 1 bytes 60 ; immediate drop',
      Packets: 1n,
      Bytes: 60n,
      Comment: 'vmilab-rule',
      'Net NS': 4026531840,
    });
  });

  it('without nf_tables or ip_tables: no rows, no warning', async () => {
    const g = fakeProcGuest(1);
    const { rows, errors } = await run(netfilter, new KernelFake(g));
    expect(rows).toEqual([]);
    expect(errors).toEqual([]);
  });
});

describe('the read-only policy for bpf, nf_tables and iptables', () => {
  const ok = (calls: Call[], i = calls.length - 1) =>
    checkCall(calls[i], { plugin: 't' }, calls) === undefined;
  const bpf = (cmd: number): Call => ({
    nr: sysno('bpf'),
    args: [int(cmd), { kind: 'in', data: encodeIdAttr(1) }, int(12)],
  });
  it('allows the bpf queries only', () => {
    for (const cmd of [11, 12, 13, 14, 15, 30, 31]) expect(ok([bpf(cmd)])).toBe(true);
    // MAP_CREATE, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, PROG_LOAD, OBJ_PIN, PROG_ATTACH, LINK_DETACH
    for (const cmd of [0, 2, 3, 5, 6, 8, 34, 99]) expect(ok([bpf(cmd)])).toBe(false);
    expect(BPF_PROG_GET_NEXT_ID).toBe(11);
  });
  it('allows one nf_tables GET on a NETLINK_NETFILTER socket of the batch, nothing else', () => {
    const sock: Call = { nr: sysno('socket'), args: [int(16), int(3), int(NETLINK_NETFILTER)] };
    const send = (data: Uint8Array, fd: CallArg = { kind: 'result', index: 0 }): Call => ({
      nr: sysno('sendto'),
      args: [fd, { kind: 'in', data }, int(data.length), int(0), int(0), int(0)],
    });
    expect(ok([sock])).toBe(true);
    expect(ok([sock, send(encodeNftDump(7))])).toBe(true);
    const newTable = encodeNftDump(0);
    expect(ok([sock, send(newTable)])).toBe(false);
    expect(ok([sock, send(encodeNftDump(25))])).toBe(false); // GETRULE_RESET zeroes counters
    expect(ok([sock, send(encodeNftDump(7), int(3))])).toBe(false); // an inherited fd
    const wrongProto: Call = { nr: sysno('socket'), args: [int(16), int(3), int(0)] };
    expect(ok([wrongProto])).toBe(false);
  });
  it('allows IPT_SO_GET_INFO/ENTRIES on a raw socket of the batch only', () => {
    const raw: Call = { nr: sysno('socket'), args: [int(2), int(3), int(255)] };
    const get = (opt: number, fd: CallArg = { kind: 'result', index: 0 }): Call => ({
      nr: sysno('getsockopt'),
      args: [
        fd,
        int(0),
        int(opt),
        { kind: 'out', size: 84, keep: 'all', init: new Uint8Array(84), pointers: [] },
        { kind: 'in', data: new Uint8Array(4) },
      ],
    });
    expect(ok([raw, get(64)])).toBe(true);
    expect(ok([raw, get(65)])).toBe(true);
    expect(ok([raw, get(66)])).toBe(false);
    expect(ok([raw, get(64, int(5))])).toBe(false);
    expect(ok([{ nr: 54 /* setsockopt */, args: [int(3), int(0), int(64)] }])).toBe(false);
  });
});

describe('in-out buffers in the shadow batch encoding', () => {
  it('writes init with the inputs, makes self-relative pointers absolute, reads it back', () => {
    const base = 0x7f00_0000_0000n;
    const init = new Uint8Array(32);
    new DataView(init.buffer).setBigUint64(8, 16n, true);
    const calls: Call[] = [
      { nr: 321, args: [int(15), { kind: 'out', size: 32, keep: 'all', init, pointers: [8] }, int(16)] },
      { nr: 0, args: [int(3), { kind: 'out', size: 8, keep: 'ret' }, int(8)] },
    ];
    const b = encodeBatch(calls, base);
    expect(b.input.length).toBe(32);
    const addr = base + BigInt(LAYOUT.data);
    expect(b.entries.readBigUInt64LE(16)).toBe(addr);
    expect(b.input.readBigUInt64LE(8)).toBe(addr + 16n);
    const ext = resultExtent(b, [0n, 8n]);
    expect(ext).toEqual({ start: 0, end: 40 });
    const data = Buffer.alloc(40, 7);
    const res = decodeResults(b, [0n, 8n], data, ext.start);
    expect(res[0].out[0].length).toBe(32);
    expect(res[1].out[0].length).toBe(8);
    const bad = [{ nr: 321, args: [{ kind: 'out', size: 16, keep: 'all', init, pointers: [8] }] }] as Call[];
    expect(() => encodeBatch(bad, base)).toThrow(/in-out buffer/);
  });
});

describe('registry', () => {
  it('names every issue-17 plugin with its Volatility module', () => {
    const names = Object.fromEntries(builtinPlugins.map((p) => [p.name, p.volatilityName]));
    expect(names).toMatchObject({
      capabilities: 'linux.capabilities',
      ptrace: 'linux.ptrace',
      pscallstack: 'linux.pscallstack',
      kthreads: 'linux.kthreads',
      boottime: 'linux.boottime',
      kallsyms: 'linux.kallsyms',
      iomem: 'linux.iomem',
      ebpf: 'linux.ebpf',
      netfilter: 'linux.malware.netfilter',
    });
    const listing = describePlugins(builtinPlugins);
    expect(listing).toContain('netfilter  (v1.0.0, Volatility linux.malware.netfilter)');
    expect(listing).toContain('ebpf  (v1.0.0, Volatility linux.ebpf)');
    expect(pluginCatalog(builtinPlugins).find((p) => p.name === 'kthreads')?.volatilityName).toBe(
      'linux.kthreads',
    );
  });
});
