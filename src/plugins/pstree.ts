/**
 * pstree: pslist's processes as a tree (Volatility's linux.pstree): each process under its
 * parent, children by PID. Processes whose parent is not listed (init, kthreadd, the
 * children of an exited parent that was not reparented yet) are roots.
 */
import {
  CONTAINER_OPTION,
  containerMatches,
  definePlugin,
  PROCESS_NS_COLUMNS,
  processForest,
  readProcesses,
  TREE_DEPTH,
} from '../sdk/index.js';

export const pstree = definePlugin({
  name: 'pstree',
  volatilityName: 'linux.pstree',
  description: 'Shows the processes of the guest as a parent/child tree',
  version: '1.0.0',
  columns: PROCESS_NS_COLUMNS,
  options: {
    pid: {
      type: 'integer',
      multiple: true,
      description: 'Only these process ids and their ancestors (repeatable)',
    },
    container: { ...CONTAINER_OPTION, description: `${CONTAINER_OPTION.description}, with their ancestors` },
  },
  async run(ctx) {
    // Always every process: an ancestor of a --pid or --container process is needed to place it.
    const records = await readProcesses(ctx, { namespaces: true });
    let shown = records;
    const { pid: pids, container } = ctx.options;
    if (pids.length > 0 || container.length > 0) {
      const byPid = new Map(records.map((r) => [r.task.pid, r]));
      const keep = new Set<number>();
      const wanted = [
        ...pids,
        ...records
          .filter((r) => container.length > 0 && containerMatches(r.container, container))
          .map((r) => r.task.pid),
      ];
      for (const pid of wanted) {
        // Walk up; `keep` also stops a parent cycle in a lying guest.
        for (let r = byPid.get(pid); r && !keep.has(r.task.pid); r = byPid.get(r.ppid ?? -1)) {
          keep.add(r.task.pid);
        }
      }
      shown = records.filter((r) => keep.has(r.task.pid));
    }
    return processForest(shown).map(({ record, depth }) => ({
      ...record.row,
      ...record.ns!,
      [TREE_DEPTH]: depth,
    }));
  },
});
