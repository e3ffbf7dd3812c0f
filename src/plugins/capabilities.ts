/**
 * capabilities: the five capability sets of every task (Volatility's linux.capabilities),
 * from the CapInh, CapPrm, CapEff, CapBnd and CapAmb lines of /proc/PID/task/TID/status
 * (fs/proc/array.c task_cap). Each set is given by name (include/uapi/linux/capability.h,
 * `all` when it holds every capability, `-` for none) as Volatility prints it, and as the
 * raw 64-bit mask beside it, which Volatility does not show.
 *
 * Cost: 1 batch for the /proc listing (none with --pid), 1 for the task directories, 1
 * for every status file (+1 follow-up for oversized ones): 3 batches, 3 + 3 × tasks calls.
 */
import { capabilityNames, describeCaps, parseCapMask } from '../abi/linux/capabilities.js';
import {
  definePlugin,
  isVanished,
  PID_OPTION,
  proc as procParsers,
  unreadable,
  type Row,
} from '../sdk/index.js';

const SETS = [
  ['cap_inheritable', 'CapInh'],
  ['cap_permitted', 'CapPrm'],
  ['cap_effective', 'CapEff'],
  ['cap_bounding', 'CapBnd'],
  ['cap_ambient', 'CapAmb'],
] as const;

const columns = [
  { name: 'Name', type: 'utf8', description: 'Task name (Name of /proc/PID/task/TID/status)' },
  { name: 'Tid', type: 'int32', description: 'Thread id' },
  { name: 'Pid', type: 'int32', description: 'Process id (thread-group id)' },
  { name: 'PPid', type: 'int32', description: 'Parent process id' },
  { name: 'EUID', type: 'int64', description: 'Effective user id' },
  { name: 'cap_inheritable', type: 'utf8', description: 'Inheritable set, by name (CapInh)' },
  { name: 'cap_permitted', type: 'utf8', description: 'Permitted set, by name (CapPrm)' },
  { name: 'cap_effective', type: 'utf8', description: 'Effective set, by name (CapEff)' },
  { name: 'cap_bounding', type: 'utf8', description: 'Bounding set, by name (CapBnd)' },
  { name: 'cap_ambient', type: 'utf8', description: 'Ambient set, by name (CapAmb; N/A before Linux 4.3)' },
  { name: 'CapInh', type: 'hex64', description: 'Inheritable set as the kernel prints it (mask)' },
  { name: 'CapPrm', type: 'hex64', description: 'Permitted set (mask)' },
  { name: 'CapEff', type: 'hex64', description: 'Effective set (mask)' },
  { name: 'CapBnd', type: 'hex64', description: 'Bounding set (mask)' },
  { name: 'CapAmb', type: 'hex64', description: 'Ambient set (mask)' },
  {
    name: 'BEYOND_BOUNDING',
    type: 'utf8',
    description:
      'Permitted or inheritable capabilities outside the bounding set (kept from before a bounding drop): usually empty',
  },
] as const;

export const capabilities = definePlugin({
  name: 'capabilities',
  volatilityName: 'linux.capabilities',
  description:
    'Lists the capability sets (inheritable, permitted, effective, bounding, ambient) of every task',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION },
  async run(ctx) {
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const tids = await ctx.proc.listTids(pids);
    const tasks: { pid: number; tid: number }[] = [];
    for (const pid of pids) {
      const t = tids.get(pid);
      if (Array.isArray(t)) for (const tid of t) tasks.push({ pid, tid });
      else if (t && !isVanished(t)) ctx.warn(`pid ${pid}: ${t.message}`);
    }
    const files = await ctx.sys.readFiles(
      tasks.map((t) => ({ path: `/proc/${t.pid}/task/${t.tid}/status`, chunkSize: 2048 })),
    );
    const rows: Row<typeof columns>[] = [];
    files.forEach((f, i) => {
      const { pid, tid } = tasks[i];
      if (isVanished(f.error)) return;
      if (f.error) {
        ctx.warn(`${f.path}: ${f.error.message}`);
        return;
      }
      let st;
      try {
        st = procParsers.parsePidStatus(f.data!, f.path);
      } catch (e) {
        ctx.warn((e as Error).message);
        return;
      }
      const row: Record<string, Row<typeof columns>[keyof Row<typeof columns>]> = {
        Name: st.name ?? unreadable('no Name line'),
        Tid: tid,
        Pid: pid,
        PPid: st.ppid ?? unreadable('no PPid line'),
        EUID: st.uid?.effective ?? unreadable('no Uid line'),
      };
      const masks: Record<string, bigint | undefined> = {};
      for (const [col, key] of SETS) {
        const raw = st.fields.get(key);
        const mask = raw === undefined ? undefined : parseCapMask(raw);
        masks[key] = mask;
        const why = raw === undefined ? `no ${key} line` : `bad ${key}: ${raw.slice(0, 20)}`;
        row[col] = mask === undefined ? unreadable(why) : describeCaps(mask);
        row[key] = mask === undefined ? unreadable(why) : mask;
      }
      const bnd = masks.CapBnd;
      row.BEYOND_BOUNDING =
        bnd === undefined
          ? unreadable('no CapBnd')
          : capabilityNames(((masks.CapPrm ?? 0n) | (masks.CapInh ?? 0n)) & ~bnd).join(', ');
      rows.push(row as Row<typeof columns>);
    });
    return rows;
  },
});
