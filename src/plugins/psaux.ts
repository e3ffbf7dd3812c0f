/**
 * psaux: every process with its full command line (Volatility's linux.psaux), from
 * /proc/PID/cmdline. Kernel threads have no user memory, so their cmdline is empty: they
 * are shown as `[comm]`, like ps does.
 */
import { parseCmdline } from '../abi/linux/proc/index.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  isVanished,
  NAMESPACE_COLUMNS,
  PID_OPTION,
  readProcesses,
  type Row,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'PPID', type: 'int32', description: 'Parent process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (comm)' },
  {
    name: 'ARGS',
    type: 'utf8',
    description: 'argv joined by spaces (/proc/PID/cmdline); [comm] for kernel threads',
  },
  ...NAMESPACE_COLUMNS,
] as const;

export const psaux = definePlugin({
  name: 'psaux',
  volatilityName: 'linux.psaux',
  description: 'Lists the processes of the guest with their command lines',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), then 1 per slice of up to ~85 processes
    // for their namespace links, stat, status, cgroup and cmdline.
    const records = await readProcesses(ctx, {
      pids: ctx.options.pid,
      credentials: false,
      files: ['cmdline'],
      namespaces: true,
      containers: ctx.options.container,
    });
    const rows: Row<typeof columns>[] = [];
    for (const { task, row, ns, files } of records) {
      const f = files.cmdline;
      if (isVanished(f.error)) continue;
      let args: string | ReturnType<typeof unreadable>;
      if (f.error) {
        ctx.warn(`pid ${task.pid}: ${f.path}: ${f.error.message}`);
        args = unreadable(f.error.message);
      } else {
        const argv = parseCmdline(f.data!);
        args = argv.length > 0 ? argv.join(' ') : typeof row.COMM === 'string' ? `[${row.COMM}]` : '';
      }
      rows.push({ PID: row.PID, PPID: row.PPID, COMM: row.COMM, ARGS: args, ...ns! });
    }
    return rows;
  },
});
