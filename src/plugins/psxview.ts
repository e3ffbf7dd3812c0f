/**
 * psxview: processes seen through several independent views of the guest kernel, and
 * the ones some view hides (Volatility's linux.psxview idea, without a profile). A rootkit
 * that filters the /proc directory listing (a getdents64 / filldir hook) hides a process
 * from pslist; the same process still answers a direct lookup of /proc/N, the PID-taking
 * syscalls (getsid, getpgid: find_task_by_vpid, no /proc at all), its parent's children
 * list, and is still named as the parent of its own children.
 *
 * Views (one bool column each; every one of them is answered by the guest kernel, so a
 * rootkit that also filters that path defeats that view):
 * - proc_listing: getdents64 of /proc (proc_pid_readdir → next_tgid).
 * - proc_probe: faccessat("/proc/N", F_OK) for every N of the sweep (proc_pid_lookup).
 * - getsid: getsid(N) for every N of the sweep (find_task_by_vpid, no procfs).
 * - getpgid: getpgid(N) for the PIDs any view found (find_task_by_vpid, no procfs).
 * - children: named in /proc/P/task/T/children of the tasks read (task->children list).
 * - parent_of: named as PPID in the stat of another task (task->real_parent).
 *
 * The sweep covers 1..pid_max when pid_max ≤ FULL_SWEEP_MAX (PIDs may have wrapped, so
 * the last PID handed out is no bound); above it, 1..max(ns_last_pid, highest listed PID)
 * unless `--max-pid` says otherwise. Thread ids also answer /proc/N and getsid: a hit that
 * is a thread of a known process (from /proc/P/task, or Tgid of /proc/N/status) is not a
 * process row.
 *
 * Races: a process that starts or exits between views would disagree with itself. Every
 * PID whose views disagree is probed again with all views; it is flagged HIDDEN only when
 * the second look disagrees too, and a PID gone from every view on the second look is
 * dropped.
 *
 * Cost: 1 batch for the listing, 1 for the limits, ⌈sweep / (maxCalls / 2)⌉ for the sweep
 * (2 calls per PID: 32 batches for 32768 PIDs with 2048 calls a batch), 1 for the task
 * directories, 1 (+ follow-up) for stat and children files, 1 for getpgid; the re-probe
 * of disagreeing PIDs repeats that for those PIDs only.
 */
import {
  cPath,
  definePlugin,
  flags,
  inBytes,
  isVanished,
  notAvailable,
  proc as procParsers,
  type PluginContext,
  type Row,
} from '../sdk/index.js';

/** pid_max up to which the sweep covers every possible PID (a few seconds of guest work). */
export const FULL_SWEEP_MAX = 65536;
/** faccessat mode: existence only. */
const F_OK = 0;

export const PSXVIEW_VIEWS = [
  'proc_listing',
  'proc_probe',
  'getsid',
  'getpgid',
  'children',
  'parent_of',
] as const;
export type PsxView = (typeof PSXVIEW_VIEWS)[number];

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id (thread-group id) in the initial PID namespace' },
  {
    name: 'PPID',
    type: 'int32',
    description: 'Parent process id (/proc/PID/stat; N/A when /proc does not answer)',
  },
  { name: 'COMM', type: 'utf8', description: 'Task name (/proc/PID/stat; N/A when /proc does not answer)' },
  {
    name: 'proc_listing',
    type: 'bool',
    description: 'In the /proc directory listing (guest kernel: getdents64 → proc_pid_readdir)',
  },
  {
    name: 'proc_probe',
    type: 'bool',
    description: '/proc/PID answers a direct lookup (guest kernel: faccessat → proc_pid_lookup)',
  },
  {
    name: 'getsid',
    type: 'bool',
    description: 'getsid(PID) finds the task (guest kernel: find_task_by_vpid, not procfs)',
  },
  {
    name: 'getpgid',
    type: 'bool',
    description: 'getpgid(PID) finds the task (guest kernel: find_task_by_vpid, not procfs)',
  },
  {
    name: 'children',
    type: 'bool',
    description:
      "In its parent's /proc/PPID/task/*/children (guest kernel: task->children); N/A for PPID 0 or an unknown parent",
  },
  {
    name: 'parent_of',
    type: 'bool',
    description:
      'Named as PPID by another task (guest kernel: task->real_parent via /proc/PID/stat); evidence only',
  },
  {
    name: 'HIDDEN',
    type: 'bool',
    description: 'Some view misses it, on two looks: a view of the kernel lies',
  },
  {
    name: 'EVIDENCE',
    type: 'utf8',
    description: 'Which views see it and which miss it (empty when all agree)',
  },
] as const;

