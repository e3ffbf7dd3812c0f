/**
 * Incremental snapshots for `vmi watch` (the default; `--full-snapshots` runs the whole
 * plugins every tick instead). Each tick asks the guest only what says whether anything
 * changed, and reads details only for what did:
 *
 * - processes: the /proc listing (getdents64) gives new and gone PIDs; only new PIDs are
 *   read (stat, status, cmdline: watch-processes' row); a gone PID needs no read. A PID
 *   that exited and was reused between two ticks is caught through the last-PID field of
 *   /proc/loadavg (the pid namespace's allocation cursor, kernel/pid.c via
 *   fs/proc/loadavg.c): a PID the listing had before and the allocator handed out since
 *   the previous tick is read again and, with a new start time, is a new process; so is
 *   a PID whose /proc/PID has another inode than at the last tick (inodeMoved).
 * - modules: /proc/modules (one small read); lsmod runs only when its bytes changed.
 * - mounts: /proc/PID/mountinfo of one process per known mount namespace; mountinfo runs
 *   only when one of them changed, or a namespace came or went.
 * - listeners: /proc/PID/net/{tcp,tcp6,udp,udp6,unix} of one process per known network
 *   namespace, reduced to the inodes of listening sockets (sockstat's definition); the
 *   whole sockstat (every process's descriptors) runs only when that set changed.
 *
 * All probe files of a tick and then the /proc listing are read in one batch (the probes
 * first, so that a PID reused after the cursor was read shows at the next tick;
 * probeAndList), and behind the listing, in the same batch, the files and namespace
 * links of the EARLY_PIDS PIDs after the last cursor: the PIDs new processes get, so a
 * new process usually costs no guest entry of its own (the event leaves with the tick's
 * one entry). A new process elsewhere costs one more (its files) and, with mounts or
 * listeners watched, one for its namespace links. A process read between fork and exec
 * is looked at again within the tick (RECHECK_WINDOW_MS), one entry per look. A quiet
 * tick is therefore 1 guest entry (plus the attach's quick context re-check riding on
 * it, src/shadow/session.ts AttachMemo): 61 system calls for the process source alone
 * (48 of them the early PIDs' reads, mostly failed openats), instead of ~1600 for the
 * whole plugins on a small guest (bench/results-watch.md).
 *
 * Rows are those of the full plugins (the same columns and identities, sources.ts). One
 * difference: a process's row is read once, when it is first seen; its exit event carries
 * that row (a full snapshot would carry the last one read: a parent changed by
 * re-parenting shows there). Any failure in a tick drops the cached state: the next tick
 * reads everything again, and the watch loop diffs it as usual (no event is lost or made
 * up by a reset).
 */
import { parseInetSockets, parseUnixSockets } from '../abi/linux/proc/index.js';
import { resolvePlugin } from '../api/guest.js';
import type { PluginCall } from '../api/index.js';
import {
  decodeDirents64,
  definePlugin,
  flags,
  isVanished,
  processRecordFromFiles,
  ProcFs,
  readProcesses,
  resolveOptions,
  type FileReadResult,
  type PluginContext,
  type PluginDefinition,
  type ProcessRecord,
  type ReadlinkResult,
} from '../sdk/index.js';
import { parsePasswd, processRows, watchProcesses, type WatchProcessRow } from './process-plugin.js';
import type { SourceName, WatchRow } from './sources.js';

/** A process the watch knows: its row (process source) and its namespace links. */
interface KnownProcess {
  row?: WatchProcessRow;
  mnt?: string;
  net?: string;
}

/** The network tables whose listeners make the listener fingerprint. */
const NET_TABLES = ['tcp', 'tcp6', 'udp', 'udp6', 'unix'] as const;
/** TCP_LISTEN, TCP_CLOSE (include/net/tcp_states.h); __SO_ACCEPTCON (include/linux/net.h). */
const TCP_LISTEN = 10;
const TCP_CLOSE = 7;
const SO_ACCEPTCON = 1 << 16;

/** The last-PID field (5th) of /proc/loadavg: `0.00 0.01 0.05 1/63 1234`. */
export function parseLastPid(data: Uint8Array): number | undefined {
  const f = new TextDecoder().decode(data.subarray(0, 256)).trim().split(/\s+/);
  const n = Number(f[4]);
  return f.length >= 5 && /^\d{1,10}$/.test(f[4]) && Number.isSafeInteger(n) ? n : undefined;
}

