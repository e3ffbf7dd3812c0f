/**
 * Reading processes through /proc, shared by the process plugins (pslist, pstree, psaux,
 * envars): which tasks exist, their stat/status, and any other per-process files, all in
 * a number of guest entries that does not grow with the number of processes.
 */
import {
  parsePidStat,
  parsePidStatus,
  parseProcStat,
  ProcParseError,
  type PidStatus,
} from '../abi/linux/proc/index.js';
import { notAvailable, unreadable, type RowValue } from '../output/columns.js';
import {
  containerLabel,
  containerMatches,
  processCgroup,
  type ContainerRef,
  type ProcessCgroup,
} from './containers.js';
import { isVanished } from './errors.js';
import type { PluginContext, Row } from './plugin.js';
import { ProcFs, type TaskId } from './procfs.js';
import { READLINK_FIRST, type BatchLimits } from './limits.js';
import {
  wholeInOneRead,
  type FileReadRequest,
  type FileReadResult,
  type ReadlinkResult,
} from './syscall-api.js';

/** The cells of one process (or thread): pslist's columns, which pstree shares. */
export const PROCESS_COLUMNS = [
  { name: 'PID', type: 'int32', description: 'Process id (thread-group id)' },
  { name: 'TID', type: 'int32', description: 'Thread id (= PID for the process row)' },
  { name: 'PPID', type: 'int32', description: 'Parent process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (comm, at most 15 bytes for user tasks)' },
  // uid_t is 32-bit unsigned: ids ≥ 2^31 (e.g. user-namespace ranges, (uid_t)-1) do not fit int32.
  { name: 'UID', type: 'int64', description: 'Real user id' },
  { name: 'GID', type: 'int64', description: 'Real group id' },
  { name: 'EUID', type: 'int64', description: 'Effective user id' },
  { name: 'EGID', type: 'int64', description: 'Effective group id' },
  {
    name: 'CREATION TIME',
    type: 'timestamp_ms',
    description: 'Start time: boot time (/proc/stat btime, whole seconds) + starttime / USER_HZ',
  },
  { name: 'STATE', type: 'utf8', description: 'Scheduler state letter (R, S, D, T, t, Z, X, I...)' },
  { name: 'THREADS', type: 'int32', description: 'Threads in the process' },
] as const;

/**
 * Where a process lives: its PID namespace, its PIDs there, its cgroup and the container
 * that cgroup names (src/sdk/containers.ts). pslist, pstree and psaux end with these.
 */
export const NAMESPACE_COLUMNS = [
  { name: 'PID_NS_ID', type: 'int64', description: 'PID namespace id (inode of /proc/PID/ns/pid)' },
  {
    name: 'NSPID',
    type: 'utf8',
    description:
      "PID in each PID namespace the task is in, the guest's initial one first, its own last (NSpid of /proc/PID/status)",
  },
  {
    name: 'CGROUP',
    type: 'utf8',
    description: 'cgroup path (cgroup v2; name=systemd or the first hierarchy on v1)',
  },
  {
    name: 'CONTAINER',
    type: 'utf8',
    description:
      'runtime:id of the container its cgroup path names (docker, k8s:POD/ID, podman, nspawn, lxc); empty if none',
  },
] as const;

/** pslist's and pstree's columns. */
export const PROCESS_NS_COLUMNS = [...PROCESS_COLUMNS, ...NAMESPACE_COLUMNS] as const;

/** One row of PROCESS_COLUMNS. */
export type ProcessRow = Row<typeof PROCESS_COLUMNS>;

/** The NAMESPACE_COLUMNS cells of one process. */
export type NamespaceCells = Row<typeof NAMESPACE_COLUMNS>;