type PsxviewRow = Row<typeof columns>;

/** What every view says about the PIDs of one look at the guest. */
export interface PsxLook {
  /** PIDs per view (processes only; threads removed). */
  seen: Record<PsxView, Set<number>>;
  /** stat of the processes /proc answered for. */
  stat: Map<number, { ppid: number; comm: string }>;
  /** Parents whose children lists were read (the children view applies to their children). */
  childrenRead: Set<number>;
  /** Whose child each PID is, by the children lists (for the evidence). */
  childOf: Map<number, number>;
  /** Who names each PID as PPID (for the evidence). */
  parentOf: Map<number, number[]>;
}

const newSeen = (): Record<PsxView, Set<number>> =>
  Object.fromEntries(PSXVIEW_VIEWS.map((v) => [v, new Set<number>()])) as Record<PsxView, Set<number>>;

/** The sweep's upper bound: see the header. Reads pid_max and ns_last_pid in one batch. */
async function sweepBound(ctx: PluginContext, listed: readonly number[], maxPid?: number): Promise<number> {
  if (maxPid !== undefined) return maxPid;
  const [pidMax, last] = await ctx.sys.readFiles([
    '/proc/sys/kernel/pid_max',
    '/proc/sys/kernel/ns_last_pid',
  ]);
  const num = (f: typeof pidMax): number | undefined => {
    const n = f.data ? Number.parseInt(new TextDecoder().decode(f.data), 10) : NaN;
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  };
  const pm = num(pidMax);
  const highest = Math.max(num(last) ?? 0, ...listed, 1);
  if (pm !== undefined && pm <= FULL_SWEEP_MAX) return pm;
  ctx.warn(
    pm === undefined
      ? `pid_max unreadable: sweeping 1..${highest} (the last PID handed out / highest listed)`
      : `pid_max is ${pm}: sweeping 1..${highest} only (a wrapped PID above it is not probed; --max-pid to widen)`,
  );
  return highest;
}

/** faccessat(/proc/N) and getsid(N) for every N in `pids`: the two sweep views. */
async function probe(
  ctx: PluginContext,
  pids: Iterable<number>,
): Promise<{ proc: Set<number>; sid: Set<number> }> {
  const b = ctx.sys.batch();
  const refs: { pid: number; access: ReturnType<typeof b.call>; sid: ReturnType<typeof b.call> }[] = [];
  for (const pid of pids) {
    refs.push(
      b.group(() => ({
        pid,
        access: b.call('faccessat', [flags.AT_FDCWD, inBytes(cPath(`/proc/${pid}`)), F_OK], {
          path: `/proc/${pid}`,
        }),
        sid: b.call('getsid', [pid]),
      })),
    );
  }
  await b.submit();
  const proc = new Set<number>();
  const sid = new Set<number>();
  for (const r of refs) {
    if (r.access.ok) proc.add(r.pid);
    if (r.sid.ok) sid.add(r.pid);
  }
  return { proc, sid };
}

async function getpgids(ctx: PluginContext, pids: readonly number[]): Promise<Set<number>> {
  const b = ctx.sys.batch();
  const refs = pids.map((pid) => b.call('getpgid', [pid]));
  await b.submit();
  return new Set(pids.filter((_, i) => refs[i].ok));
}

const numbers = (data: Uint8Array | undefined): number[] =>
  data
    ? new TextDecoder()
        .decode(data)
        .split(/\s+/)
        .filter((s) => /^\d{1,10}$/.test(s))
        .map(Number)
    : [];

/**
 * One look at the guest: every view, for every PID of `range` (the sweep) plus the
 * processes the listing names.
 */