/**
 * True when the PID allocator may have handed `pid` out after its cursor was `before` and
 * up to `after` (cyclic: the cursor wraps at pid_max back to low PIDs).
 */
export function allocatedSince(pid: number, before: number, after: number): boolean {
  if (after === before) return false;
  return before < after ? pid > before && pid <= after : pid > before || pid <= after;
}

/**
 * True when /proc/PID was listed with another inode than at the last tick. A /proc/PID
 * dentry lives as long as its task (fs/proc/base.c: pid_delete_dentry; proc_flush_pid
 * drops it at exit), and a new one gets a new inode number (get_next_ino), so a PID
 * reused between two ticks shows here even when the allocator's cursor was put back
 * where it was (root writing /proc/sys/kernel/ns_last_pid, as CRIU does, or a guest
 * hiding a swap). A dentry evicted under memory pressure also gets a new inode: the
 * process is read again and, with the same start time, makes no event.
 */
export function inodeMoved(
  before: ReadonlyMap<number, bigint> | undefined,
  now: ReadonlyMap<number, bigint> | undefined,
  pid: number,
): boolean {
  const a = before?.get(pid);
  const b = now?.get(pid);
  return a !== undefined && b !== undefined && a !== b;
}

/**
 * Inodes of the listening sockets in one /proc/net table: TCP in LISTEN, UDP bound to a
 * port and not connected, unix sockets that accept (sources.ts isListener). Unparsable
 * lines are skipped (a full sockstat reports them).
 */
export function listenerInodes(table: (typeof NET_TABLES)[number], data: Uint8Array): bigint[] {
  if (table === 'unix')
    return parseUnixSockets(data)
      .entries.filter((s) => (s.flags & SO_ACCEPTCON) !== 0)
      .map((s) => s.inode);
  const { entries } = parseInetSockets(data, table.endsWith('6'), `net/${table}`);
  return entries
    .filter((s) =>
      table.startsWith('tcp') ? s.state === TCP_LISTEN : s.state === TCP_CLOSE && s.localPort > 0,
    )
    .map((s) => s.inode);
}

/**
 * True when a new process's row looks like a moment inside fork + exec rather than the
 * program it runs: the same name and argv as its parent (forked, not yet exec'd), or a
 * comm that is not the base name of argv[0] (exec'd, the program not yet settled: busybox
 * runs applets through /proc/self/exe, comm "exe", then renames itself). Kernel threads
 * (`[name]`, children of kthreadd) and unreadable rows never look so; a user process
 * with no argv (its exec is replacing its memory) does. A false positive costs at most
 * MAX_HOLDS ticks.
 *
 * `orphanLike`: whether the leader of its session or of its process group is a known process
 * with the same name and argv, asked only when the parent cannot tell — a process adopted
 * by init (PPID 1) or whose parent is not known. A shell's `cmd &` forks a copy of the
 * shell; when that shell (a subshell, `sh -c`) exits before the copy execs, the copy is
 * reparented to init and no longer looks like its parent, but still looks like the shell
 * it was copied from, whose session (or group) it is in. Any twin was too wide: a second
 * `sleep 3` under init, or one of a daemon's identical workers, was held back as a copy
 * (a 1 Hz watch reported it 2–3 s late), though its twin leads nothing it belongs to.
 */
export function looksMidExec(
  row: WatchProcessRow,
  parent: WatchProcessRow | undefined,
  orphanLike: (comm: string, args: string) => boolean = () => false,
): boolean {
  const { COMM: comm, ARGS: args } = row;
  if (typeof comm !== 'string' || typeof args !== 'string') return false;
  if (parent && parent.COMM === comm && parent.ARGS === args) return true;
  // No argv: a kernel thread (kthreadd's child, or kthreadd), else a process whose exec is
  // replacing its memory right now (or a zombie).
  if (args.startsWith('[') && args.endsWith(']')) return !(row.PID === 2 || row.PPID === 2);
  const argv0 = args.split(' ')[0];
  const base = argv0.slice(argv0.lastIndexOf('/') + 1);
  if (base.slice(0, 15) !== comm) return true;
  return (!parent || row.PPID === 1) && orphanLike(comm, args);
}

/** Ticks a new process may be held back while it looks mid-exec (looksMidExec). */
const MAX_HOLDS = 3;
/**
 * How long a tick keeps looking at a process held back as mid-exec (ms from the first
 * look), and the pause between looks. Each look is one guest entry for the held PIDs only.
 */
