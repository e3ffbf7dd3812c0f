/**
 * Freezing a replay clone at the captured instant. A replayed capture is a running copy
 * of the guest: its userland goes on (timers fire on the host's clock, a `sleep 2` ends,
 * a monitor rewrites its files) while the plugins read it, so its tables would drift away
 * from the state the capture holds. Before the first plugin runs, the shadow freezes
 * every user task of the clone but itself; the clone is thrown away afterwards, so this
 * changes no evidence.
 *
 * The method is the cgroup v2 freezer (kernel/cgroup/freezer.c), chosen because it
 * changes the least of what plugins report:
 * - SIGSTOP would show every task as T, queue SIGCHLD at every parent, and cannot stop
 *   init; ptrace stops show as t and set TracerPid; the v1 freezer and the system-wide
 *   freezer show frozen tasks as D (TASK_FROZEN is reported as uninterruptible).
 * - A v2-frozen task waits in do_freezer_trap() as TASK_INTERRUPTIBLE: a sleeping task
 *   stays S (its sleep is restarted after thawing, which never comes), T stays T, D stays
 *   D until it wakes. Only a task that was runnable (R) shows as S: the state of every
 *   task is read just before the freeze and reported instead (see FrozenView).
 * - The root cgroup cannot be frozen, so the user tasks in it (all of them on a guest
 *   without systemd) are moved into a new child cgroup first, and frozen there. Their
 *   /proc/PID/cgroup then names that cgroup: the SDK reports it as '/', where they were.
 *   Tasks in other cgroups stay where they are; each top-level cgroup that holds tasks
 *   is frozen as a whole (the freeze propagates down).
 * - Kernel threads are never frozen by it (they cannot be moved out of the root cgroup
 *   either): they run on, as they would on a live guest. The shadow stays in the root
 *   cgroup (its root context put it there) and is the only user task that runs.
 * What is not undone: the clone ran its userland during the attach (0.8-1.2 s of guest
 * time under TCG on a loaded 2-core host: the attach plus the first freeze batches) before
 * the freeze; a task that changed in that window shows
 * as changed. Frozen tasks' wchan and /proc/PID/syscall name the freezer, and the tasks
 * interrupted in a sleep have a restart pending; no plugin of vmi reports those.
 */
import { O_CLOEXEC, O_RDONLY, O_WRONLY } from '../abi/linux/flags.js';
import { parsePidStat } from '../abi/linux/proc/index.js';
import { sysnoOf } from '../abi/linux/syscalls.js';
import { inBytes, cPath, outBuffer, type CallRef } from '../sdk/batch.js';
import { processCgroup } from '../sdk/containers.js';
import { isVanished } from '../sdk/errors.js';
import type { FrozenView } from '../sdk/plugin.js';
import { SyscallApi } from '../sdk/syscall-api.js';
import type { SyscallExecutor } from '../sdk/syscall-types.js';
import { randomTag } from '../util/run-dir.js';

/** PF_KTHREAD in /proc/PID/stat's flags (include/linux/sched.h). */
const PF_KTHREAD = 0x00200000;
const FSOPEN_CLOEXEC = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;
/** How long to wait for cgroup.events to say `frozen 1` everywhere. */
const SETTLE_MS = 3000;
const enc = new TextEncoder();
/** Syscalls the typed SyscallName list does not carry (the mount API, Linux 5.2+). */
const nr = (name: string): number => sysnoOf(name)!;
const utf8 = new TextDecoder();

/** What freezing the clone did. */
export interface FreezeResult {
  /** What the SDK needs to report pre-freeze values (passed to every plugin run). */
  view: FrozenView;
  /** User tasks moved from the root cgroup into `view.holdingCgroup`, by PID. */
  moved: number[];
  /** The cgroups written `1` to cgroup.freeze (the holding one included). */
  frozenCgroups: string[];
  /** True when every frozen cgroup's cgroup.events said `frozen 1`. */
  settled: boolean;
  /** Time the freeze took, ms. */
  ms: number;
}

/**
 * A snapshot of the clone's tasks: scheduler state of every task (by TID), and the user
 * processes with their cgroup paths. 3 batches (listing, thread listing, files).
 */
async function readTasks(sys: SyscallApi, shadowPid: number) {
  const pids = (await sys.listDir('/proc'))
    .filter((e) => /^[1-9]\d{0,9}$/.test(e.name))
    .map((e) => Number(e.name))
    .sort((a, b) => a - b);
  const taskDirs = await sys.listDirs(pids.map((p) => `/proc/${p}/task`));
  const tids: { pid: number; tid: number }[] = [];
  pids.forEach((pid, i) => {
    for (const e of taskDirs[i].entries ?? [])
      if (/^\d+$/.test(e.name)) tids.push({ pid, tid: Number(e.name) });
  });
  const files = await sys.readFiles([
    ...tids.map((t) => ({ path: `/proc/${t.pid}/task/${t.tid}/stat`, chunkSize: 1024 })),
    ...pids.map((p) => ({ path: `/proc/${p}/cgroup`, chunkSize: 1024 })),
  ]);
  const states: Record<number, string> = {};
  const kthreads = new Set<number>();
  tids.forEach((t, i) => {
    const f = files[i];
    if (f.error) return;
    try {
      const st = parsePidStat(f.data!, f.path);
      states[t.tid] = st.state;
      if (st.flags & PF_KTHREAD) kthreads.add(t.pid);
    } catch {
      // An unparsable stat keeps its post-freeze value: nothing to report instead.
    }
  });
  const cgroups = new Map<number, string>();
  pids.forEach((pid, i) => {
    const f = files[tids.length + i];
    if (f.error || kthreads.has(pid) || pid === shadowPid) return;
    try {
      cgroups.set(pid, processCgroup(f.data!, f.path).path);
    } catch {
      // Not a cgroup v2 line: left alone.
    }
  });
  return { states, cgroups };
}

