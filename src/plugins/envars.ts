/**
 * envars: the environment each process started with (Volatility's linux.envars), from
 * /proc/PID/environ: one row per variable. Kernel threads have no environment. Changes a
 * process made later with setenv() live in its heap and are not visible here.
 */
import { parseEnviron } from '../abi/linux/proc/index.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  isVanished,
  PID_OPTION,
  readProcesses,
  type Row,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'PPID', type: 'int32', description: 'Parent process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (comm)' },
  { name: 'KEY', type: 'utf8', description: 'Variable name (before the first =)' },
  { name: 'VALUE', type: 'utf8', description: 'Variable value (after the first =)' },
] as const;

export const envars = definePlugin({
  name: 'envars',
  volatilityName: 'linux.envars',
  description: 'Lists the environment variables of the processes of the guest',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), then 1 per few hundred processes for
    // their stat and environ (with --container also their namespace links, status and cgroup).
    const records = await readProcesses(ctx, {
      pids: ctx.options.pid,
      credentials: false,
      files: ['environ'],
      containers: ctx.options.container,
    });
    const rows: Row<typeof columns>[] = [];
    for (const { task, row, files } of records) {
      const f = files.environ;
      if (isVanished(f.error)) continue;
      const who = { PID: row.PID, PPID: row.PPID, COMM: row.COMM };
      if (f.error) {
        ctx.warn(`pid ${task.pid}: ${f.path}: ${f.error.message}`);
        const cell = unreadable(f.error.message);
        rows.push({ ...who, KEY: cell, VALUE: cell });
        continue;
      }
      for (const v of parseEnviron(f.data!)) rows.push({ ...who, KEY: v.key, VALUE: v.value });
    }
    return rows;
  },
});