const RECHECK_WINDOW_MS = 30;
const RECHECK_PAUSE_MS = 2;
/**
 * PIDs after the last tick's allocation cursor whose files (and namespace links) each
 * tick reads right behind the listing, in the same guest entry: the PIDs the next new
 * processes get (the allocator hands them out in order from the cursor, kernel/pid.c
 * alloc_pid: idr_alloc_cyclic). A new process among them costs no entry of its own; one
 * that is not (threads took the PIDs between) is read as before. A PID with no process
 * costs one failed openat per file.
 */
const EARLY_PIDS = 4;
/** The per-process files the process source reads (watch-processes' row). */
const PROCESS_FILES = ['stat', 'status', 'cmdline'] as const;

const NS_RE = /^(?:mnt|net):\[(\d{1,20})\]$/;

/** What one tick learnt, shared by the sources' plugins of that tick. */
interface TickView {
  /** The probe files, by path. */
  files: Map<string, FileReadResult>;
  /** Readers of each namespace whose files were probed (namespace → pid), per kind. */
  mntReaders: Map<string, number>;
  netReaders: Map<string, number>;
  /** A namespace came or went this tick (its files were not probed). */
  mntChanged: boolean;
  netChanged: boolean;
}

/**
 * The shared state of one watch loop's incremental sources: known processes, the
 * allocation cursor, and what each source saw last. One refresh per tick, made by
 * whichever source's plugin runs first.
 */
class GuestProbe {
  private tick = 0;
  private viewTick = -1;
  private view?: TickView;
  private procs = new Map<number, KnownProcess>();
  private lastPid?: number;
  /** The inode of each listed /proc/PID (getdents64's d_ino) at the last tick. */
  private inodes?: Map<number, bigint>;
  /** New processes held back because they looked mid-exec: pid → its START_MS and the ticks held. */
  private deferred = new Map<number, { start: unknown; held: number }>();
  /** A tick has been read since the last reset: its processes are the baseline, never held back. */
  private primed = false;
  private users = new Map<number, string>();
  private passwd?: string;
  /** The guest's boot time (ms since the epoch) as the last read of new processes found it. */
  private bootMs?: number;
  /** Last fingerprints and rows of the delegating sources. */
  readonly last = new Map<'module' | 'mount' | 'listener', { print: string; rows: WatchRow[] }>();

  constructor(private readonly sources: ReadonlySet<SourceName>) {}

  beginTick(): void {
    this.tick++;
  }

  /** Forget everything: the next tick reads the guest whole (after any failure). */
  reset(): void {
    this.procs.clear();
    this.lastPid = undefined;
    this.inodes = undefined;
    this.bootMs = undefined;
    this.deferred.clear();
    this.primed = false;
    this.last.clear();
    this.view = undefined;
    this.viewTick = -1;
  }

  /** The rows of the processes known now. */
  processRows(): WatchProcessRow[] {
    const rows: WatchProcessRow[] = [];
    for (const p of this.procs.values()) if (p.row) rows.push(p.row);
    return rows;
  }

  async refresh(ctx: PluginContext): Promise<TickView> {
    if (this.view && this.viewTick === this.tick) return this.view;
    try {
      this.view = await this.read(ctx);
      this.viewTick = this.tick;
      return this.view;
    } catch (err) {
      this.reset();
      throw err;
    }
  }

  private readersOf(kind: 'mnt' | 'net'): Map<string, number> {
    const readers = new Map<string, number>();
    for (const [pid, p] of this.procs) {
      const ns = p[kind];
      if (ns !== undefined && !readers.has(ns)) readers.set(ns, pid);
    }
    return readers;
  }