/**
 * Freezes every user task of a replay clone but the shadow (see the header). `exec` is
 * the session itself (the freeze writes cgroup files, which no plugin may do). Throws
 * when the clone has no cgroup v2 or the shadow is not in the root cgroup (it would
 * freeze itself); the caller decides whether to go on unfrozen.
 */
export async function freezeReplayClone(exec: SyscallExecutor): Promise<FreezeResult> {
  const t0 = performance.now();
  const sys = new SyscallApi(exec, { maxReadBytes: 1 << 30 });
  const [self] = await sys.readlinks(['/proc/self']);
  const shadowPid = Number(self.target);
  if (!Number.isSafeInteger(shadowPid))
    throw new Error(`cannot tell the shadow's pid: /proc/self -> ${self.target}`);
  const own = processCgroup(
    await sys.readFile(`/proc/${shadowPid}/cgroup`),
    `/proc/${shadowPid}/cgroup`,
  ).path;
  if (own !== '/')
    throw new Error(`the shadow is in cgroup ${own}, not the root one: freezing would stop it`);

  const before = await readTasks(sys, shadowPid);
  const holding = `vmi-replay-frozen-${randomTag()}`;

  // The cgroup2 root of the shadow's (init's) cgroup namespace, mounted detached: it
  // works whether or not the guest mounted cgroup2 anywhere.
  const b = sys.batch();
  const fsfd = b.call(nr('fsopen'), [inBytes(cPath('cgroup2')), FSOPEN_CLOEXEC]);
  b.call(nr('fsconfig'), [fsfd, FSCONFIG_CMD_CREATE, 0, 0, 0]);
  const root = b.call(nr('fsmount'), [fsfd, FSMOUNT_CLOEXEC, 0]);
  b.close(fsfd);
  const mkdir = b.call('mkdirat', [root, inBytes(cPath(holding)), 0o755]);
  await b.submit();
  const rootFd = root.check().ret;
  mkdir.check();

  const moved: number[] = [];
  const frozen = new Set<string>([holding]);
  // Twice: a task forked by a root-cgroup parent between the listing and its parent's
  // move stays in the root cgroup; the second pass finds it (its parent is frozen by then).
  let tasks = before;
  for (let pass = 0; pass < 2; pass++) {
    const toMove = [...tasks.cgroups].filter(([, path]) => path === '/').map(([pid]) => pid);
    const tops = new Set<string>();
    for (const path of tasks.cgroups.values()) {
      const top = path.split('/')[1];
      if (top && !path.startsWith('/..') && !frozen.has(top)) tops.add(top);
    }
    const w = sys.batch();
    const writes: { pid: number; ref: CallRef }[] = [];
    if (toMove.length > 0) {
      const procs = w.openat(rootFd, `${holding}/cgroup.procs`, O_WRONLY | O_CLOEXEC);
      for (const pid of toMove) {
        const data = enc.encode(String(pid));
        writes.push({ pid, ref: w.call('write', [procs, inBytes(data), data.length]) });
      }
      w.close(procs);
    }
    for (const cg of pass === 0 ? [holding, ...tops] : [...tops]) {
      const fd = w.openat(rootFd, `${cg}/cgroup.freeze`, O_WRONLY | O_CLOEXEC);
      w.call('write', [fd, inBytes(enc.encode('1')), 1]);
      w.close(fd);
      frozen.add(cg);
    }
    await w.submit();
    for (const { pid, ref } of writes) {
      // ESRCH: it exited meanwhile.
      if (ref.ok) moved.push(pid);
      else if (!isVanished(ref.result().error))
        throw new Error(`cannot freeze pid ${pid}: ${ref.result().error!.message}`);
    }
    if (pass === 0) tasks = await readTasks(sys, shadowPid);
  }

  // The freeze is asynchronous: each task stops when it next leaves the kernel.
  const settled = await allFrozen(sys, rootFd, [...frozen]);
  const done = sys.batch();
  done.close(rootFd);
  await done.submit();
  const view: FrozenView = Object.freeze({
    holdingCgroup: `/${holding}`,
    stateBefore: Object.freeze({ ...before.states }),
  });
  return { view, moved, frozenCgroups: [...frozen], settled, ms: performance.now() - t0 };
}

/** Polls cgroup.events of `cgroups` (under the cgroup2 root `rootFd`) until all say `frozen 1`, for SETTLE_MS at most. */
async function allFrozen(sys: SyscallApi, rootFd: bigint, cgroups: readonly string[]): Promise<boolean> {
  const deadline = performance.now() + SETTLE_MS;
  for (;;) {
    const r = sys.batch();
    const events = cgroups.map((cg) => {
      const fd = r.openat(rootFd, `${cg}/cgroup.events`, O_RDONLY | O_CLOEXEC);
      const data = r.call('read', [fd, outBuffer(256), 256]);
      r.close(fd);
      return data;
    });
    await r.submit();
    if (events.every((e) => e.ok && /^frozen 1$/m.test(utf8.decode(e.result().data)))) return true;
    if (performance.now() > deadline) return false;
    await new Promise((res) => setTimeout(res, 50));
  }
}
