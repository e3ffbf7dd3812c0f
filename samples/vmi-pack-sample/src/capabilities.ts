/**
 * capsets: the five capability sets of every process (inheritable, permitted,
 * effective, bounding, ambient) from the `Cap*` lines of /proc/PID/status. Kernel
 * threads have them too (full sets, like root).
 */
import { definePlugin, isVanished, proc, unreadable, type Row } from 'vmi/sdk';
import { decodeCapabilities } from './caps.js';

const SETS = ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'] as const;

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (Name: of status)' },
  { name: 'CapInh', type: 'utf8', description: 'Inheritable set (hex mask, or names with --decode)' },
  { name: 'CapPrm', type: 'utf8', description: 'Permitted set' },
  { name: 'CapEff', type: 'utf8', description: 'Effective set' },
  { name: 'CapBnd', type: 'utf8', description: 'Bounding set' },
  { name: 'CapAmb', type: 'utf8', description: 'Ambient set (kernel 4.3+)' },
] as const;

export const capabilities = definePlugin({
  name: 'capsets',
  description: 'Lists the capability sets of every process (/proc/PID/status)',
  version: '0.1.0',
  columns,
  options: {
    pid: { type: 'integer', multiple: true, description: 'Only these process ids (repeatable)' },
    decode: {
      type: 'boolean',
      description: 'Show capability names (CAP_NET_ADMIN,...) instead of hex masks',
    },
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), 1 for every status file.
    const pids = ctx.options.pid.length > 0 ? ctx.options.pid : await ctx.proc.listPids();
    ctx.progress(`reading the status of ${pids.length} processes`);
    const files = await ctx.proc.readProcFiles(pids, 'status');
    const rows: Row<typeof columns>[] = [];
    for (const pid of pids) {
      const f = files.get(pid)!;
      // A process that exited since the listing did not exist at the moment a row describes.
      if (isVanished(f.error)) continue;
      if (f.error) {
        ctx.warn(`pid ${pid}: ${f.path}: ${f.error.message}`);
        const u = unreadable(f.error.message);
        rows.push({ PID: pid, COMM: u, CapInh: u, CapPrm: u, CapEff: u, CapBnd: u, CapAmb: u });
        continue;
      }
      const status = proc.parsePidStatus(f.data!, f.path);
      const row: Row<typeof columns> = {
        PID: pid,
        COMM: status.name ?? unreadable('no Name: line'),
        CapInh: '',
        CapPrm: '',
        CapEff: '',
        CapBnd: '',
        CapAmb: '',
      };
      for (const set of SETS) {
        const hex = status.fields.get(set);
        // CapAmb appeared in Linux 4.3: older kernels cannot provide it.
        if (hex === undefined) row[set] = unreadable(`no ${set}: line`);
        else row[set] = ctx.options.decode ? decodeCapabilities(hex) : hex;
      }
      rows.push(row);
    }
    return rows;
  },
});
