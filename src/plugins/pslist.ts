/**
 * pslist: the processes of the guest, as its own kernel reports them through /proc.
 * Volatility's linux.pslist walks task_struct lists with a symbol table; here the guest
 * kernel does the walk, so the same plugin works on every kernel version.
 */
import { definePlugin, PID_OPTION, PROCESS_COLUMNS, readProcesses } from '../sdk/index.js';

export const pslist = definePlugin({
  name: 'pslist',
  description: 'Lists the processes (or threads) of the guest with ids, credentials and start time',
  version: '1.0.0',
  columns: PROCESS_COLUMNS,
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