  private async read(ctx: PluginContext): Promise<TickView> {
    const want = this.sources;
    const needLinks = want.has('mount') || want.has('listener');
    // 1. The probes, before the listing (see the header: PID reuse).
    const mntReaders = want.has('mount') ? this.readersOf('mnt') : new Map<string, number>();
    const netReaders = want.has('listener') ? this.readersOf('net') : new Map<string, number>();
    const paths = ['/proc/loadavg'];
    if (want.has('process')) paths.push('/etc/passwd');
    if (want.has('module')) paths.push('/proc/modules');
    for (const pid of mntReaders.values()) paths.push(`/proc/${pid}/mountinfo`);
    for (const pid of netReaders.values()) for (const t of NET_TABLES) paths.push(`/proc/${pid}/net/${t}`);
    // The PIDs new processes most likely have, read behind the listing (EARLY_PIDS). Their
    // rows need the boot time, known once a read of new processes has found it.
    const early =
      want.has('process') && this.lastPid !== undefined && this.bootMs !== undefined
        ? { pids: Array.from({ length: EARLY_PIDS }, (_, i) => this.lastPid! + 1 + i), links: needLinks }
        : undefined;
    const { files, pids, inodes, early: earlyRead } = await probeAndList(ctx, paths, early);
    const loadavg = files.get('/proc/loadavg')!;
    const cursor = loadavg.data ? parseLastPid(loadavg.data) : undefined;
    const passwd = files.get('/etc/passwd');
    if (passwd) {
      const text = passwd.data ? new TextDecoder().decode(passwd.data) : '';
      if (text !== this.passwd) {
        this.passwd = text;
        this.users = parsePasswd(text);
      }
    }

    // 2. The listing (read in the same batch, after the probes): new and gone PIDs.
    const listed = new Set(pids);
    let mntChanged = false;
    let netChanged = false;
    for (const pid of this.deferred.keys()) if (!listed.has(pid)) this.deferred.delete(pid);
    for (const [pid, p] of this.procs) {
      if (listed.has(pid)) continue;
      this.procs.delete(pid);
      if (p.mnt !== undefined && mntReaders.get(p.mnt) === pid) mntChanged = true;
      if (p.net !== undefined && netReaders.get(p.net) === pid) netChanged = true;
    }
    const fresh = pids.filter((pid) => !this.procs.has(pid));
    // Known PIDs that may be another process now: those the allocator handed out since the
    // last tick, and those whose /proc/PID has another inode. Without a cursor (unreadable
    // loadavg, or the first tick after a reset) every known PID is read again.
    const before = this.inodes;
    const suspects = pids.filter(
      (pid) =>
        this.procs.has(pid) &&
        (cursor === undefined ||
          this.lastPid === undefined ||
          allocatedSince(pid, this.lastPid, cursor) ||
          inodeMoved(before, inodes, pid)),
    );
    this.lastPid = cursor;
    this.inodes = inodes;

    // 3. Details of new (and suspect) processes only.
    const toRead = [...fresh, ...suspects];
    let changedPids: number[] = fresh;
    if (want.has('process') && toRead.length > 0) {
      let { changed, held } = await this.admit(ctx, toRead, false, earlyRead);
      changedPids = changed;
      // Caught between fork and exec: looked at again within this tick rather than a whole
      // interval later (under TCG a busybox shell's fork → exec took long enough that 8 of
      // 50 `sleep 3 &` were caught mid-way at 10 Hz, each reported a tick late).
      const until = performance.now() + RECHECK_WINDOW_MS;
      while (held.length > 0 && performance.now() < until) {
        await new Promise((r) => setTimeout(r, RECHECK_PAUSE_MS));
        ({ changed, held } = await this.admit(ctx, held, true));
        changedPids.push(...changed);
      }
    } else {
      for (const pid of fresh) this.procs.set(pid, {});
    }
    if (needLinks && changedPids.length > 0) {
      // Links read behind the listing serve; the others cost one entry for all of them.
      const unread = changedPids.filter((pid) => !earlyRead.get(pid)?.links);
      const read =
        unread.length > 0
          ? await ctx.sys.readlinks(unread.flatMap((pid) => [`/proc/${pid}/ns/mnt`, `/proc/${pid}/ns/net`]))
          : [];
      const linksOf = (pid: number): ReadlinkResult[] => {
        const e = earlyRead.get(pid)?.links;
        if (e) return e;
        const i = unread.indexOf(pid);
        return [read[2 * i], read[2 * i + 1]];
      };
      changedPids.forEach((pid) => {
        const p = this.procs.get(pid);
        if (!p) return;
        const ns = (l: ReadlinkResult): string | undefined =>
          l.target !== undefined ? NS_RE.exec(l.target)?.[1] : isVanished(l.error) ? undefined : `?${pid}`;
        const [mnt, net] = linksOf(pid);
        p.mnt = ns(mnt);
        p.net = ns(net);
        if (p.mnt !== undefined && !mntReaders.has(p.mnt)) mntChanged = true;
        if (p.net !== undefined && !netReaders.has(p.net)) netChanged = true;
      });
    }
    this.primed = true;
    return { files, mntReaders, netReaders, mntChanged, netChanged };
  }

