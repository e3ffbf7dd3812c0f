/**
 * The shadow's context: whatever task it was forked from, the shadow is moved into the
 * guest's root context (the one PID 1 runs in) and verified there before any plugin batch
 * runs; a victim whose context cannot be fixed is refused (the caller then borrows another
 * task).
 *
 * Everything here runs as ordinary batches inside the new shadow, with the guest kernel's
 * own rules (kernel sources named per step):
 * 1. probe   a fresh procfs of the shadow's PID namespace (fsopen/fsmount, fs/fsopen.c),
 *            detached, so no mount made by a guest process can cover or fake it. Through
 *            it: the shadow's and init's namespace inodes, status (Seccomp, caps), LSM
 *            label, and init's rlimits. Refused: a child PID namespace (the initial one has
 *            the fixed inode PROC_PID_INIT_INO, include/linux/proc_ns.h: a task cannot
 *            leave its PID namespace), a user namespace other than init's, a seccomp filter
 *            (kernel/seccomp.c: filters are never removed), capabilities init has and the
 *            shadow lacks (dropped caps are gone for good), an LSM label other than init's.
 * 2. join    setns into init's mount, network, UTS, IPC and cgroup namespaces
 *            (kernel/nsproxy.c), init's root and cwd (fchdir + chroot through
 *            /proc/1/root, /proc/1/cwd), then a private mount namespace of its own
 *            (unshare + MS_REC|MS_PRIVATE: nothing it mounts propagates into the guest).
 * 3. settle  a fresh procfs mounted on /proc in that private namespace (only after step 2
 *            made every mount private), the root cgroup when it is elsewhere (cgroup.procs
 *            of a fresh cgroup2 mount, given the flags the guest's cgroup2 mount shows,
 *            since a new mount re-applies them hierarchy-wide; kernel/cgroup/cgroup.c:
 *            writing 0 moves the writer),
 *            init's rlimits, nice 0, SCHED_OTHER, every CPU. A cgroup move and a mount
 *            release each wait for an RCU grace period (tens of ms under TCG): the move is
 *            skipped when not needed, and the probe's procfs is never released while the
 *            shadow lives.
 * 4. verify  read back through the new /proc and compare with PID 1: the report below.
 * Cost: 4 batches of ~30–80 calls, once per shadow (the verify batch again when a resident
 * shadow is reused).
 */
