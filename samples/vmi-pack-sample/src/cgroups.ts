/**
 * cgroups: the control-group membership of every process, one row per hierarchy, from
 * /proc/PID/cgroup (`hierarchy-ID:controller-list:cgroup-path`). On a cgroup v2 (unified)
 * system there is one line, `0::/path`, with an empty controller list.
 */
import { definePlugin, isVanished, unreadable, type Row } from 'vmi/sdk';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (/proc/PID/comm)' },
  { name: 'HIERARCHY', type: 'int32', description: 'Hierarchy id (0 for cgroup v2)' },
  { name: 'CONTROLLERS', type: 'utf8', description: 'Controllers bound to the hierarchy (empty for v2)' },
  { name: 'PATH', type: 'utf8', description: 'Path of the cgroup, relative to the hierarchy root' },
] as const;

/** One line of /proc/PID/cgroup. */
export interface CgroupLine {
  hierarchy: number;
  controllers: string;
  path: string;
}

/** Parses /proc/PID/cgroup. The path may itself contain ':', so only the first two split. */
export function parseCgroup(text: string): CgroupLine[] {
  const out: CgroupLine[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0 || !/^\d+$/.test(line.slice(0, a))) throw new Error(`bad cgroup line '${line}'`);
    out.push({
      hierarchy: Number(line.slice(0, a)),
      controllers: line.slice(a + 1, b),
      path: line.slice(b + 1),
    });
  }
  return out;
}

const utf8 = new TextDecoder();

export const cgroups = definePlugin({
  name: 'cgroups',
  description: 'Lists the control groups of every process (/proc/PID/cgroup)',
  version: '0.1.0',
  columns,
  options: {
    pid: { type: 'integer', multiple: true, description: 'Only these process ids (repeatable)' },
  },
  async run(ctx) {
    const pids = ctx.options.pid.length > 0 ? ctx.options.pid : await ctx.proc.listPids();
    // comm and cgroup of every process in one batch: 2 files per pid.
    const files = await ctx.sys.readFiles(
      pids.flatMap((pid) => [
        { path: `/proc/${pid}/comm`, chunkSize: 64 },
        { path: `/proc/${pid}/cgroup`, chunkSize: 2048 },
      ]),
    );
    const rows: Row<typeof columns>[] = [];
    pids.forEach((pid, i) => {
      const comm = files[2 * i];
      const cgroup = files[2 * i + 1];
      if (isVanished(comm.error) || isVanished(cgroup.error)) return;
      const name = comm.error ? unreadable(comm.error.message) : utf8.decode(comm.data!).replace(/\n$/, '');
      if (cgroup.error) {
        ctx.warn(`pid ${pid}: ${cgroup.path}: ${cgroup.error.message}`);
        const u = unreadable(cgroup.error.message);
        rows.push({ PID: pid, COMM: name, HIERARCHY: u, CONTROLLERS: u, PATH: u });
        return;
      }
      let lines: CgroupLine[];
      try {
        lines = parseCgroup(utf8.decode(cgroup.data!));
      } catch (err) {
        ctx.warn(`pid ${pid}: ${cgroup.path}: ${(err as Error).message}`);
        return;
      }
      for (const l of lines) {
        rows.push({ PID: pid, COMM: name, HIERARCHY: l.hierarchy, CONTROLLERS: l.controllers, PATH: l.path });
      }
    });
    return rows;
  },
});
