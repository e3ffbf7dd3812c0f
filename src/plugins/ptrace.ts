/**
 * ptrace: tracer/tracee pairs (Volatility's linux.ptrace), from TracerPid of
 * /proc/PID/task/TID/status (fs/proc/array.c task_state: the tracer's TID in the reader's
 * PID namespace, 0 when untraced). One row per traced task, named with its tracer; and a
 * row per tracer naming each tracee it holds, as Volatility shows both sides. State (t:
 * tracing stop) comes from the same file. PTRACE_O_* options are not exposed by /proc,
 * so Volatility's Flags column is N/A.
 *
 * Cost: 1 batch for the /proc listing (none with --pid), 1 for the task directories, 1
 * for every status file, plus 1 for the tracers' status when --pid leaves them out:
 * 3–4 batches, 3 + 3 × tasks calls.
 */
import {
  definePlugin,
  isVanished,
  notAvailable,
  PID_OPTION,
  proc as procParsers,
  type Row,
} from '../sdk/index.js';

const columns = [
  { name: 'Process', type: 'utf8', description: 'Task name' },
  { name: 'PID', type: 'int32', description: 'Process id (thread-group id)' },
  { name: 'TID', type: 'int32', description: 'Thread id' },
  { name: 'Tracer TID', type: 'int32', description: 'The task tracing this one (N/A on a tracer row)' },
  { name: 'Tracee TID', type: 'int32', description: 'A task this one traces (N/A on a tracee row)' },
  {
    name: 'Flags',
    type: 'utf8',
    description: "PTRACE_O_* options: N/A, /proc does not show a tracee's ptrace flags",
  },
  { name: 'Tracer Process', type: 'utf8', description: 'Name of the tracer' },
  { name: 'Tracee Process', type: 'utf8', description: 'Name of the tracee' },
  { name: 'State', type: 'utf8', description: "The tracee's scheduler state (t: stopped by its tracer)" },
] as const;

interface TaskInfo {
  pid: number;
  tid: number;
  name: string;
  tracer: number;
  state: string;
}

const NO_FLAGS = notAvailable('/proc does not expose ptrace options');

export const ptrace = definePlugin({
  name: 'ptrace',
  volatilityName: 'linux.ptrace',
  description: 'Lists tracer/tracee pairs (tasks traced with ptrace and their tracers)',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION },
  async run(ctx) {
    const read = async (pids: readonly number[]): Promise<Map<number, TaskInfo>> => {
      const tids = await ctx.proc.listTids(pids);
      const tasks: { pid: number; tid: number }[] = [];
      for (const pid of pids) {
        const t = tids.get(pid);
        if (Array.isArray(t)) for (const tid of t) tasks.push({ pid, tid });
      }
      const files = await ctx.sys.readFiles(
        tasks.map((t) => ({ path: `/proc/${t.pid}/task/${t.tid}/status`, chunkSize: 2048 })),
      );
      const out = new Map<number, TaskInfo>();
      files.forEach((f, i) => {
        if (f.error) {
          if (!isVanished(f.error)) ctx.warn(`${f.path}: ${f.error.message}`);
          return;
        }
        try {
          const st = procParsers.parsePidStatus(f.data!, f.path);
          const tracer = Number(st.fields.get('TracerPid') ?? '0');
          out.set(tasks[i].tid, {
            ...tasks[i],
            name: st.name ?? '',
            tracer: Number.isSafeInteger(tracer) && tracer > 0 ? tracer : 0,
            state: st.state ?? '',
          });
        } catch (e) {
          ctx.warn((e as Error).message);
        }
      });
      return out;
    };
    const selected = ctx.options.pid.length > 0;
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const tasks = await read(pids);
    // With --pid: a selected task's tracer (and its name) may lie outside the selection.
    const missing = [...tasks.values()].map((t) => t.tracer).filter((t) => t > 0 && !tasks.has(t));
    if (selected && missing.length > 0)
      for (const [tid, t] of await read([...new Set(missing)])) if (!tasks.has(tid)) tasks.set(tid, t);
    const wanted = (t: TaskInfo | undefined) => !selected || (t !== undefined && pids.includes(t.pid));
    const rows: Row<typeof columns>[] = [];
    const traced = [...tasks.values()].filter((t) => t.tracer > 0).sort((a, b) => a.tid - b.tid);
    for (const t of traced) {
      const tracer = tasks.get(t.tracer);
      const tracerName = tracer?.name ?? notAvailable('tracer not readable');
      if (wanted(tracer))
        rows.push({
          Process: tracerName,
          PID: tracer?.pid ?? t.tracer,
          TID: t.tracer,
          'Tracer TID': notAvailable('tracer row'),
          'Tracee TID': t.tid,
          Flags: NO_FLAGS,
          'Tracer Process': tracerName,
          'Tracee Process': t.name,
          State: t.state,
        });
      if (wanted(t))
        rows.push({
          Process: t.name,
          PID: t.pid,
          TID: t.tid,
          'Tracer TID': t.tracer,
          'Tracee TID': notAvailable('tracee row'),
          Flags: NO_FLAGS,
          'Tracer Process': tracerName,
          'Tracee Process': t.name,
          State: t.state,
        });
    }
    return rows;
  },
});