async function look(
  ctx: PluginContext,
  range: readonly number[],
  listed: readonly number[],
): Promise<PsxLook> {
  const seen = newSeen();
  for (const p of listed) seen.proc_listing.add(p);
  const { proc, sid } = await probe(ctx, range);

  // Task directories of every process /proc knows: their threads, and whose children lists to read.
  const known = [...new Set([...listed, ...proc])].sort((a, b) => a - b);
  const tids = await ctx.proc.listTids(known);
  const threadOf = new Map<number, number>();
  for (const [pid, t] of tids)
    if (Array.isArray(t)) for (const tid of t) if (tid !== pid) threadOf.set(tid, pid);
  // A hit neither listed nor a known thread: /proc/N/status says whether N is a thread.
  const unknown = [...new Set([...proc, ...sid])].filter(
    (p) => !seen.proc_listing.has(p) && !threadOf.has(p),
  );
  const files: string[] = [];
  const owners: { pid: number; kind: 'stat' | 'status' | 'children'; parent?: number }[] = [];
  for (const pid of unknown) {
    files.push(`/proc/${pid}/status`);
    owners.push({ pid, kind: 'status' });
  }
  for (const pid of known) {
    files.push(`/proc/${pid}/stat`);
    owners.push({ pid, kind: 'stat' });
    const t = tids.get(pid);
    for (const tid of Array.isArray(t) ? t : []) {
      files.push(`/proc/${pid}/task/${tid}/children`);
      owners.push({ pid, kind: 'children' });
    }
  }
  const read = await ctx.sys.readFiles(files, { chunkSize: 1024 });
  const stat = new Map<number, { ppid: number; comm: string }>();
  const childrenRead = new Set<number>();
  const childOf = new Map<number, number>();
  const parentOf = new Map<number, number[]>();
  read.forEach((f, i) => {
    const o = owners[i];
    if (f.error) {
      if (!isVanished(f.error) && o.kind !== 'status') ctx.warn(`${f.path}: ${f.error.message}`);
      return;
    }
    if (o.kind === 'status') {
      try {
        const st = procParsers.parsePidStatus(f.data!, f.path);
        if (st.tgid !== undefined && st.tgid !== o.pid) threadOf.set(o.pid, st.tgid);
      } catch (e) {
        ctx.warn((e as Error).message);
      }
    } else if (o.kind === 'stat') {
      try {
        const s = procParsers.parsePidStat(f.data!, f.path);
        stat.set(o.pid, { ppid: s.ppid, comm: s.comm });
      } catch (e) {
        ctx.warn((e as Error).message);
      }
    } else {
      childrenRead.add(o.pid);
      for (const c of numbers(f.data)) {
        seen.children.add(c);
        childOf.set(c, o.pid);
      }
    }
  });
  for (const [pid, s] of stat) {
    if (s.ppid <= 0) continue;
    seen.parent_of.add(s.ppid);
    parentOf.set(s.ppid, [...(parentOf.get(s.ppid) ?? []), pid]);
  }
  const isProcess = (p: number) => !threadOf.has(p);
  for (const p of proc) if (isProcess(p)) seen.proc_probe.add(p);
  for (const p of sid) if (isProcess(p)) seen.getsid.add(p);
  const all = new Set<number>();
  for (const v of PSXVIEW_VIEWS) for (const p of seen[v]) all.add(p);
  for (const p of await getpgids(
    ctx,
    [...all].sort((a, b) => a - b),
  ))
    if (isProcess(p)) seen.getpgid.add(p);
  return { seen, stat, childrenRead, childOf, parentOf };
}

/** Whether the children view applies to `pid`: its parent is known and its list was read. */
function childrenApplies(l: PsxLook, pid: number): boolean {
  const s = l.stat.get(pid);
  return s !== undefined && s.ppid > 0 && l.childrenRead.has(s.ppid);
}

/**
 * The views that miss `pid` although they should see it, and those that see it. The
 * listing, the probe, getsid and getpgid must all see every process; the children view
 * must when it applies; parent_of is evidence only (not every process is a parent).
 */
export function disagreement(l: PsxLook, pid: number): { missing: PsxView[]; present: PsxView[] } {
  const present = PSXVIEW_VIEWS.filter((v) => l.seen[v].has(pid));
  const missing = PSXVIEW_VIEWS.filter((v) => {
    if (l.seen[v].has(pid) || v === 'parent_of') return false;
    if (v === 'children') return childrenApplies(l, pid);
    return true;
  });
  return { missing, present };
}