  /**
   * Reads `pids` (stat, status, cmdline) and takes in those that run their program: their
   * rows are known from now on (`changed`). A new process that looks mid-exec is held back
   * (`held`, up to MAX_HOLDS ticks; a `recheck` within the same tick does not count as one).
   * A PID gone since the listing is forgotten (seen again next tick if still there).
   */
  private async admit(
    ctx: PluginContext,
    pids: readonly number[],
    recheck: boolean,
    earlyRead?: ReadonlyMap<number, EarlyProcess>,
  ): Promise<{ changed: number[]; held: number[] }> {
    const lastBoot = this.bootMs;
    const early = lastBoot !== undefined && earlyRead ? earlyRead : new Map<number, EarlyProcess>();
    const rest = pids.filter((pid) => !early.has(pid));
    const records: ProcessRecord[] =
      rest.length > 0 ? await readProcesses(ctx, { pids: rest, files: ['cmdline'] }) : [];
    // readProcesses read /proc/stat along (ctx.proc keeps it); else the last read's value.
    if (rest.length === 0 && lastBoot !== undefined) ctx.proc.setBootTime(lastBoot);
    const bootMs = await ctx.proc.bootTime();
    this.bootMs = bootMs;
    // With the boot time just read, if any: one value for every row of the tick (a clock
    // step moves /proc/stat's btime, and START_MS is the row's time since it).
    for (const [pid, e] of early) {
      if (!pids.includes(pid)) continue;
      const rec = processRecordFromFiles(ctx, pid, e.files, bootMs, ['cmdline']);
      if (rec) records.push(rec);
    }
    const rows = new Map(processRows(records, this.users, bootMs).map((r) => [r.PID, r]));
    const byPid = new Map(records.map((r) => [r.task.pid, r]));
    const changed: number[] = [];
    const held: number[] = [];
    for (const pid of pids) {
      const row = rows.get(pid);
      const known = this.procs.get(pid);
      if (!row) {
        this.procs.delete(pid);
        this.deferred.delete(pid);
        continue;
      }
      if (known?.row && known.row.START_MS === row.START_MS) continue;
      // Read between fork and exec (or before the new program named itself): held back up
      // to MAX_HOLDS ticks, so that the event carries the program's argv and name.
      const prior = this.deferred.get(pid);
      const times = prior && prior.start === row.START_MS ? prior.held : 0;
      if (
        this.primed &&
        !known &&
        (recheck || times < MAX_HOLDS) &&
        looksMidExec(row, this.procs.get(Number(row.PPID))?.row, (comm, args) => {
          const { session, pgrp } = byPid.get(pid) ?? {};
          return [session, pgrp].some((leader) => {
            const twin = leader !== undefined && leader !== pid ? this.procs.get(leader)?.row : undefined;
            return twin?.COMM === comm && twin.ARGS === args;
          });
        })
      ) {
        this.deferred.set(pid, { start: row.START_MS, held: recheck ? Math.max(times, 1) : times + 1 });
        held.push(pid);
        continue;
      }
      this.deferred.delete(pid);
      this.procs.set(pid, { row });
      changed.push(pid);
    }
    return { changed, held };
  }

  /** The module fingerprint: /proc/modules as read. */
  modulePrint(view: TickView): string | undefined {
    const f = view.files.get('/proc/modules');
    return f?.data ? new TextDecoder().decode(f.data) : undefined;
  }

  /** The mount fingerprint: every probed namespace's mountinfo; undefined when one is missing. */
  mountPrint(view: TickView): string | undefined {
    if (view.mntChanged || view.mntReaders.size === 0) return undefined;
    const parts: string[] = [];
    for (const [ns, pid] of [...view.mntReaders].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const f = view.files.get(`/proc/${pid}/mountinfo`);
      if (!f?.data) return undefined;
      parts.push(`${ns}\n${new TextDecoder().decode(f.data)}`);
    }
    return parts.join('\0');
  }