export interface ReadProcessesOptions {
  /** Only these process ids; empty or absent: every process in /proc. */
  pids?: readonly number[];
  /** One record per thread (from /proc/PID/task/TID) instead of per process. */
  threads?: boolean;
  /**
   * Also read the ids (status) and boot time (/proc/stat) for the UID..EGID and CREATION
   * TIME cells. Default true; without it those cells are NOT_AVAILABLE.
   */
  credentials?: boolean;
  /** Other per-process files to read in the same batch (`cmdline`, `environ`...). */
  files?: readonly string[];
  /**
   * Also read the PID namespace link, NSpid and cgroup for the NAMESPACE_COLUMNS cells
   * (`ns` of each record): the links go in the batches of the files.
   */
  namespaces?: boolean;
  /**
   * Only processes in these containers (`--container`, see CONTAINER_OPTION); implies
   * `namespaces`. Empty or absent: no filter.
   */
  containers?: readonly string[];
}

export interface ProcessRecord {
  task: TaskId;
  /** pslist's cells for this task. */
  row: ProcessRow;
  /** Parent pid, when stat could be parsed. */
  ppid?: number;
  /** Session and process group ids (stat's session and pgrp), when stat could be parsed. */
  session?: number;
  pgrp?: number;
  /** The NAMESPACE_COLUMNS cells, with `namespaces`. */
  ns?: NamespaceCells;
  /** The container its cgroup names, with `namespaces` (undefined: none, or unreadable). */
  container?: ContainerRef;
  /** The extra files asked for, by name (read for the task, or the thread with `threads`). */
  files: Record<string, FileReadResult>;
}

/**
 * The tasks of the guest (or of `pids`), with pslist's cells and the extra files. Costs
 * one batch for the listing (none with `pids`), one more for /proc/PID/task with
 * `threads`, and for the files (and the namespace links with `namespaces`) one batch per
 * slice ({@link sliceBounds}: at most {@link tasksPerBatch} tasks; a short list in up to
 * PIPELINE_SLICES) plus a follow-up for oversized files or long links, pipelined with the
 * parsing. Tasks that
 * exited between listing and reading are left out silently; unparsable content warns and
 * gives UNREADABLE cells.
 */
