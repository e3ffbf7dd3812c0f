/**
 * The shadow's root-context logic (src/shadow/root-context.ts) against a scripted guest:
 * which victims are refused and why, what the join asks of the kernel, and what the
 * verify step reports. The real thing is exercised on booted guests in
 * test/integration/root-context.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { sysnoOf, syscallName } from '../../src/abi/linux/syscalls.js';
import type { Call, CallResult, SyscallExecutor } from '../../src/sdk/syscall-types.js';
import {
  cgroup2RootFlags,
  contextRecheck,
  establishRootContext,
  PROC_PID_INIT_INO,
  PROC_USER_INIT_INO,
  readShadowContext,
  VictimRefusedError,
  ContextError,
} from '../../src/shadow/root-context.js';

const INIT_NS: Record<string, bigint> = {
  pid: PROC_PID_INIT_INO,
  user: PROC_USER_INIT_INO,
  mnt: 4026531841n,
  net: 4026531840n,
  uts: 0xeffffffen,
  ipc: 0xefffffffn,
  cgroup: 0xeffffffbn,
};

const FULL_CAPS = '000001ffffffffff';

interface Scenario {
  seccomp?: bigint;
  selfNs?: Partial<Record<string, bigint>>;
  selfCaps?: string;
  selfLsm?: string;
  initLsm?: string;
  fsopenErrno?: number;
  setnsErrno?: number;
  /** /proc/self/cgroup before the join (default: the root cgroup). */
  startCgroup?: string;
  /** After the join: what verify reads. */
  joined?: { nice?: number; cgroup?: string; rlimitNofile?: [bigint, bigint]; seccomp?: string };
}

/** A guest that answers the context batches from a scenario; records every call. */
class ScriptedGuest implements SyscallExecutor {
  readonly calls: string[] = [];
  private joined = false;
  private entered = false;
  private fds = new Map<number, string>();
  private next = 3;
  constructor(private readonly sc: Scenario) {}

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    const out: CallResult[] = [];
    for (const c of calls) {
      const name = syscallName(c.nr);
      const args = c.args.map((a, i) =>
        a.kind === 'result'
          ? out[a.index]!.ret
          : a.kind === 'int'
            ? a.value
            : a.kind === 'in'
              ? BigInt(i)
              : 0n,
      );
      const text = (i: number): string => {
        const a = c.args[i];
        return a?.kind === 'in' ? new TextDecoder().decode(a.data).replace(/\0$/, '') : '';
      };
      this.calls.push(
        `${name} ${c.args.map((a, i) => (a.kind === 'in' ? text(i) : String(args[i]))).join(' ')}`,
      );
      out.push(this.answer(name, c, args, text));
    }
    return out;
  }

  private answer(name: string, c: Call, args: bigint[], text: (i: number) => string): CallResult {
    const ok = (ret: bigint | number, ...outs: Uint8Array[]): CallResult => ({ ret: BigInt(ret), out: outs });
    const outSize = c.args.find((a) => a.kind === 'out');
    const size = outSize?.kind === 'out' ? outSize.size : 0;
    switch (name) {
      case 'prctl':
        return ok(this.sc.seccomp ?? 0n);
      case 'fsopen':
        if (this.sc.fsopenErrno) return ok(-this.sc.fsopenErrno);
        return ok(this.open(`fs:${text(0)}`));
      case 'fsmount':
        return args[0]! < 0n ? ok(-9) : ok(this.open('mnt'));
      case 'openat': {
        const path = text(1);
        if (path === 'cgroup.procs' || path.includes('/ns/') || path.endsWith('root') || path.endsWith('cwd'))
          return ok(this.open(path));
        return ok(this.open(path));
      }
      case 'read': {
        const path = this.fds.get(Number(args[0])) ?? '';
        const data = new TextEncoder().encode(this.file(path));
        return ok(data.length, data.slice(0, size));
      }
      case 'newfstatat': {
        const path = text(1);
        const buf = new Uint8Array(144);
        const v = new DataView(buf.buffer);
        const m = /(self|1)\/ns\/(\w+)$/.exec(path);
        if (m) {
          const self = m[1] === 'self';
          const entered = this.entered && ['net', 'uts', 'ipc', 'cgroup'].includes(m[2]!);
          const ino = self && !entered ? (this.sc.selfNs?.[m[2]!] ?? INIT_NS[m[2]!]!) : INIT_NS[m[2]!]!;
          v.setBigUint64(8, self && m[2] === 'mnt' && this.joined ? 4026532999n : ino, true);
        } else
          v.setBigUint64(
            8,
            path === '/' || path === '/proc/1/root' || path === '.' || path === '/proc/1/cwd' ? 2n : 7n,
            true,
          );
        return ok(0, buf);
      }
      case 'statfs': {
        const buf = new Uint8Array(120);
        new DataView(buf.buffer).setBigUint64(0, 0x9fa0n, true);
        return ok(0, buf);
      }
      case 'setns':
        if (this.sc.setnsErrno) return ok(-this.sc.setnsErrno);
        this.entered = true;
        return ok(0);
      case 'mount':
        if (text(1) === '/proc') this.joined = true;
        return ok(0);
      case 'getpriority':
        return ok(20 - (this.joined ? (this.sc.joined?.nice ?? 0) : 19));
      case 'sched_getaffinity': {
        const buf = new Uint8Array(size);
        buf[0] = 0b11;
        return ok(8, buf);
      }
      case 'prlimit64': {
        const buf = new Uint8Array(16);
        const v = new DataView(buf.buffer);
        const nofile = args[1] === 7n && args[0] === 0n && this.sc.joined?.rlimitNofile;
        v.setBigUint64(0, nofile ? nofile[0] : 1024n, true);
        v.setBigUint64(8, nofile ? nofile[1] : 4096n, true);
        return ok(0, buf);
      }
      default:
        return ok(0);
    }
  }

  private open(path: string): number {
    const fd = this.next++;
    this.fds.set(fd, path);
    return fd;
  }

  private file(path: string): string {
    const init = path.startsWith('1/') || path.startsWith('/proc/1/');
    if (path.endsWith('status')) {
      const caps = init ? FULL_CAPS : (this.sc.selfCaps ?? FULL_CAPS);
      const seccomp = init
        ? '0'
        : this.joined
          ? (this.sc.joined?.seccomp ?? '0')
          : String(this.sc.seccomp ?? 0n);
      return `Name:\tx\nPid:\t5\nNoNewPrivs:\t0\nSeccomp:\t${seccomp}\nCapInh:\t0000000000000000\nCapPrm:\t${caps}\nCapEff:\t${caps}\nCapBnd:\t${caps}\nCapAmb:\t0000000000000000\n`;
    }
    if (path.endsWith('attr/current'))
      return init ? (this.sc.initLsm ?? 'unconfined\n') : (this.sc.selfLsm ?? 'unconfined\n');
    if (path.endsWith('cgroup'))
      return !this.joined && this.sc.startCgroup ? this.sc.startCgroup : (this.sc.joined?.cgroup ?? '0::/\n');
    return '';
  }
}