  /** The listener fingerprint: per probed network namespace, its listening inodes; undefined when a table is missing. */
  listenerPrint(view: TickView): string | undefined {
    if (view.netChanged || view.netReaders.size === 0) return undefined;
    const parts: string[] = [];
    for (const [ns, pid] of [...view.netReaders].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const inodes: bigint[] = [];
      for (const t of NET_TABLES) {
        const f = view.files.get(`/proc/${pid}/net/${t}`);
        if (!f) return undefined;
        // A kernel without IPv6 has no tcp6/udp6: nothing listens there.
        if (f.error) {
          if (isVanished(f.error) && (t === 'tcp6' || t === 'udp6')) continue;
          return undefined;
        }
        inodes.push(...listenerInodes(t, f.data!));
      }
      inodes.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      parts.push(`${ns}:${inodes.join(',')}`);
    }
    return parts.join(' ');
  }
}

/** Bytes of one probe read (a seq_file hands over at most a page per read: fs/seq_file.c). */
const PROBE_CHUNK = 16384;
/** The /proc listing's getdents64 buffer, and the probe that tells its end (as ctx.sys.listDir). */
const LIST_BUFFER = 32 << 10;
const LIST_EOF_PROBE = 280;
const PID_NAME = /^[1-9]\d{0,9}$/;

/** A process's files and namespace links read behind the listing (probeAndList's `early`). */
interface EarlyProcess {
  files: Record<(typeof PROCESS_FILES)[number], FileReadResult>;
  /** ns/mnt and ns/net, when asked for. */
  links?: ReadlinkResult[];
}

/** Buffer of a namespace link read behind the listing (`mnt:[4026531841]`); a full one is read again. */
const EARLY_LINK_BUFFER = 64;

/**
 * The probe files and then the /proc listing, in one guest entry: per file openat, one
 * read, a 1-byte read that tells its end, close (as ctx.sys.readFiles' first pass); then
 * openat /proc, getdents64 and an end probe, close (as ctx.proc.listPids: the PIDs, and
 * the inode of each /proc/PID); then, with `early`, the same reads of PROCESS_FILES for
 * each of its PIDs and their ns/mnt and ns/net links. A file or a listing longer than
 * that (a guest with many sockets or mounts, or a huge process count) is read again
 * whole by the SDK's helpers: one more entry, only then. Returns the files by path (data or error, as readFiles), the PIDs
 * listed, ascending, with their inodes (none when the SDK's listing was used), and the
 * early PIDs whose reads were whole (read after the listing: a PID the listing does not
 * have is not the caller's to use).
 */