export async function readProcesses(
  ctx: PluginContext,
  opts: ReadProcessesOptions = {},
): Promise<ProcessRecord[]> {
  const { proc, sys } = ctx;
  const credentials = opts.credentials ?? true;
  const extra = opts.files ?? [];
  const containers = opts.containers ?? [];
  const namespaces = (opts.namespaces ?? false) || containers.length > 0;
  const file = (t: TaskId, name: string) => ProcFs.path(t.pid, name, opts.threads ? t.tid : undefined);
  const names = [
    'stat',
    ...(credentials || namespaces ? ['status'] : []),
    ...(namespaces ? ['cgroup'] : []),
    ...extra,
  ];
  const perBatch = tasksPerBatch(sys.limits, names, namespaces);

  type Slice = { links: ReadlinkResult[]; files: FileReadResult[] };
  /** One slice's files (and namespace links), /proc/stat (the boot time) first with `stat`. */
  const readSlice = (slice: readonly TaskId[], stat: boolean): Promise<Slice> => {
    const requests: FileReadRequest[] = stat
      ? [{ path: '/proc/stat', chunkSize: ProcFs.chunkForPath('/proc/stat') }]
      : [];
    for (const t of slice)
      for (const n of names) requests.push({ path: file(t, n), chunkSize: ProcFs.chunkFor(n) });
    if (!namespaces) return sys.readFiles(requests).then((files) => ({ links: [], files }));
    return sys.readLinksAndFiles(
      slice.map((t) => file(t, 'ns/pid')),
      requests,
    );
  };

  // Read ahead: with the last listing known (ProcHints), the files of its first slice go to
  // the guest right behind the new listing (rung while it runs); of those, only the
  // processes the new listing has are kept, and the rest of the listing is read as usual.
  // The files are read after the listing either way.
  const guess =
    !opts.threads && !opts.pids?.length ? guessedTasks(proc.lastPids(), perBatch, sys.chains) : [];
  let early: Promise<Slice> | undefined;
  let pids: number[];
  if (guess.length > 0) {
    const listing = proc.selectPids(opts.pids);
    listing.catch(() => undefined);
    // The listing's batch is rung first (it is reached through promise turns only).
    await macrotask();
    early = readSlice(guess, credentials);
    early.catch(() => undefined);
    pids = await listing;
  } else {
    pids = await proc.selectPids(opts.pids);
  }

  let tasks: TaskId[];
  if (opts.threads) {
    const tids = await proc.listTids(pids);
    tasks = [];
    for (const pid of pids) {
      const t = tids.get(pid);
      if (Array.isArray(t)) for (const tid of t) tasks.push({ pid, tid });
      else if (t && !isVanished(t)) ctx.warn(`pid ${pid}: ${t.message}`);
    }
  } else {
    tasks = pids.map((pid) => ({ pid, tid: pid }));
  }
  ctx.progress(`reading ${tasks.length} ${opts.threads ? 'threads' : 'processes'}`);

  // The slices, in the order they go to the guest: the one read ahead (only its tasks the
  // listing has count), then the listing's other tasks (sliceBounds), /proc/stat with the
  // first slice read. Each slice is sent before the one before it is parsed: the guest
  // reads the next files while the host parses these (the doorbell's wait lets the event
  // loop run), and the output is the same as from one big read.
  const plan: Array<{ tasks: TaskId[]; stat: boolean; listed?: Set<number> }> = [];
  let rest = tasks;
  if (early) {
    const listed = new Set(pids);
    const ahead = new Set(guess.filter((t) => listed.has(t.pid)).map((t) => t.pid));
    plan.push({ tasks: guess, stat: credentials, listed });
    rest = tasks.filter((t) => !ahead.has(t.pid));
  }
  const bounds = sliceBounds(rest.length, perBatch, sys.chains);
  for (let k = 0; k + 1 < bounds.length; k++) {
    if (early && bounds[k] === bounds[k + 1]) continue;
    plan.push({ tasks: rest.slice(bounds[k], bounds[k + 1]), stat: !early && k === 0 && credentials });
  }

  const out: ProcessRecord[] = [];
  let bootMs: number | RowValue = notAvailable('boot time not read');
  let next = early ?? (plan.length > 0 ? readSlice(plan[0].tasks, plan[0].stat) : undefined);
  // Awaited below, but maybe only after a turn of the event loop, by which time a slice
  // that failed fast (its batches answered at once) would count as unhandled.
  next?.catch(() => undefined);
  for (let k = 0; k < plan.length; k++) {
    const { tasks: slice, stat, listed } = plan[k];
    const current = next!;
    const more = k + 1 < plan.length;
    if (more) {
      // This slice's batch goes to the guest first (its ring is reached through promise
      // turns only), then the next one is built while the guest reads this one.
      await macrotask();
      next = readSlice(plan[k + 1].tasks, plan[k + 1].stat);
      // Awaited in the next round; until then a failure of it must not count as unhandled.
      next.catch(() => undefined);
    }
    const { links, files: results } = await current;
    // Likewise the next slice's batch is rung before this one is parsed.
    if (more) await macrotask();
    let base = 0;
    if (stat) {
      bootMs = bootTime(ctx, results[0]);
      base = 1;
    }
    slice.forEach((t, j) => {
      if (listed && !listed.has(t.pid)) return;
      const own = results.slice(base + j * names.length, base + (j + 1) * names.length);
      const byName: Record<string, FileReadResult> = {};
      names.forEach((n, k) => (byName[n] = own[k]));
      // status serves the credentials and NSpid both: parsed once.
      const status = byName.status ? statusOnce(byName.status) : undefined;
      const rec = taskRecord(ctx, t, byName.stat, credentials ? status : undefined, bootMs);
      if (!rec) return;
      let ns: NamespaceCells | undefined;
      let container: ContainerRef | undefined;
      if (namespaces) {
        const cells = namespaceCells(
          ctx,
          t,
          links[j].target ?? links[j].error!,
          status!,
          byName.cgroup,
          !credentials,
        );
        if (!cells) return;
        if (containers.length > 0 && !containerMatches(cells.container, containers)) return;
        ns = cells.row;
        container = cells.container;
      }
      const record = withFiles(rec, byName, extra);
      if (ns) record.ns = ns;
      if (container) record.container = container;
      out.push(record);
    });
  }
  // Read ahead, a process the last listing did not have (a pid reused lower down) comes
  // after the slice read ahead: back to pid order.
  if (early) out.sort((a, b) => a.task.pid - b.task.pid);
  return out;
}