function evidence(l: PsxLook, pid: number): string {
  const { missing, present } = disagreement(l, pid);
  if (missing.length === 0) return '';
  const say = (v: PsxView) =>
    v === 'children' && l.childOf.has(pid)
      ? `children of ${l.childOf.get(pid)}`
      : v === 'parent_of' && l.parentOf.has(pid)
        ? `PPID of ${l.parentOf.get(pid)!.join(',')}`
        : v;
  return `missing from ${missing.join(', ')}; seen by ${present.map(say).join(', ')}`;
}

export const psxview = definePlugin({
  name: 'psxview',
  description:
    'Cross-view of the processes: /proc listing, /proc/N probes, getsid/getpgid, children lists, parents; flags hidden ones',
  version: '1.0.0',
  columns,
  options: {
    'max-pid': {
      type: 'integer',
      description: `Sweep PIDs 1..N (default: pid_max when ≤ ${FULL_SWEEP_MAX}, else the last PID handed out)`,
    },
  },
  async run(ctx) {
    const maxPid = ctx.options['max-pid'];
    if (maxPid !== undefined && (!Number.isSafeInteger(maxPid) || maxPid < 1))
      throw new RangeError(`--max-pid must be a positive integer, got ${maxPid}`);
    const listed = await ctx.proc.listPids();
    const bound = await sweepBound(ctx, listed, maxPid);
    ctx.progress(`sweeping PIDs 1..${bound}`);
    const range = Array.from({ length: bound }, (_, i) => i + 1);
    const first = await look(ctx, range, listed);

    const all = new Set<number>();
    for (const v of PSXVIEW_VIEWS) for (const p of first.seen[v]) all.add(p);
    // Second look at the PIDs whose views disagree, with their parents (for the children view)
    // and the tasks naming them as parent (for parent_of).
    const suspects = [...all].filter((p) => disagreement(first, p).missing.length > 0);
    let second: PsxLook | undefined;
    if (suspects.length > 0) {
      ctx.progress(`probing ${suspects.length} disagreeing PIDs again`);
      const again = new Set(suspects);
      for (const p of suspects) {
        const pp = first.stat.get(p)?.ppid;
        if (pp) again.add(pp);
        for (const c of first.parentOf.get(p) ?? []) again.add(c);
      }
      const relisted = await ctx.proc.listPids();
      second = await look(
        ctx,
        [...again].sort((a, b) => a - b),
        relisted.filter((p) => again.has(p)),
      );
    }

    const rows: PsxviewRow[] = [];
    for (const pid of [...all].sort((a, b) => a - b)) {
      let l = first;
      if (second && suspects.includes(pid)) {
        // Gone from every view on the second look: it exited meanwhile.
        if (!PSXVIEW_VIEWS.some((v) => second!.seen[v].has(pid))) continue;
        l = second;
      }
      const s = l.stat.get(pid) ?? first.stat.get(pid);
      const noProc = notAvailable('/proc/PID/stat does not answer');
      const hidden = disagreement(l, pid).missing.length > 0;
      const row: PsxviewRow = {
        PID: pid,
        PPID: s ? s.ppid : noProc,
        COMM: s ? s.comm : noProc,
        proc_listing: l.seen.proc_listing.has(pid),
        proc_probe: l.seen.proc_probe.has(pid),
        getsid: l.seen.getsid.has(pid),
        getpgid: l.seen.getpgid.has(pid),
        children: childrenApplies(l, pid)
          ? l.seen.children.has(pid)
          : notAvailable(s && s.ppid === 0 ? 'PPID 0: nobody’s child' : 'parent unknown or unread'),
        parent_of: l.seen.parent_of.has(pid),
        HIDDEN: hidden,
        EVIDENCE: evidence(l, pid),
      };
      rows.push(row);
    }
    const flagged = rows.filter((r) => r.HIDDEN).length;
    if (flagged > 0) ctx.warn(`${flagged} process(es) hidden from at least one view`);
    return rows;
  },
});
