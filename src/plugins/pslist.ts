/**
 * pslist: the processes of the guest, as its own kernel reports them through /proc.
 * Volatility's linux.pslist walks task_struct lists with a symbol table; here the guest
 * kernel does the walk, so the same plugin works on every kernel version.
 */
import { parsePidStat, parsePidStatus, parseProcStat, ProcParseError } from '../abi/linux/proc/index.js';
import {
  definePlugin,
  isVanished,
  ProcFs,
  unreadable,
  type FileReadResult,
  type PluginContext,
  type Row,
  type RowValue,
  type TaskId,
} from '../sdk/index.js';

const columns = [
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

type PslistRow = Row<typeof columns>;

export const pslist = definePlugin({
  name: 'pslist',
  description: 'Lists the processes (or threads) of the guest with ids, credentials and start time',
  version: '1.0.0',
  columns,
  options: {
    pid: { type: 'integer', multiple: true, description: 'Only these process ids (repeatable)' },
    threads: { type: 'boolean', description: 'One row per thread (from /proc/PID/task/TID)' },
  },
  async run(ctx) {
    const { proc, sys, options } = ctx;

    // Batch 1 (listing): /proc, unless the user named the PIDs.
    const pids =
      options.pid.length > 0 ? [...new Set(options.pid)].sort((a, b) => a - b) : await proc.listPids();

    // With --threads, one more round lists every /proc/PID/task at once.
    let tasks: TaskId[];
    if (options.threads) {
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
    ctx.progress(`reading ${tasks.length} ${options.threads ? 'threads' : 'processes'}`);

    // Batch 2: /proc/stat and the stat + status files of every task, together.
    const file = (t: TaskId, name: string) => ProcFs.path(t.pid, name, options.threads ? t.tid : undefined);
    const requests = [{ path: '/proc/stat', chunkSize: ProcFs.chunkForPath('/proc/stat') }];
    for (const t of tasks) {
      requests.push({ path: file(t, 'stat'), chunkSize: ProcFs.chunkFor('stat') });
      requests.push({ path: file(t, 'status'), chunkSize: ProcFs.chunkFor('status') });
    }
    const results = await sys.readFiles(requests);

    const bootMs = bootTime(ctx, results[0]);
    const rows: PslistRow[] = [];
    tasks.forEach((t, i) => {
      const row = taskRow(ctx, t, results[1 + 2 * i], results[2 + 2 * i], bootMs);
      if (row) rows.push(row);
    });
    return rows;
  },
});

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

type Parsed<T> = { ok: true; value: T } | { ok: false; cell: RowValue };

/** Parses one file; on failure warns and gives the UNREADABLE cell to show instead. */
function parseFile<T>(
  ctx: PluginContext,
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

/** One row, or undefined for a task that exited between listing and reading. */
function taskRow(
  ctx: PluginContext,
  t: TaskId,
  statFile: FileReadResult,
  statusFile: FileReadResult,
  bootMs: number | RowValue,
): PslistRow | undefined {
  if (isVanished(statFile.error) || isVanished(statusFile.error)) return undefined;

  const stat = parseFile(ctx, t.pid, statFile, (d) => parsePidStat(d, statFile.path));
  const ids = parseFile(ctx, t.pid, statusFile, (d) => {
    const st = parsePidStatus(d, statusFile.path);
    // Every kernel writes Uid: and Gid:; without them the content is not a status file.
    if (!st.uid || !st.gid) throw new ProcParseError(statusFile.path, 'no Uid/Gid lines');
    return { uid: st.uid, gid: st.gid };
  });
  const s = stat.ok ? stat.value : undefined;
  const noStat = stat.ok ? null : stat.cell;
  const id = ids.ok ? ids.value : undefined;
  const noIds = ids.ok ? null : ids.cell;

  let created: RowValue = noStat;
  if (s) created = typeof bootMs === 'number' ? new Date(ctx.proc.startTimeMs(bootMs, s.starttime)) : bootMs;
  return {
    PID: t.pid,
    TID: t.tid,
    PPID: s ? s.ppid : noStat,
    COMM: s ? s.comm : noStat,
    UID: id ? id.uid.real : noIds,
    GID: id ? id.gid.real : noIds,
    EUID: id ? id.uid.effective : noIds,
    EGID: id ? id.gid.effective : noIds,
    'CREATION TIME': created,
    STATE: s ? s.state : noStat,
    THREADS: s ? s.numThreads : noStat,
  };
}