/**
 * The record readProcesses makes of process `pid` (no namespace cells) from its files
 * read by the caller's own batch: `stat`, `status` (the UID..EGID cells; without it they
 * are NOT_AVAILABLE) and the `extra` files by name, which the record carries. `bootMs`:
 * the guest's boot time, ms since the epoch (/proc/stat btime, ProcFs.bootTime), for
 * CREATION TIME. Undefined when the process had exited (its stat or status vanished, as
 * readProcesses leaves such a task out); unparsable content warns and gives UNREADABLE
 * cells. The files must be whole (a read that filled its buffer is the caller's to
 * finish, as readFiles does).
 */
export function processRecordFromFiles(
  ctx: PluginContext,
  pid: number,
  byName: Readonly<Record<string, FileReadResult | undefined>> & { readonly stat: FileReadResult },
  bootMs: number,
  extra: readonly string[] = [],
): ProcessRecord | undefined {
  const status = byName.status ? statusOnce(byName.status) : undefined;
  const rec = taskRecord(ctx, { pid, tid: pid }, byName.stat, status, bootMs);
  return rec ? withFiles(rec, byName, extra) : undefined;
}

/** A task's record with the extra files it was asked for. */
function withFiles(
  rec: Omit<ProcessRecord, 'files'>,
  byName: Readonly<Record<string, FileReadResult | undefined>>,
  extra: readonly string[],
): ProcessRecord {
  const files: Record<string, FileReadResult> = {};
  for (const n of extra) {
    const f = byName[n];
    if (f) files[n] = f;
  }
  return { task: rec.task, row: rec.row, ppid: rec.ppid, session: rec.session, pgrp: rec.pgrp, files };
}

/**
 * The tasks to read ahead from the last listing (ProcHints): its first slice, as
 * sliceBounds would cut it (at most half a batch). Nothing when there is no usable listing.
 */
function guessedTasks(last: readonly number[] | undefined, perBatch: number, chains: boolean): TaskId[] {
  if (!last || last.length === 0) return [];
  const n = sliceBounds(last.length, perBatch, chains)[1];
  const out: TaskId[] = [];
  for (let i = 0; i < n; i++) {
    const pid = last[i];
    // The host wrote it, but a plugin in this process could have: only ascending pids.
    if (!Number.isSafeInteger(pid) || pid <= (i > 0 ? last[i - 1] : 0)) return [];
    out.push({ pid, tid: pid });
  }
  return out;
}

/**
 * Fewest tasks per slice when a list that fits one batch is cut for pipelining: below
 * this, a slice's own cost (its batch's checks, writes and wake) outweighs what it
 * overlaps.
 */
export const MIN_SLICE_TASKS = 24;
/** Slices a short list is cut into at most (see sliceBounds). */
export const PIPELINE_SLICES = 4;

