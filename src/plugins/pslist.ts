/**
 * pslist: the processes of the guest, as its own kernel reports them through /proc.
 * Volatility's linux.pslist walks task_struct lists with a symbol table; here the guest
 * kernel does the walk, so the same plugin works on every kernel version. Every PID
 * namespace is listed (the shadow lives in the guest's initial one); PID_NS_ID, NSPID,
 * CGROUP and CONTAINER say where each process lives.
 */
import {
  CONTAINER_OPTION,
  definePlugin,
  PID_OPTION,
  PROCESS_NS_COLUMNS,
  readProcesses,
} from '../sdk/index.js';

export const pslist = definePlugin({
  name: 'pslist',
  volatilityName: 'linux.pslist',
  description: 'Lists the processes (or threads) of the guest with ids, credentials and start time',
  version: '1.0.0',
  columns: PROCESS_NS_COLUMNS,
  options: {
    pid: PID_OPTION,
    threads: { type: 'boolean', description: 'One row per thread (from /proc/PID/task/TID)' },
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), 1 more for --threads, then 1 per slice of
    // processes for their files and namespace links (4 slices for a short list, else
    // ~100 processes each: sliceBounds in src/sdk/processes.ts).
    const records = await readProcesses(ctx, {
      pids: ctx.options.pid,
      threads: ctx.options.threads,
      namespaces: true,
      containers: ctx.options.container,
    });
    // Written out rather than spread: one small fixed-shape object per row (two spreads
    // made a much bigger one, a twentieth of a resident pslist's garbage).
    return records.map(({ row, ns }) => ({
      PID: row.PID,
      TID: row.TID,
      PPID: row.PPID,
      COMM: row.COMM,
      UID: row.UID,
      GID: row.GID,
      EUID: row.EUID,
      EGID: row.EGID,
      'CREATION TIME': row['CREATION TIME'],
      STATE: row.STATE,
      THREADS: row.THREADS,
      PID_NS_ID: ns!.PID_NS_ID,
      NSPID: ns!.NSPID,
      CGROUP: ns!.CGROUP,
      CONTAINER: ns!.CONTAINER,
    }));
  },
});
