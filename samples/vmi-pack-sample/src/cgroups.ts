/**
 * cgroups: the control-group membership of every process, one row per hierarchy, from
 * /proc/PID/cgroup (`hierarchy-ID:controller-list:cgroup-path`). On a cgroup v2 (unified)
 * system there is one line, `0::/path`, with an empty controller list.
 */
import { definePlugin, isVanished, readProcesses, unreadable, type Row } from 'vmi/sdk';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (comm, from /proc/PID/stat)' },
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
    // 1 batch for the listing (none with --pid), 1 for every process's stat and cgroup.
    const records = await readProcesses(ctx, {
      pids: ctx.options.pid,
      credentials: false,
      files: ['cgroup'],
    });
    const rows: Row<typeof columns>[] = [];
    for (const { task, row, files } of records) {
      const { PID, COMM } = row;
      const cgroup = files.cgroup;
      if (isVanished(cgroup.error)) continue;
      if (cgroup.error) {
        ctx.warn(`pid ${task.pid}: ${cgroup.path}: ${cgroup.error.message}`);
        const u = unreadable(cgroup.error.message);
        rows.push({ PID, COMM, HIERARCHY: u, CONTROLLERS: u, PATH: u });
        continue;
      }
      let lines: CgroupLine[];
      try {
        lines = parseCgroup(utf8.decode(cgroup.data!));
      } catch (err) {
        ctx.warn(`pid ${task.pid}: ${cgroup.path}: ${(err as Error).message}`);
        continue;
      }
      for (const l of lines) {
        rows.push({ PID, COMM, HIERARCHY: l.hierarchy, CONTROLLERS: l.controllers, PATH: l.path });
      }
    }
    return rows;
  },
});