/**
 * Where readProcesses cuts `tasks` into slices, one batch each: the start of every slice
 * and, last, `tasks` (so `[0, tasks]` for one slice; `[0, 0]` for none). A slice holds at
 * most half of what one batch holds (`perBatch` tasks), so that the next slice's batch
 * fits beside it in the shadow and is rung while it runs (src/shadow/batch-pipe.ts); at
 * most a whole batch when the executor does not chain (`chains` false: the trap
 * transport, where every batch is a VM stop and nothing runs beside it). A
 * list is cut into at least PIPELINE_SLICES slices when it has MIN_SLICE_TASKS tasks per
 * slice or more, the first and the last half as big as the others: one batch for all
 * leaves nothing to overlap (the host builds every call, the guest reads every file, then
 * the host parses them all; at ~100 processes that host work, and the garbage collection
 * it brings, was as long as the guest's reads), and only the first slice's building and
 * the last one's parsing are not overlapped with the guest's reads (bench/README.md,
 * "Where a resident pslist's time goes").
 */
export function sliceBounds(tasks: number, perBatch: number, chains = true): number[] {
  if (tasks <= 0) return [0, 0];
  const cap = Math.max(1, chains ? Math.floor(Math.max(1, perBatch) / 2) : Math.max(1, perBatch));
  // Weights ½, 1, …, 1, ½ (two or fewer slices: even): a unit weight is this many tasks.
  const unit = (n: number): number => (n > 2 ? tasks / (n - 1) : tasks / n);
  let slices = Math.min(PIPELINE_SLICES, Math.max(1, Math.floor(tasks / MIN_SLICE_TASKS)));
  while (unit(slices) > cap) slices++;
  const cuts = [0];
  for (let i = 1; i < slices; i++) {
    const weight = slices > 2 ? i - 0.5 : i;
    cuts.push(Math.round(weight * unit(slices)));
  }
  cuts.push(tasks);
  // Rounding can still leave a slice a task over the cap (or, with a tiny cap, more):
  // split any that would be.
  const out = [0];
  for (let i = 1; i < cuts.length; i++) {
    if (cuts[i] === out[out.length - 1]) continue;
    for (let at = out[out.length - 1] + cap; at < cuts[i]; at += cap) out.push(at);
    out.push(cuts[i]);
  }
  return out;
}

/** One turn of the event loop (setImmediate): every promise turn queued so far runs first. */
function macrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * How many tasks' files (`names` under /proc/PID) one batch holds within `limits`: per
 * file openat, one read, a one-byte EOF probe unless the file comes whole in one read,
 * close (and with `links` a readlinkat of ns/pid); room is kept for /proc/stat. At least 1.
 */
export function tasksPerBatch(
  limits: Readonly<BatchLimits>,
  names: readonly string[],
  /** The ns/pid link of each task too (one readlinkat of READLINK_FIRST bytes). */
  links = false,
): number {
  let calls = links ? 1 : 0;
  let bytes = links ? READLINK_FIRST : 0;
  for (const n of names) {
    const whole = wholeInOneRead(ProcFs.path(1, n));
    calls += whole ? 3 : 4;
    bytes += ProcFs.chunkFor(n) + (whole ? 0 : 1);
  }
  const statCalls = 4;
  const statBytes = ProcFs.chunkForPath('/proc/stat') + 1;
  return Math.max(
    1,
    Math.min(
      Math.floor((limits.maxCalls - statCalls) / calls),
      Math.floor((limits.maxOutBytes - statBytes) / Math.max(1, bytes)),
    ),
  );
}

function bootTime(ctx: PluginContext, r: FileReadResult): number | RowValue {
  try {
    if (r.error) throw r.error;
    const ms = parseProcStat(r.data!, '/proc/stat').btime * 1000;
    ctx.proc.setBootTime(ms);
    return ms;
  } catch (e) {
    const msg = (e as Error).message;
    ctx.warn(`creation times unavailable: ${msg}`);
    return unreadable(msg);
  }
}

const PIDNS_RE = /^pid:\[(\d{1,20})\]$/;
const EXITED = notAvailable('the task has exited');