describe('the shadow root context', () => {
  it('joins init and verifies a complete root context', async () => {
    const g = new ScriptedGuest({
      selfNs: { mnt: 4026532500n, net: 4026532501n },
      startCgroup: '0::/system.slice/x.service\n',
    });
    const ctx = await establishRootContext(g);
    expect(ctx.complete).toBe(true);
    expect(ctx.problems).toEqual([]);
    expect(ctx.namespaces.net).toBe(`net:[${INIT_NS.net}]`);
    expect(ctx.cpus).toBe(2);
    // The join asks for what the header says, private mounts before the new /proc.
    const join = g.calls.map((c) => c.split(' ')[0]);
    for (const n of ['mnt', 'net', 'uts', 'ipc', 'cgroup']) {
      const i = g.calls.findIndex((c) => new RegExp(`^openat \\d+ 1/ns/${n} 524288$`).test(c));
      expect(i, n).toBeGreaterThan(0);
      expect(g.calls[i + 1]).toMatch(/^setns \d+ 0$/);
    }
    const unshare = join.indexOf('unshare');
    const priv = g.calls.findIndex((c) => c.startsWith('mount none /'));
    const proc = g.calls.findIndex((c) => c.startsWith('mount proc /proc proc'));
    expect(unshare).toBeGreaterThan(0);
    expect(priv).toBeGreaterThan(unshare);
    expect(proc).toBeGreaterThan(priv);
    // cgroup v2: writing "0" to the root's cgroup.procs moves the writer itself.
    const procs = g.calls.findIndex((c) => /^openat \d+ cgroup.procs /.test(c));
    expect(g.calls[procs + 1]).toMatch(/^write \d+ 0 1$/);
    expect(g.calls.filter((c) => c.startsWith('chroot'))).toEqual(['chroot .']);
    expect(g.calls).toContain('setpriority 0 0 0');
  });

  it('makes no cgroup move when the shadow is in the root cgroup already (it costs an RCU grace period)', async () => {
    const g = new ScriptedGuest({});
    expect((await establishRootContext(g)).complete).toBe(true);
    expect(g.calls.some((c) => c.includes('cgroup.procs'))).toBe(false);
  });

  it.each([
    ['a seccomp filter', { seccomp: 2n }, /seccomp mode 2/],
    ['a child PID namespace', { selfNs: { pid: 4026532200n } }, /child PID namespace \(pid:\[4026532200\]\)/],
    ['a user namespace', { selfNs: { user: 4026532201n } }, /user namespace/],
    [
      'dropped capabilities',
      { selfCaps: '0000000000000000' },
      /capabilities dropped \(CapEff lacks 0x1ffffffffff/,
    ],
    [
      'no CAP_SYS_ADMIN for a procfs',
      { fsopenErrno: 1 },
      /cannot create a procfs: fsopen\(proc\) failed \(EPERM/,
    ],
    [
      'an LSM confinement',
      { selfLsm: 'docker-default (enforce)\n' },
      /LSM label 'docker-default \(enforce\)'/,
    ],
    ['a refused setns', { setnsErrno: 1 }, /cannot enter init's context: setns\(mnt\) EPERM/],
  ])('refuses a victim with %s, naming it', async (_what, sc: Scenario, reason) => {
    const g = new ScriptedGuest(sc);
    const err = await establishRootContext(g).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VictimRefusedError);
    expect((err as Error).message).toMatch(reason);
    // Nothing is mounted in a refused shadow, and the procfs fd is closed.
    expect(g.calls.some((c) => c.startsWith('mount proc'))).toBe(false);
  });

  it('reports what did not settle, and refuses the table unless a partial context is accepted', async () => {
    const sc: Scenario = {
      joined: { nice: 19, cgroup: '0::/system.slice/x.service\n', rlimitNofile: [16n, 16n] },
    };
    await expect(establishRootContext(new ScriptedGuest(sc))).rejects.toBeInstanceOf(ContextError);
    const ctx = await establishRootContext(new ScriptedGuest(sc), true);
    expect(ctx.complete).toBe(false);
    expect(ctx.problems).toEqual([
      'not in the root cgroup (0::/system.slice/x.service)',
      'nice 19',
      "rlimits differ from init's: nofile",
    ]);
  });

  it('verify alone flags a shadow whose namespaces are not init’s', async () => {
    const g = new ScriptedGuest({ selfNs: { net: 4026532777n } });
    const ctx = await readShadowContext(g);
    expect(ctx.complete).toBe(false);
    expect(ctx.problems[0]).toBe(`net namespace net:[4026532777] is not init's net:[${INIT_NS.net}]`);
    expect(g.calls.every((c) => !/^(setns|mount|unshare|chroot)/.test(c))).toBe(true);
  });

  it('knows every syscall it uses', () => {
    for (const n of [
      'fsopen',
      'fsconfig',
      'fsmount',
      'setns',
      'unshare',
      'mount',
      'chroot',
      'prlimit64',
      'statfs',
    ])
      expect(sysnoOf(n), n).toBeDefined();
  });
});

describe('cgroup2 root flags kept when the shadow mounts cgroup2', () => {
  it('reads the flags systemd set from the super options of cgroup2 mounts', () => {
    const mi = [
      '26 23 0:6 / /sys/kernel/security rw,nosuid - securityfs securityfs rw',
      '31 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot',
    ].join('\n');
    expect(cgroup2RootFlags(mi)).toEqual(['nsdelegate', 'memory_recursiveprot']);
    expect(cgroup2RootFlags('31 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n')).toEqual([]);
    expect(cgroup2RootFlags('1 0 0:1 / / rw - tmpfs none rw,nsdelegate\n')).toEqual([]);
    expect(cgroup2RootFlags(undefined)).toEqual([]);
    expect(cgroup2RootFlags('garbage - \n - cgroup2\n')).toEqual([]);
  });
});

describe("the quick re-check of a resident shadow's context (attach reuse)", () => {
  it('finds what a guest process can change from outside the shadow, with its calls placed after others', async () => {
    const sc: Scenario = {};
    const g = new ScriptedGuest(sc);
    const verified = await establishRootContext(g);
    expect(verified.complete).toBe(true);
    const nr = (n: string): number => sysnoOf(n)!;
    // Two calls of a plugin's batch first: the re-check's references are shifted past them.
    const before: Call[] = [
      {
        nr: nr('getpriority'),
        args: [
          { kind: 'int', value: 0n },
          { kind: 'int', value: 0n },
        ],
      },
      {
        nr: nr('getpriority'),
        args: [
          { kind: 'int', value: 0n },
          { kind: 'int', value: 0n },
        ],
      },
    ];
    const quick = contextRecheck(verified, before.length);
    expect(quick.calls.length).toBe(40);
    expect(quick.calls.map((c) => syscallName(c.nr))).not.toContain('setns');
    for (const c of quick.calls)
      for (const a of c.args) if (a.kind === 'result') expect(a.index).toBeGreaterThanOrEqual(before.length);
    expect(quick.problems(await g.run([...before, ...quick.calls]))).toEqual([]);
    // The guest renices the shadow and moves it to another cgroup, and lowers its rlimit.
    sc.joined = { nice: 7, cgroup: '0::/user.slice\n', rlimitNofile: [16n, 16n] };
    const found = quick.problems(await g.run([...before, ...quick.calls]));
    expect(found).toEqual([
      'not in the root cgroup (0::/user.slice)',
      'nice 7',
      "rlimits differ from init's: nofile",
    ]);
    // Results cut short (a batch that did not run whole) are a problem, never a pass.
    expect(quick.problems([])).toEqual(['the context re-check did not run whole']);
  });
});
