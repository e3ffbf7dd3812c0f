/**
 * The open file descriptors of processes, shared by lsof and sockstat: /proc/PID/fd of
 * every process listed in one round, then one batch with, for every process, its comm
 * (and its network namespace link) and, for every descriptor, the readlink of
 * /proc/PID/fd/N (and its statx, which follows the link to the open file: it works for
 * deleted files, sockets and pipes too). Link targets longer than the first buffer are
 * read again in one follow-up batch. The cost does not grow with the number of processes
 * (beyond the batch size limits the SDK splits on).
 */
import { AT_FDCWD, O_CLOEXEC, O_RDONLY, PATH_MAX, STATX_BASIC_STATS } from '../abi/linux/flags.js';
import { decodeStatx, StructDecodeError, type Statx } from '../abi/linux/structs.js';
import { unreadable, type RowValue } from '../output/columns.js';
import type { CallRef } from './batch.js';
import { isVanished, type SyscallError } from './errors.js';
import type { PluginContext } from './plugin.js';
import { bytesToText } from '../util/byte-text.js';
import { ProcFs } from './procfs.js';

/** First readlink buffer: nearly every open file's path fits. */
const LINK_CHUNK = 256;
/** comm is at most 15 bytes (TASK_COMM_LEN - 1) plus a newline. */
const COMM_CHUNK = 64;

export interface OpenFd {
  fd: number;
  /** The link target (`/tmp/x (deleted)`, `socket:[9938]`, `pipe:[12]`, `anon_inode:[eventfd]`). */
  target?: string;
  /** statx of the open file, when asked for. */
  stat?: Statx;
  /** Why the target or the stat could not be read. */
  error?: SyscallError | StructDecodeError;
}

export interface ProcessFds {
  pid: number;
  /** Task name, or UNREADABLE. */
  comm: RowValue;
  /** Network namespace inode (`net:[4026531992]`), when asked for. */
  netns?: bigint | SyscallError | StructDecodeError;
  /** Descriptors by number, ascending. */
  fds: OpenFd[];
}

export interface ReadFdsOptions {
  pids?: readonly number[];
  /** Also statx every descriptor's open file. */
  statx?: boolean;
  /** Also readlink /proc/PID/ns/net. */
  netns?: boolean;
}

const FD_RE = /^(0|[1-9]\d{0,9})$/;
const NETNS_RE = /^net:\[(\d{1,20})\]$/;

/**
 * Processes (all, or `pids`) with their descriptors. Processes that exited meanwhile are
 * left out, descriptors closed meanwhile too; other failures warn.
 */
export async function readProcessFds(ctx: PluginContext, opts: ReadFdsOptions = {}): Promise<ProcessFds[]> {
  const { sys, proc } = ctx;
  const pids = await proc.selectPids(opts.pids);
  ctx.progress(`listing descriptors of ${pids.length} processes`);
  const dirs = await sys.listDirs(
    pids.map((p) => ProcFs.path(p, 'fd')),
    { bufferSize: 4096 },
  );

  interface Pending {
    pid: number;
    fds: number[];
    comm: { fd: CallRef; r: CallRef };
    ns?: CallRef;
    links: CallRef[];
    stats: CallRef[];
  }
  const b = sys.batch();
  const pending: Pending[] = [];
  pids.forEach((pid, i) => {
    const d = dirs[i];
    if (d.error) {
      if (!isVanished(d.error)) ctx.warn(`pid ${pid}: ${d.error.message}`);
      return;
    }
    const fds = d
      .entries!.filter((e) => FD_RE.test(e.name))
      .map((e) => Number(e.name))
      .sort((x, y) => x - y);
    const comm = b.group(() => {
      const fd = b.openat(AT_FDCWD, ProcFs.path(pid, 'comm'), O_RDONLY | O_CLOEXEC);
      const r = b.read(fd, COMM_CHUNK);
      b.close(fd);
      return { fd, r };
    });
    const ns = opts.netns ? b.readlinkat(AT_FDCWD, ProcFs.path(pid, 'ns/net'), LINK_CHUNK) : undefined;
    const links: CallRef[] = [];
    const stats: CallRef[] = [];
    for (const fd of fds) {
      const path = ProcFs.path(pid, `fd/${fd}`);
      links.push(b.readlinkat(AT_FDCWD, path, LINK_CHUNK));
      if (opts.statx) stats.push(b.statx(AT_FDCWD, path, 0, STATX_BASIC_STATS));
    }
    pending.push({ pid, fds, comm, ns, links, stats });
  });
  await b.submit();

  // Targets that filled the first buffer may be longer: read those again with PATH_MAX.
  const long: { p: Pending; j: number; ref?: CallRef }[] = [];
  for (const p of pending) {
    p.links.forEach((l, j) => {
      if (l.result().errno === undefined && l.result().data.length >= LINK_CHUNK) long.push({ p, j });
    });
  }
  const longTargets = new Map<CallRef, string | SyscallError>();
  if (long.length > 0) {
    const b2 = sys.batch();
    for (const x of long)
      x.ref = b2.readlinkat(AT_FDCWD, ProcFs.path(x.p.pid, `fd/${x.p.fds[x.j]}`), PATH_MAX);
    await b2.submit();
    for (const x of long) {
      const r = x.ref!.result();
      longTargets.set(x.p.links[x.j], r.error ?? bytesToText(r.data));
    }
  }

  const out: ProcessFds[] = [];
  for (const p of pending) {
    const commErr = p.comm.fd.result().error ?? p.comm.r.result().error;
    if (isVanished(commErr)) continue;
    let comm: RowValue;
    if (commErr) {
      ctx.warn(`pid ${p.pid}: ${commErr.message}`);
      comm = unreadable(commErr.message);
    } else {
      comm = bytesToText(p.comm.r.result().data).replace(/\n$/, '');
    }
    let netns: ProcessFds['netns'];
    if (p.ns) {
      const r = p.ns.result();
      const m = r.error ? null : NETNS_RE.exec(bytesToText(r.data));
      netns =
        r.error ??
        (m
          ? BigInt(m[1])
          : new StructDecodeError('netns', `not a net namespace link: ${bytesToText(r.data)}`));
    }
    const fds: OpenFd[] = [];
    p.fds.forEach((fd, j) => {
      const l = p.links[j].result();
      const long = longTargets.get(p.links[j]);
      // A descriptor closed between the listing and the readlink did not exist at that moment.
      if (isVanished(l.error) || (typeof long !== 'string' && isVanished(long))) return;
      const entry: OpenFd = { fd };
      if (l.error) entry.error = l.error;
      else if (long !== undefined && typeof long !== 'string') entry.error = long;
      else entry.target = long ?? bytesToText(l.data);
      if (opts.statx && !entry.error) {
        const s = p.stats[j].result();
        if (isVanished(s.error)) return;
        if (s.error) entry.error = s.error;
        else {
          try {
            entry.stat = decodeStatx(s.data);
          } catch (e) {
            if (!(e instanceof StructDecodeError)) throw e;
            entry.error = e;
          }
        }
      }
      fds.push(entry);
    });
    out.push({ pid: p.pid, comm, netns, fds });
  }
  return out;
}