import { O_CLOEXEC, O_DIRECTORY, O_RDONLY, O_WRONLY, AT_FDCWD } from '../abi/linux/flags.js';
import { parsePidStatus } from '../abi/linux/proc/pid-status.js';
import { errnoName } from '../abi/linux/errno.js';
import { sysnoOf } from '../abi/linux/syscalls.js';
import type { Call, CallArg, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';

/** Namespaces the shadow shares with init (its mount namespace is a private copy of init's). */
export const NAMESPACES = ['pid', 'user', 'mnt', 'net', 'uts', 'ipc', 'cgroup'] as const;
export type NamespaceName = (typeof NAMESPACES)[number];
/** Namespaces the shadow joins with setns (pid and user cannot be joined: checked instead). */
const JOINED = ['mnt', 'net', 'uts', 'ipc', 'cgroup'] as const;

/** Inode of the initial PID namespace (include/linux/proc_ns.h, PROC_PID_INIT_INO). */
export const PROC_PID_INIT_INO = 0xeffffffcn;
/** Inode of the initial user namespace (PROC_USER_INIT_INO). */
export const PROC_USER_INIT_INO = 0xeffffffdn;
const PROC_SUPER_MAGIC = 0x9fa0n;
/** RLIMIT_CPU .. RLIMIT_RTTIME (asm-generic/resource.h). */
const RLIMIT_COUNT = 16;
const RLIMIT_NAMES = [
  'cpu', 'fsize', 'data', 'stack', 'core', 'rss', 'nproc', 'nofile',
  'memlock', 'as', 'locks', 'sigpending', 'msgqueue', 'nice', 'rtprio', 'rttime',
] as const; // prettier-ignore
const FSOPEN_CLOEXEC = 1n;
const FSCONFIG_SET_FLAG = 0n;
const FSCONFIG_CMD_CREATE = 6n;
const FSMOUNT_CLOEXEC = 1n;
const MOUNT_ATTR_NOSUID_NODEV_NOEXEC = 0x2n | 0x4n | 0x8n;
const MS_NOSUID_NODEV_NOEXEC = 0x2n | 0x4n | 0x8n;
const MS_REC_PRIVATE = 0x4000n | 0x40000n;
const CLONE_NEWNS = 0x20000n;
const PR_GET_SECCOMP = 21n;
const CPU_MASK_BYTES = 128; // 1024 CPUs
const STAT_SIZE = 144; // struct stat, x86-64
const STATFS_SIZE = 120; // struct statfs, x86-64
const READ_MAX = 8192;

/** What the shadow's context is, as read back from inside the guest (table metadata). */
export interface ShadowContext {
  /** The shadow's namespaces as `type:[inode]`; mnt is the shadow's private copy of init's. */
  namespaces: Record<NamespaceName, string>;
  /** PID 1's namespaces, for comparison. */
  initNamespaces: Record<NamespaceName, string>;
  /** /proc/self/status Seccomp (0 = none). */
  seccomp: number;
  noNewPrivs: boolean;
  /** Capability sets as the kernel prints them (hex): effective, permitted, bounding, inheritable, ambient. */
  capabilities: {
    effective: string;
    permitted: string;
    bounding: string;
    inheritable: string;
    ambient: string;
  };
  /** /proc/self/cgroup, one entry per hierarchy (`0::/` on cgroup v2). */
  cgroup: string[];
  /** /proc/self/attr/current (LSM label), '' when no LSM reports one. */
  lsm: string;
  /** Root and cwd are init's (same device and inode). */
  root: boolean;
  cwd: boolean;
  /** /proc is a procfs of the initial PID namespace mounted by the shadow itself. */
  procfs: boolean;
  nice: number;
  /** sched_getscheduler: 0 = SCHED_OTHER. */
  policy: number;
  /** Number of CPUs in the shadow's affinity mask. */
  cpus: number;
  /** rlimits that differ from init's (names), empty when all equal. */
  rlimitsDiffer: string[];
  /** Everything above is as required. */
  complete: boolean;
  /** What is not as required (empty when complete). */
  problems: string[];
}

/** The victim's context cannot be made the root context: borrow another task. */
export class VictimRefusedError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** The root context was established but does not verify (and the user did not accept that). */
export class ContextError extends Error {}

const enc = new TextEncoder();
const dec = new TextDecoder();

function nr(name: string): number {
  const n = sysnoOf(name);
  if (n === undefined) throw new Error(`syscall ${name} missing from the x86-64 profile`);
  return n;
}

/** Builds one batch; each call() returns the call's index for 'result' references. */
class CallList {
  readonly calls: Call[] = [];
  call(name: string, ...args: CallArg[]): number {
    this.calls.push({ nr: nr(name), args });
    return this.calls.length - 1;
  }
  /** openat + read + close of a small file; returns the read's index. */
  readFile(dirfd: CallArg, path: string): number {
    const fd = this.call('openat', dirfd, str(path), int(O_RDONLY | O_CLOEXEC));
    const r = this.call('read', ref(fd), { kind: 'out', size: READ_MAX, keep: 'ret' }, int(READ_MAX));
    this.call('close', ref(fd));
    return r;
  }
  stat(dirfd: CallArg, path: string): number {
    return this.call('newfstatat', dirfd, str(path), { kind: 'out', size: STAT_SIZE, keep: 'all' }, int(0));
  }
  /**
   * The shadow's nice (getpriority), policy (sched_getscheduler) and CPU mask
   * (sched_getaffinity), and each rlimit of the shadow and of init (prlimit64 of pid 0 and
   * 1, pairs by resource): what the full verify records and the quick re-check compares.
   */
  schedAndLimits(): { prio: number; policy: number; affinity: number; lims: [number, number][] } {
    const prio = this.call('getpriority', int(0), int(0));
    const policy = this.call('sched_getscheduler', int(0));
    const affinity = this.call('sched_getaffinity', int(0), int(CPU_MASK_BYTES), {
      kind: 'out',
      size: CPU_MASK_BYTES,
      keep: 'ret',
    });
    const lims: [number, number][] = [];
    for (let r = 0; r < RLIMIT_COUNT; r++)
      lims.push([
        this.call('prlimit64', int(0), int(r), int(0), { kind: 'out', size: 16, keep: 'all' }),
        this.call('prlimit64', int(1), int(r), int(0), { kind: 'out', size: 16, keep: 'all' }),
      ]);
    return { prio, policy, affinity, lims };
  }
}

const int = (v: number | bigint): CallArg => ({ kind: 'int', value: BigInt.asUintN(64, BigInt(v)) });
const str = (s: string): CallArg => ({ kind: 'in', data: enc.encode(`${s}\0`) });
const ref = (index: number): CallArg => ({ kind: 'result', index });
const ret = (rs: CallResult[], i: number): bigint => rs[i]!.ret;
const failed = (rs: CallResult[], i: number): boolean => rs[i]!.ret < 0n;
const errOf = (rs: CallResult[], i: number): string => errnoName(Number(-rs[i]!.ret));

function statIds(rs: CallResult[], i: number): { dev: bigint; ino: bigint } | undefined {
  if (failed(rs, i)) return undefined;
  const b = rs[i]!.out[0]!;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { dev: v.getBigUint64(0, true), ino: v.getBigUint64(8, true) };
}

function text(rs: CallResult[], i: number): string | undefined {
  return failed(rs, i) ? undefined : dec.decode(rs[i]!.out[0]!);
}

/** Capability mask from status (`CapEff:\t000001ffffffffff`). */
function capOf(status: ReturnType<typeof parsePidStatus>, key: string): bigint {
  const v = status.fields.get(key);
  return v && /^[0-9a-f]{1,16}$/i.test(v) ? BigInt(`0x${v}`) : 0n;
}

/** Per capability set init has bits in that `self` lacks: `CapEff lacks 0x… that init has`. */
function capsMissing(
  self: ReturnType<typeof parsePidStatus>,
  init: ReturnType<typeof parsePidStatus>,
): string[] {
  return ['CapEff', 'CapPrm', 'CapBnd'].flatMap((key) => {
    const missing = capOf(init, key) & ~capOf(self, key);
    return missing === 0n ? [] : [`${key} lacks 0x${missing.toString(16)} that init has`];
  });
}

/** cgroup2 root flags that a mount option sets (kernel/cgroup/cgroup.c, cgroup2_fs_parameters). */
const CGROUP2_ROOT_FLAGS = ['nsdelegate', 'favordynmods', 'memory_localevents', 'memory_recursiveprot'];

/**
 * The cgroup2 root flags the guest has now, from a /proc/PID/mountinfo text: the super
 * options of its cgroup2 mounts (cgroup_show_options prints the hierarchy-wide flags)
 * that are root flags. [] when there is no cgroup2 mount or none is set (pure).
 */
export function cgroup2RootFlags(mountinfo: string | undefined): string[] {
  const flags = new Set<string>();
  for (const line of (mountinfo ?? '').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [fsType, , superOptions] = line.slice(sep + 3).split(' ');
    if (fsType !== 'cgroup2' || !superOptions) continue;
    for (const o of superOptions.split(',')) if (CGROUP2_ROOT_FLAGS.includes(o)) flags.add(o);
  }
  return CGROUP2_ROOT_FLAGS.filter((f) => flags.has(f));
}

/** /proc/PID/cgroup lines, and whether every hierarchy is at its root (`…:/`). */
function cgroupLines(content: string | undefined): { lines: string[]; atRoot: boolean } {
  const lines = (content ?? '').split('\n').filter((l) => l.length > 0);
  return { lines, atRoot: lines.length > 0 && lines.every((l) => l.endsWith(':/')) };
}

interface Probe {
  mntFd: bigint;
  initRlimits: Uint8Array[];
}

/**
 * Step 1 (see the header). Returns what step 2 needs, or throws VictimRefusedError naming
 * what makes this context unusable.
 */
export async function probeContext(exec: SyscallExecutor): Promise<Probe> {
  const b = new CallList();
  const seccomp = b.call('prctl', int(PR_GET_SECCOMP), int(0), int(0), int(0), int(0));
  const fs = b.call('fsopen', str('proc'), int(FSOPEN_CLOEXEC));
  const conf = b.call('fsconfig', ref(fs), int(FSCONFIG_CMD_CREATE), int(0), int(0), int(0));
  const mnt = b.call('fsmount', ref(fs), int(FSMOUNT_CLOEXEC), int(MOUNT_ATTR_NOSUID_NODEV_NOEXEC));
  b.call('close', ref(fs));
  const ns: Record<string, number> = {};
  for (const who of ['self', '1'])
    for (const n of NAMESPACES) ns[`${who}/${n}`] = b.stat(ref(mnt), `${who}/ns/${n}`);
  const selfStatus = b.readFile(ref(mnt), 'self/status');
  const initStatus = b.readFile(ref(mnt), '1/status');
  const selfLsm = b.readFile(ref(mnt), 'self/attr/current');
  const initLsm = b.readFile(ref(mnt), '1/attr/current');
  const limits: number[] = [];
  for (let r = 0; r < RLIMIT_COUNT; r++)
    limits.push(b.call('prlimit64', int(1), int(r), int(0), { kind: 'out', size: 16, keep: 'all' }));
  const rs = await exec.run(b.calls);

  const closeMnt = async (): Promise<void> => {
    if (!failed(rs, mnt)) await exec.run([{ nr: nr('close'), args: [int(ret(rs, mnt))] }]);
  };
  const refuse = async (reason: string): Promise<never> => {
    await closeMnt();
    throw new VictimRefusedError(reason);
  };
  if (ret(rs, seccomp) !== 0n)
    await refuse(
      failed(rs, seccomp)
        ? `prctl(PR_GET_SECCOMP) refused (${errOf(rs, seccomp)})`
        : `seccomp mode ${ret(rs, seccomp)}`,
    );
  for (const [i, what] of [
    [fs, 'fsopen(proc)'],
    [conf, 'fsconfig'],
    [mnt, 'fsmount'],
  ] as const) {
    if (failed(rs, i))
      await refuse(`cannot create a procfs: ${what} failed (${errOf(rs, i)}; no CAP_SYS_ADMIN?)`);
  }
  const pidNs = statIds(rs, ns['self/pid']!);
  if (!pidNs) await refuse(`cannot read its PID namespace (${errOf(rs, ns['self/pid']!)})`);
  if (pidNs!.ino !== PROC_PID_INIT_INO)
    await refuse(`in a child PID namespace (pid:[${pidNs!.ino}]): the initial one is unreachable from there`);
  const userNs = statIds(rs, ns['self/user']!);
  if (userNs?.ino !== PROC_USER_INIT_INO)
    await refuse(`in a user namespace (user:[${userNs?.ino ?? '?'}]) other than the initial one`);
  const st = text(rs, selfStatus);
  const it = text(rs, initStatus);
  if (st === undefined || it === undefined) await refuse("cannot read its own or init's status");
  const self = parsePidStatus(st!, '/proc/self/status');
  const init = parsePidStatus(it!, '/proc/1/status');
  const dropped = capsMissing(self, init)[0];
  if (dropped) await refuse(`capabilities dropped (${dropped})`);
  const lsmSelf = text(rs, selfLsm) ?? '';
  const lsmInit = text(rs, initLsm) ?? '';
  if (lsmLabel(lsmSelf) !== lsmLabel(lsmInit))
    await refuse(`LSM label '${lsmLabel(lsmSelf)}' differs from init's '${lsmLabel(lsmInit)}'`);
  const initRlimits = limits.map((i) => (failed(rs, i) ? new Uint8Array(0) : rs[i]!.out[0]!));
  return { mntFd: ret(rs, mnt), initRlimits };
}

function lsmLabel(s: string): string {
  return s.replace(/\0+$/, '').trim();
}

/**
 * Steps 2 and 3. A failure of step 2 leaves the shadow half-moved: refused (the caller
 * makes it exit). Step 3's failures are left for verify to report.
 */
export async function joinRootContext(exec: SyscallExecutor, probe: Probe): Promise<void> {
  const mntFd = int(probe.mntFd);
  const b = new CallList();
  const steps: { i: number; what: string }[] = [];
  for (const n of JOINED) {
    const fd = b.call('openat', mntFd, str(`1/ns/${n}`), int(O_RDONLY | O_CLOEXEC));
    steps.push({ i: b.call('setns', ref(fd), int(0)), what: `setns(${n})` });
    b.call('close', ref(fd));
  }
  for (const [link, chroot] of [
    ['1/root', true],
    ['1/cwd', false],
  ] as const) {
    const fd = b.call('openat', mntFd, str(link), int(O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    steps.push({ i: b.call('fchdir', ref(fd)), what: `fchdir(/proc/${link})` });
    if (chroot) steps.push({ i: b.call('chroot', str('.')), what: 'chroot(init root)' });
    b.call('close', ref(fd));
  }
  steps.push({ i: b.call('unshare', int(CLONE_NEWNS)), what: 'unshare(CLONE_NEWNS)' });
  // Every copied mount private before anything is mounted: with shared propagation (systemd
  // makes / shared) a mount here would otherwise appear in the guest's own namespaces.
  steps.push({
    i: b.call('mount', str('none'), str('/'), int(0), int(MS_REC_PRIVATE), int(0)),
    what: 'mount(/, MS_REC|MS_PRIVATE)',
  });
  // Read only now, in init's cgroup namespace: /proc/self/cgroup is relative to the
  // reader's cgroup namespace (kernel/cgroup/cgroup.c, proc_cgroup_show).
  const cgroupNow = b.readFile(mntFd, 'self/cgroup');
  const initMounts = b.readFile(mntFd, '1/mountinfo');
  const rs = await exec.run(b.calls);
  // Already in the root cgroup: no move (a move waits for an RCU grace period).
  const inRootCgroup = cgroupLines(text(rs, cgroupNow)).atRoot;
  const bad = steps.filter((s) => failed(rs, s.i));
  if (bad.length > 0) {
    await exec.run([{ nr: nr('close'), args: [mntFd] }]);
    throw new VictimRefusedError(
      `cannot enter init's context: ${bad.map((s) => `${s.what} ${errOf(rs, s.i)}`).join(', ')}`,
    );
  }

  const c = new CallList();
  c.call('mount', str('proc'), str('/proc'), str('proc'), int(MS_NOSUID_NODEV_NOEXEC), int(0));
  if (!inRootCgroup) {
    const cg = c.call('fsopen', str('cgroup2'), int(FSOPEN_CLOEXEC));
    // Every new cgroup2 mount re-applies its options to the one hierarchy for the whole
    // guest (kernel/cgroup/cgroup.c: cgroup_get_tree → apply_cgroup_root_flags, in the
    // init cgroup namespace): a bare mount would clear systemd's nsdelegate and
    // memory_recursiveprot. Pass the flags the guest's mount shows, so nothing changes.
    for (const flag of cgroup2RootFlags(text(rs, initMounts)))
      c.call('fsconfig', ref(cg), int(FSCONFIG_SET_FLAG), str(flag), int(0), int(0));
    c.call('fsconfig', ref(cg), int(FSCONFIG_CMD_CREATE), int(0), int(0), int(0));
    const cgm = c.call('fsmount', ref(cg), int(FSMOUNT_CLOEXEC), int(0));
    const procs = c.call('openat', ref(cgm), str('cgroup.procs'), int(O_WRONLY | O_CLOEXEC));
    c.call('write', ref(procs), { kind: 'in', data: enc.encode('0') }, int(1));
    for (const i of [procs, cgm, cg]) c.call('close', ref(i));
  }
  probe.initRlimits.forEach((lim, r) => {
    if (lim.length === 16) c.call('prlimit64', int(0), int(r), { kind: 'in', data: lim }, int(0));
  });
  c.call('setpriority', int(0), int(0), int(0)); // PRIO_PROCESS, self, nice 0
  c.call('sched_setscheduler', int(0), int(0), { kind: 'in', data: new Uint8Array(4) }); // SCHED_OTHER
  c.call('sched_setaffinity', int(0), int(CPU_MASK_BYTES), {
    kind: 'in',
    data: new Uint8Array(CPU_MASK_BYTES).fill(0xff),
  });
  // The detached procfs stays open in the shadow until it exits: releasing a mount waits
  // for an RCU grace period (fs/namespace.c, namespace_unlock), tens of ms under TCG.
  await exec.run(c.calls);
}

/**
 * Step 4: what the shadow's context is now, read through its /proc and compared with
 * PID 1's. Used after the join and again whenever a resident shadow is reused.
 */
export async function readShadowContext(exec: SyscallExecutor): Promise<ShadowContext> {
  const b = new CallList();
  const cwdFd = int(AT_FDCWD);
  const ns: Record<string, number> = {};
  for (const who of ['self', '1'])
    for (const n of NAMESPACES) ns[`${who}/${n}`] = b.stat(cwdFd, `/proc/${who}/ns/${n}`);
  const procFs = b.call('statfs', str('/proc'), { kind: 'out', size: STATFS_SIZE, keep: 'all' });
  const root = b.stat(cwdFd, '/');
  const initRoot = b.stat(cwdFd, '/proc/1/root');
  const cwd = b.stat(cwdFd, '.');
  const initCwd = b.stat(cwdFd, '/proc/1/cwd');
  const selfStatus = b.readFile(cwdFd, '/proc/self/status');
  const initStatus = b.readFile(cwdFd, '/proc/1/status');
  const cgroup = b.readFile(cwdFd, '/proc/self/cgroup');
  const selfLsm = b.readFile(cwdFd, '/proc/self/attr/current');
  const initLsm = b.readFile(cwdFd, '/proc/1/attr/current');
  const { prio, policy, affinity, lims } = b.schedAndLimits();
  const rs = await exec.run(b.calls);
  return contextFromResults(rs, {
    ns,
    procFs,
    root,
    initRoot,
    cwd,
    initCwd,
    selfStatus,
    initStatus,
    cgroup,
    selfLsm,
    initLsm,
    prio,
    policy,
    affinity,
    lims,
  });
}

interface VerifyIndex {
  ns: Record<string, number>;
  procFs: number;
  root: number;
  initRoot: number;
  cwd: number;
  initCwd: number;
  selfStatus: number;
  initStatus: number;
  cgroup: number;
  selfLsm: number;
  initLsm: number;
  prio: number;
  policy: number;
  affinity: number;
  lims: [number, number][];
}

function contextFromResults(rs: CallResult[], ix: VerifyIndex): ShadowContext {
  const problems: string[] = [];
  const nsText = (who: string): Record<NamespaceName, string> =>
    Object.fromEntries(
      NAMESPACES.map((n) => {
        const s = statIds(rs, ix.ns[`${who}/${n}`]!);
        return [n, s ? `${n}:[${s.ino}]` : `${n}:?`];
      }),
    ) as Record<NamespaceName, string>;
  const namespaces = nsText('self');
  const initNamespaces = nsText('1');
  for (const n of NAMESPACES) {
    if (n === 'mnt') continue; // the shadow's own private copy, by design
    if (namespaces[n] !== initNamespaces[n] || namespaces[n].endsWith('?'))
      problems.push(`${n} namespace ${namespaces[n]} is not init's ${initNamespaces[n]}`);
  }
  if (initNamespaces.pid !== `pid:[${PROC_PID_INIT_INO}]`)
    problems.push(`/proc is not a procfs of the initial PID namespace (${initNamespaces.pid})`);
  const fsType = failed(rs, ix.procFs)
    ? undefined
    : new DataView(rs[ix.procFs]!.out[0]!.buffer, rs[ix.procFs]!.out[0]!.byteOffset).getBigUint64(0, true);
  const procfs = fsType === PROC_SUPER_MAGIC && initNamespaces.pid === `pid:[${PROC_PID_INIT_INO}]`;
  if (!procfs) problems.push('/proc is not the procfs the shadow mounted');
  const same = (a: number, b: number): boolean => {
    const x = statIds(rs, a);
    const y = statIds(rs, b);
    return x !== undefined && y !== undefined && x.dev === y.dev && x.ino === y.ino;
  };
  const root = same(ix.root, ix.initRoot);
  const cwd = same(ix.cwd, ix.initCwd);
  if (!root) problems.push("root directory is not init's");
  if (!cwd) problems.push("working directory is not init's");

  const st = text(rs, ix.selfStatus);
  const it = text(rs, ix.initStatus);
  const self = st === undefined ? undefined : parsePidStatus(st, '/proc/self/status');
  const init = it === undefined ? undefined : parsePidStatus(it, '/proc/1/status');
  if (!self || !init) problems.push("cannot read its own or init's status");
  const field = (key: string): string => self?.fields.get(key) ?? '?';
  const seccomp = Number(field('Seccomp'));
  if (seccomp !== 0) problems.push(`seccomp mode ${field('Seccomp')}`);
  const capabilities = {
    effective: field('CapEff'),
    permitted: field('CapPrm'),
    bounding: field('CapBnd'),
    inheritable: field('CapInh'),
    ambient: field('CapAmb'),
  };
  if (self && init) problems.push(...capsMissing(self, init));
  const { lines: cgroup, atRoot } = cgroupLines(text(rs, ix.cgroup));
  if (!atRoot) problems.push(`not in the root cgroup (${cgroup.join(', ') || 'unreadable'})`);
  const lsm = lsmLabel(text(rs, ix.selfLsm) ?? '');
  const lsmInit = lsmLabel(text(rs, ix.initLsm) ?? '');
  if (lsm !== lsmInit) problems.push(`LSM label '${lsm}' is not init's '${lsmInit}'`);
  const nice = failed(rs, ix.prio) ? NaN : 20 - Number(ret(rs, ix.prio));
  if (nice !== 0) problems.push(`nice ${nice}`);
  const policy = Number(ret(rs, ix.policy));
  if (policy !== 0) problems.push(`scheduling policy ${policy} (not SCHED_OTHER)`);
  let cpus = 0;
  if (!failed(rs, ix.affinity)) for (const byte of rs[ix.affinity]!.out[0]!) cpus += popcount(byte);
  const rlimitsDiffer = ix.lims.flatMap(([s, i], r) =>
    failed(rs, s) || failed(rs, i) || !bytesEqual(rs[s]!.out[0]!, rs[i]!.out[0]!)
      ? [RLIMIT_NAMES[r] ?? String(r)]
      : [],
  );
  if (rlimitsDiffer.length > 0) problems.push(`rlimits differ from init's: ${rlimitsDiffer.join(', ')}`);
  return {
    namespaces,
    initNamespaces,
    seccomp,
    noNewPrivs: field('NoNewPrivs') === '1',
    capabilities,
    cgroup,
    lsm,
    root,
    cwd,
    procfs,
    nice,
    policy,
    cpus,
    rlimitsDiffer,
    complete: problems.length === 0,
    problems,
  };
}

/**
 * The re-check of a resident shadow that this vmi verified itself and that no other vmi
 * has held since (the guest lock's generation, src/util/guest-lock.ts): one part of the
 * full verify (readShadowContext), the part a guest process can change from outside the
 * shadow without tracing it:
 * - its cgroup (a root write of its pid to cgroup.procs, kernel/cgroup/cgroup.c),
 * - nice, policy and CPU affinity (setpriority, sched_setscheduler, sched_setaffinity of
 *   its pid with CAP_SYS_NICE, kernel/sys.c and kernel/sched/syscalls.c),
 * - rlimits, its own and init's (prlimit64 of a pid, kernel/sys.c),
 * - /proc in its private mount namespace (a guest root can setns into that namespace and
 *   mount over /proc): procfs magic, and init's PID namespace seen through it.
 * Left out, because only the task itself can change them: its namespaces (setns and
 * unshare act on the caller, kernel/nsproxy.c), root and cwd (chroot, chdir, fchdir:
 * fs/open.c), seccomp (the caller, or its own threads with TSYNC: the shadow has one),
 * capabilities (capset of another pid is EPERM, kernel/capability.c) and its LSM label
 * (/proc/PID/attr/current is writable by the task itself only, fs/proc/base.c
 * proc_pid_attr_write). A tracer (ptrace) can change all of these, but it can also fake
 * the answers of the full verify: neither check is a defence against it.
 * Cost: 1 batch of 40 calls, none of them formatting a status file (the full verify: 69
 * calls, two status files). `calls` can ride at the end of a read-only batch: their
 * references are relative to `at`, the index of their first call in that batch.
 */
export function contextRecheck(
  verified: ShadowContext,
  at = 0,
): { calls: Call[]; problems: (rs: readonly CallResult[]) => string[] } {
  const b = new CallList();
  const cwdFd = int(AT_FDCWD);
  const procFs = b.call('statfs', str('/proc'), { kind: 'out', size: STATFS_SIZE, keep: 'all' });
  const initPidNs = b.stat(cwdFd, '/proc/1/ns/pid');
  const cgroup = b.readFile(cwdFd, '/proc/self/cgroup');
  const { prio, policy, affinity, lims } = b.schedAndLimits();
  const calls = b.calls.map((c) => ({
    ...c,
    args: c.args.map((a) => (a.kind === 'result' ? { ...a, index: a.index + at } : a)),
  }));
  const problems = (all: readonly CallResult[]): string[] => {
    const rs = all.slice(at, at + calls.length);
    if (rs.length !== calls.length) return ['the context re-check did not run whole'];
    const out: string[] = [];
    const fsType = failed(rs, procFs)
      ? undefined
      : new DataView(rs[procFs]!.out[0]!.buffer, rs[procFs]!.out[0]!.byteOffset).getBigUint64(0, true);
    const pidNs = statIds(rs, initPidNs);
    if (fsType !== PROC_SUPER_MAGIC || pidNs?.ino !== PROC_PID_INIT_INO)
      out.push('/proc is not the procfs the shadow mounted');
    const { lines, atRoot } = cgroupLines(text(rs, cgroup));
    if (!atRoot) out.push(`not in the root cgroup (${lines.join(', ') || 'unreadable'})`);
    const nice = failed(rs, prio) ? NaN : 20 - Number(ret(rs, prio));
    if (nice !== 0) out.push(`nice ${nice}`);
    const pol = Number(ret(rs, policy));
    if (pol !== 0) out.push(`scheduling policy ${pol} (not SCHED_OTHER)`);
    let cpus = 0;
    if (!failed(rs, affinity)) for (const byte of rs[affinity]!.out[0]!) cpus += popcount(byte);
    if (cpus !== verified.cpus) out.push(`runs on ${cpus} CPUs, was verified on ${verified.cpus}`);
    const differ = lims.flatMap(([s, i], r) =>
      failed(rs, s) || failed(rs, i) || !bytesEqual(rs[s]!.out[0]!, rs[i]!.out[0]!)
        ? [RLIMIT_NAMES[r] ?? String(r)]
        : [],
    );
    if (differ.length > 0) out.push(`rlimits differ from init's: ${differ.join(', ')}`);
    return out;
  };
  return { calls, problems };
}

function popcount(b: number): number {
  let n = 0;
  for (let x = b; x; x &= x - 1) n++;
  return n;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Probe, join, settle and verify (steps 1–4). Throws VictimRefusedError when the
 * victim's context cannot become the root context (the caller borrows another task), and
 * ContextError when it was established but does not verify, unless `acceptPartial`.
 */
export async function establishRootContext(
  exec: SyscallExecutor,
  acceptPartial = false,
): Promise<ShadowContext> {
  const probe = await probeContext(exec);
  await joinRootContext(exec, probe);
  const ctx = await readShadowContext(exec);
  if (!ctx.complete && !acceptPartial)
    throw new ContextError(
      `the shadow's context is not the guest's root context: ${ctx.problems.join('; ')}`,
    );
  return ctx;
}