/** NAMESPACE_COLUMNS cells of a task, or undefined when it exited meanwhile. */
function namespaceCells(
  ctx: PluginContext,
  t: TaskId,
  link: string | Error,
  status: StatusOnce,
  cgroupFile: FileReadResult,
  /** Warn about an unreadable status (false: the credential cells already did). */
  warnStatus: boolean,
): { row: NamespaceCells; container?: ContainerRef } | undefined {
  // A task that exited is either gone (its stat too: no row) or a zombie, whose nsproxy is
  // already released (its ns links but pid give ENOENT) though its stat stays; a link read
  // before the task exited and a stat read after it make the same case.
  if (isVanished(cgroupFile.error) && isVanished(status.file.error)) return undefined;
  let pidNs: RowValue;
  const m = typeof link === 'string' ? PIDNS_RE.exec(link) : null;
  if (m) pidNs = BigInt(m[1]);
  else if (typeof link !== 'string' && isVanished(link)) pidNs = EXITED;
  else {
    const why = typeof link === 'string' ? `not a pid namespace link: ${JSON.stringify(link)}` : link.message;
    ctx.warn(`pid ${t.pid}: ns/pid: ${why}`);
    pidNs = unreadable(why);
  }
  const quiet = { warn: () => {} };
  const nspid = parseFile(warnStatus ? ctx : quiet, t.pid, status.file, () => {
    const st = status.parsed();
    // NSpid is there since Linux 4.1 (the shadow needs 5.9).
    if (!st.nspid || st.nspid.length === 0) throw new ProcParseError(status.file.path, 'no NSpid line');
    return st.nspid.join(' ');
  });
  const cg: Parsed<ProcessCgroup> = isVanished(cgroupFile.error)
    ? { ok: false, cell: EXITED }
    : parseFile(ctx, t.pid, cgroupFile, (d) => {
        const c = processCgroup(d, cgroupFile.path);
        // A frozen replay clone: vmi moved the root cgroup's tasks out to freeze them.
        return ctx.frozen && c.path === ctx.frozen.holdingCgroup ? { path: '/' } : c;
      });
  const container = cg.ok ? cg.value.container : undefined;
  return {
    container,
    row: {
      PID_NS_ID: pidNs,
      NSPID: nspid.ok ? nspid.value : nspid.cell,
      CGROUP: cg.ok ? cg.value.path : cg.cell,
      CONTAINER: cg.ok ? (container ? containerLabel(container) : null) : cg.cell,
    },
  };
}

type Parsed<T> = { ok: true; value: T } | { ok: false; cell: RowValue };

/**
 * A task's status file, parsed on first use and only once: the credential cells and the
 * NSpid cell both come from it (parsing it twice was a tenth of a pslist's host time).
 * `parsed()` throws what parsePidStatus threw, every time it is asked.
 */
interface StatusOnce {
  file: FileReadResult;
  parsed(): PidStatus;
}

function statusOnce(file: FileReadResult): StatusOnce {
  let done: { value: PidStatus } | { error: unknown } | undefined;
  return {
    file,
    parsed() {
      if (file.error) throw file.error;
      if (!done) {
        try {
          done = { value: parsePidStatus(file.data!, file.path) };
        } catch (error) {
          done = { error };
        }
      }
      if ('error' in done) throw done.error;
      return done.value;
    },
  };
}

/** Parses one file; on failure warns and gives the UNREADABLE cell to show instead. */
function parseFile<T>(
  ctx: Pick<PluginContext, 'warn'>,
  pid: number,
  f: FileReadResult,
  parse: (d: Uint8Array) => T,
): Parsed<T> {
  try {
    if (f.error) throw f.error;
    return { ok: true, value: parse(f.data!) };
  } catch (e) {
    const msg = (e as Error).message;
    ctx.warn(`pid ${pid}: ${msg}`);
    return { ok: false, cell: unreadable(msg) };
  }
}

