/**
 * pslist: the processes of the guest, as its own kernel reports them through /proc.
 * Volatility's linux.pslist walks task_struct lists with a symbol table; here the guest
 * kernel does the walk, so the same plugin works on every kernel version.
 */
import { definePlugin, PID_OPTION, type Row } from '../sdk/index.js';
import { readProcesses } from './lib/processes.js';

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

export type PslistRow = Row<typeof columns>;

export const pslist = definePlugin({
  name: 'pslist',
  description: 'Lists the processes (or threads) of the guest with ids, credentials and start time',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    threads: { type: 'boolean', description: 'One row per thread (from /proc/PID/task/TID)' },
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), 1 more for --threads, 1 for all the files.
    const records = await readProcesses(ctx, { pids: ctx.options.pid, threads: ctx.options.threads });
    return records.map((r) => r.row);
  },
});
