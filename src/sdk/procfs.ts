/**
 * /proc helpers on top of the syscall API. Everything here reads through the guest's own
 * procfs, so it works on any kernel version without symbols.
 */
import { USER_HZ } from '../abi/linux/flags.js';
import { parseProcStat, parseUptime, type ProcUptime } from '../abi/linux/proc/index.js';
import type { DirListResult, FileReadResult, ReadFilesOptions, SyscallApi } from './syscall-api.js';

/**
 * First-read sizes for per-process /proc files: big enough for nearly every process, so
 * that reading all of them costs one batch, small enough that hundreds fit one batch.
 */
export const PROC_FILE_CHUNK: Readonly<Record<string, number>> = Object.freeze({
  stat: 1024,
  status: 2048,
  statm: 256,
  cmdline: 4096,
  comm: 64,
  environ: 8192,
  io: 512,
  limits: 2048,
  mountinfo: 16384,
  maps: 16384,
  // One line on cgroup v2 (`0::/path`), a dozen on v1.
  cgroup: 1024,
});

/** /proc/stat is long on many-CPU guests (one line per CPU, a long intr line). */
const PROC_STAT_CHUNK = 8192;

const PID_RE = /^[1-9]\d{0,9}$/;

/** A task to read: a process (tid === pid) or one of its threads. */
export interface TaskId {
  pid: number;
  tid: number;
}

/**
 * What a host that runs plugins on one guest again and again (an API Guest, `vmi serve`)
 * keeps between runs to spare the guest a round trip: the PIDs the last full listing
 * found. readProcesses reads the first of them while the new listing is read, and keeps
 * only those the listing still has (src/sdk/processes.ts).
 */
export interface ProcHints {
  /** The last full listing of /proc, ascending (ProcFs.listPids writes it). */
  pids?: readonly number[];
}

/** /proc helpers (`ctx.proc`): list processes and threads, read per-process files in one batch, boot time. */
export class ProcFs {
  /**
   * Clock ticks per second of the tick counts in /proc (starttime, utime...): USER_HZ,
   * fixed at 100 by the x86-64 ABI whatever the guest kernel's CONFIG_HZ.
   */
  readonly clockTicks = USER_HZ;
  private bootTimeMs: number | undefined;

  constructor(
    private readonly sys: SyscallApi,
    private readonly hints?: ProcHints,
  ) {}

  /**
   * The PIDs the last full listing on this guest found, when the host keeps them
   * (ProcHints): a guess, for reading ahead, never a listing.
   */
  lastPids(): readonly number[] | undefined {
    return this.hints?.pids;
  }

  /** `/proc/<pid>/<name>`, or `/proc/<pid>/task/<tid>/<name>` for a thread. */
  static path(pid: number, name: string, tid?: number): string {
    return tid === undefined ? `/proc/${pid}/${name}` : `/proc/${pid}/task/${tid}/${name}`;
  }

  /** First-read size for a per-process /proc file (`stat`, `status`, ...). */
  static chunkFor(name: string): number {
    return PROC_FILE_CHUNK[name] ?? 4096;
  }

  /** First-read size for a system /proc file path such as `/proc/stat`. */
  static chunkForPath(path: string): number {
    if (path === '/proc/stat') return PROC_STAT_CHUNK;
    return ProcFs.chunkFor(path.slice(path.lastIndexOf('/') + 1));
  }

  /** PIDs of all processes (thread-group leaders) visible in the guest's /proc, ascending. 1 batch. */
  async listPids(): Promise<number[]> {
    const entries = await this.sys.listDir('/proc');
    const pids = entries
      .filter((e) => PID_RE.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
    if (this.hints) this.hints.pids = pids;
    return pids;
  }

  /**
   * The processes a `--pid` filter (`PID_OPTION`) names, without duplicates and
   * ascending; every process ({@link listPids}, 1 batch) when it names none.
   */
  async selectPids(pids: readonly number[] | undefined): Promise<number[]> {
    if (!pids || pids.length === 0) return this.listPids();
    return [...new Set(pids)].sort((a, b) => a - b);
  }

  /**
   * Thread ids of each process, from /proc/PID/task, in one or two batches for all of
   * them. A process whose task directory cannot be listed maps to its error.
   */
  async listTids(pids: readonly number[]): Promise<Map<number, number[] | DirListResult['error']>> {
    const res = await this.sys.listDirs(pids.map((pid) => ProcFs.path(pid, 'task')));
    const out = new Map<number, number[] | DirListResult['error']>();
    res.forEach((r, i) => {
      out.set(
        pids[i],
        r.error ??
          r
            .entries!.filter((e) => PID_RE.test(e.name))
            .map((e) => Number(e.name))
            .sort((a, b) => a - b),
      );
    });
    return out;
  }

  /**
   * Reads `/proc/<pid>/<name>` for every pid in one batch (plus one for oversized files).
   * Processes that exited meanwhile come back with an ENOENT/ESRCH error (see isVanished).
   */
  async readProcFiles(
    pids: readonly number[],
    name: string,
    options: ReadFilesOptions = {},
  ): Promise<Map<number, FileReadResult>> {
    const chunkSize = options.chunkSize ?? ProcFs.chunkFor(name);
    const res = await this.sys.readFiles(
      pids.map((pid) => ({ path: ProcFs.path(pid, name), chunkSize })),
      options,
    );
    return new Map(res.map((r, i) => [pids[i], r]));
  }

  /**
   * Boot time in ms since the epoch, from `btime` of /proc/stat (whole seconds, so
   * creation times derived from it are exact to ±1 s). Read once, then cached.
   */
  async bootTime(): Promise<number> {
    if (this.bootTimeMs === undefined) {
      const data = await this.sys.readFile('/proc/stat', { chunkSize: PROC_STAT_CHUNK });
      this.bootTimeMs = parseProcStat(data).btime * 1000;
    }
    return this.bootTimeMs;
  }

  /** Remember a boot time read as part of another batch (see pslist). */
  setBootTime(ms: number): void {
    this.bootTimeMs = ms;
  }

  /** /proc/uptime. */
  async uptime(): Promise<ProcUptime> {
    return parseUptime(await this.sys.readFile('/proc/uptime', { chunkSize: 128 }));
  }

  /** Wall-clock ms of a task start: boot time + starttime ticks / USER_HZ. */
  startTimeMs(bootTimeMs: number, starttimeTicks: number): number {
    return bootTimeMs + Math.round((starttimeTicks * 1000) / this.clockTicks);
  }
}