/** pslist's cells, or undefined for a task that exited between listing and reading. */
function taskRecord(
  ctx: PluginContext,
  t: TaskId,
  statFile: FileReadResult,
  status: StatusOnce | undefined,
  bootMs: number | RowValue,
): Omit<ProcessRecord, 'files'> | undefined {
  if (isVanished(statFile.error) || isVanished(status?.file.error)) return undefined;

  const stat = parseFile(ctx, t.pid, statFile, (d) => parsePidStat(d, statFile.path));
  const ids: Parsed<{ uid: { real: number; effective: number }; gid: { real: number; effective: number } }> =
    status
      ? parseFile(ctx, t.pid, status.file, () => {
          const st = status.parsed();
          // Every kernel writes Uid: and Gid:; without them the content is not a status file.
          if (!st.uid || !st.gid) throw new ProcParseError(status.file.path, 'no Uid/Gid lines');
          return { uid: st.uid, gid: st.gid };
        })
      : { ok: false, cell: notAvailable('status not read') };
  const s = stat.ok ? stat.value : undefined;
  const noStat = stat.ok ? null : stat.cell;
  const id = ids.ok ? ids.value : undefined;
  const noIds = ids.ok ? null : ids.cell;

  // A frozen replay clone: the state from before the freeze (a runnable task shows S frozen).
  const state = s ? (ctx.frozen?.stateBefore[t.tid] ?? s.state) : noStat;
  let created: RowValue = noStat;
  if (s) created = typeof bootMs === 'number' ? new Date(ctx.proc.startTimeMs(bootMs, s.starttime)) : bootMs;
  return {
    task: t,
    ppid: s?.ppid,
    session: s?.session,
    pgrp: s?.pgrp,
    row: {
      PID: t.pid,
      TID: t.tid,
      PPID: s ? s.ppid : noStat,
      COMM: s ? s.comm : noStat,
      UID: id ? id.uid.real : noIds,
      GID: id ? id.gid.real : noIds,
      EUID: id ? id.uid.effective : noIds,
      EGID: id ? id.gid.effective : noIds,
      'CREATION TIME': created,
      STATE: state,
      THREADS: s ? s.numThreads : noStat,
    },
  };
}

/**
 * Orders records as a forest for tree output: each record under its parent (by `ppid`),
 * children by PID, records whose parent is not in the list (or unknown, or themselves) as
 * roots. A parent cycle (possible only in a guest that lies) cannot loop: whatever is not
 * reached from a root becomes a root itself. Returns pre-order records with depths.
 */
export function processForest<T extends { task: TaskId; ppid?: number }>(
  records: readonly T[],
): { record: T; depth: number }[] {
  const byPid = new Map<number, T>();
  for (const r of records) if (!byPid.has(r.task.pid)) byPid.set(r.task.pid, r);
  const sorted = [...records].sort((a, b) => a.task.pid - b.task.pid || a.task.tid - b.task.tid);
  const children = new Map<T, T[]>();
  const roots: T[] = [];
  for (const r of sorted) {
    const parent = r.ppid !== undefined && r.ppid !== r.task.pid ? byPid.get(r.ppid) : undefined;
    if (parent && parent !== r) {
      const list = children.get(parent) ?? [];
      list.push(r);
      children.set(parent, list);
    } else {
      roots.push(r);
    }
  }
  const out: { record: T; depth: number }[] = [];
  const seen = new Set<T>();
  const walk = (root: T) => {
    const stack: { record: T; depth: number }[] = [{ record: root, depth: 0 }];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (seen.has(n.record)) continue;
      seen.add(n.record);
      out.push(n);
      const kids = children.get(n.record) ?? [];
      for (let i = kids.length - 1; i >= 0; i--) stack.push({ record: kids[i], depth: n.depth + 1 });
    }
  };
  for (const r of roots) walk(r);
  for (const r of sorted) if (!seen.has(r)) walk(r);
  return out;
}