export async function probeAndList(
  ctx: PluginContext,
  paths: readonly string[],
  early?: { pids: readonly number[]; links: boolean },
): Promise<{
  files: Map<string, FileReadResult>;
  pids: number[];
  inodes?: Map<number, bigint>;
  early: Map<number, EarlyProcess>;
}> {
  const { O_RDONLY, O_CLOEXEC, O_DIRECTORY, AT_FDCWD } = flags;
  const b = ctx.sys.batch();
  const readOf = (path: string, chunk: number) =>
    b.group(() => {
      const fd = b.openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
      const data = b.read(fd, chunk);
      const end = b.read(fd, 1);
      b.close(fd);
      return { path, fd, data, end };
    });
  /** The file read whole, its error, or undefined when it is longer than its chunk. */
  const wholeOf = ({ path, fd, data, end }: ReturnType<typeof readOf>): FileReadResult | undefined => {
    const error = fd.result().error ?? data.result().error ?? end.result().error;
    if (error) return { path, error };
    return end.result().data.length === 0 ? { path, data: data.result().data } : undefined;
  };
  const reads = paths.map((path) => readOf(path, PROBE_CHUNK));
  const list = b.group(() => {
    const fd = b.openat(AT_FDCWD, '/proc', O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const g1 = b.getdents64(fd, LIST_BUFFER);
    const g2 = b.getdents64(fd, LIST_EOF_PROBE);
    b.close(fd);
    return { fd, g1, g2 };
  });
  const behind = (early?.pids ?? []).map((pid) => ({
    pid,
    files: PROCESS_FILES.map((n) => readOf(ProcFs.path(pid, n), ProcFs.chunkFor(n))),
    links: early?.links
      ? (['mnt', 'net'] as const).map((kind) => {
          const path = ProcFs.path(pid, `ns/${kind}`);
          return { path, ref: b.readlinkat(AT_FDCWD, path, EARLY_LINK_BUFFER) };
        })
      : undefined,
  }));
  await b.submit();
  const files = new Map<string, FileReadResult>();
  const longer: string[] = [];
  reads.forEach((r) => {
    const f = wholeOf(r);
    if (f) files.set(r.path, f);
    else longer.push(r.path);
  });
  if (longer.length > 0)
    for (const f of await ctx.sys.readFiles(longer.map((path) => ({ path, chunkSize: PROBE_CHUNK }))))
      files.set(f.path, f);
  let pids: number[] | undefined;
  let inodes: Map<number, bigint> | undefined;
  const listError = list.fd.result().error ?? list.g1.result().error ?? list.g2.result().error;
  if (!listError && list.g2.result().data.length === 0) {
    pids = [];
    inodes = new Map();
    for (const d of decodeDirents64(list.g1.result().data))
      if (PID_NAME.test(d.name)) {
        pids.push(Number(d.name));
        inodes.set(Number(d.name), d.ino);
      }
    pids.sort((a, c) => a - c);
  }
  const earlyRead = new Map<number, EarlyProcess>();
  for (const e of behind) {
    const [stat, status, cmdline] = e.files.map(wholeOf);
    if (!stat || !status || !cmdline) continue;
    let links: ReadlinkResult[] | undefined;
    if (e.links) {
      links = [];
      for (const { path, ref } of e.links) {
        const r = ref.result();
        if (r.error) links.push({ path, error: r.error });
        else if (r.data.length < EARLY_LINK_BUFFER)
          links.push({ path, target: new TextDecoder().decode(r.data) });
        else break;
      }
      if (links.length < e.links.length) continue;
    }
    earlyRead.set(e.pid, { files: { stat, status, cmdline }, ...(links ? { links } : {}) });
  }
  // Longer than one buffer, or unreadable here: the SDK's listing (which throws its error).
  if (pids) return { files, pids, inodes, early: earlyRead };
  return { files, pids: await ctx.proc.listPids(), early: earlyRead };
}

/** A plugin's rows from its run (an array or an async iterable), with default options. */
async function fullRows(def: PluginDefinition, ctx: PluginContext): Promise<WatchRow[]> {
  const out: unknown = def.run({ ...ctx, options: resolveOptions(def, {}) });
  if (out instanceof Promise) return (await out) as WatchRow[];
  const rows: WatchRow[] = [];
  for await (const r of out as AsyncIterable<WatchRow>) rows.push(r);
  return rows;
}

/** The incremental sources of one watch loop. */
export interface IncrementalSources {
  /** One plugin call per source, in the order given. */
  calls: PluginCall[];
  /** Call before each tick's runAll: the sources' plugins then share one refresh. */
  beginTick(): void;
}

/** Incremental plugins for `sources`, sharing one probe of the guest per tick. */
export function incrementalSources(sources: readonly SourceName[]): IncrementalSources {
  const probe = new GuestProbe(new Set(sources));
  // A source that delegates to a whole plugin when its fingerprint moved.
  const delegating = (
    key: 'module' | 'mount' | 'listener',
    def: PluginDefinition,
    print: (view: TickView) => string | undefined,
  ): PluginDefinition =>
    definePlugin({
      name: `watch-${def.name}`,
      description: `${def.name}, run again only when the guest shows a change (vmi watch)`,
      version: '1.0.0',
      columns: def.columns,
      async run(ctx) {
        const view = await probe.refresh(ctx);
        const now = print(view);
        const last = probe.last.get(key);
        if (now !== undefined && last && last.print === now) return last.rows;
        probe.last.delete(key);
        const rows = await fullRows(def, ctx);
        // Kept only with a fingerprint to compare against: otherwise the next tick runs it again.
        if (now !== undefined) probe.last.set(key, { print: now, rows });
        return rows;
      },
    }) as unknown as PluginDefinition;
  const plugins: Record<SourceName, PluginDefinition> = {
    process: definePlugin({
      name: 'watch-processes-incremental',
      description: 'watch-processes, reading only the processes that are new since the last tick',
      version: '1.0.0',
      columns: watchProcesses.columns,
      async run(ctx) {
        await probe.refresh(ctx);
        return probe.processRows();
      },
    }) as unknown as PluginDefinition,
    // The built-ins the full snapshots run (sources.ts), by name: src/watch sits above the API.
    module: delegating('module', resolvePlugin('lsmod'), (v) => probe.modulePrint(v)),
    mount: delegating('mount', resolvePlugin('mountinfo'), (v) => probe.mountPrint(v)),
    listener: delegating('listener', resolvePlugin('sockstat'), (v) => probe.listenerPrint(v)),
  };
  return {
    calls: sources.map((s) => ({ plugin: plugins[s] })),
    beginTick: () => probe.beginTick(),
  };
}
