/**
 * maps: the memory mappings of every process (Volatility's linux.proc.Maps), from
 * /proc/PID/maps. Kernel threads have no user memory, hence no rows. Volatility's
 * `--dump` (the mapped bytes) is out of scope here.
 */
import { parseMaps } from '../abi/linux/proc/index.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  isVanished,
  ProcFs,
  unreadable,
  PID_OPTION,
  type Row,
  type RowValue,
  selectPids,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  { name: 'Start', type: 'hex64', description: 'First address of the mapping' },
  { name: 'End', type: 'hex64', description: 'Address just past the mapping' },
  { name: 'Flags', type: 'utf8', description: 'r/w/x permissions, p (private) or s (shared)' },
  { name: 'PgOff', type: 'hex64', description: 'Offset in the file, bytes' },
  { name: 'Major', type: 'int32', description: 'Major device number of the file' },
  { name: 'Minor', type: 'int32', description: 'Minor device number of the file' },
  { name: 'Inode', type: 'int64', description: 'Inode of the file (0 for anonymous memory)' },
  {
    name: 'File Path',
    type: 'utf8',
    description: 'Mapped file, [heap], [stack], [vdso]..., empty if anonymous',
  },
] as const;

export const maps = definePlugin({
  name: 'maps',
  description: 'Lists the memory mappings of the processes of the guest',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    const pids = await selectPids(ctx, ctx.options.pid, ctx.options.container);
    ctx.progress(`reading the maps of ${pids.length} processes`);
    // 1 batch for the listing (none with --pid), 1 for the cgroups with --container, 1 for
    // every comm and maps (+ follow-ups for big maps).
    const files = await ctx.sys.readFiles(
      pids.flatMap((pid) => [
        { path: ProcFs.path(pid, 'comm'), chunkSize: 64 },
        { path: ProcFs.path(pid, 'maps'), chunkSize: ProcFs.chunkFor('maps') },
      ]),
    );
    const rows: Row<typeof columns>[] = [];
    pids.forEach((pid, i) => {
      const commFile = files[2 * i];
      const mapsFile = files[2 * i + 1];
      if (isVanished(commFile.error) || isVanished(mapsFile.error)) return;
      let comm: RowValue;
      if (commFile.error) {
        ctx.warn(`pid ${pid}: ${commFile.error.message}`);
        comm = unreadable(commFile.error.message);
      } else {
        comm = new TextDecoder().decode(commFile.data).replace(/\n$/, '');
      }
      if (mapsFile.error) {
        ctx.warn(`pid ${pid}: ${mapsFile.error.message}`);
        return;
      }
      const { entries, errors } = parseMaps(mapsFile.data!, mapsFile.path);
      for (const e of errors) ctx.warn(e.message);
      for (const m of entries) {
        rows.push({
          PID: pid,
          Process: comm,
          Start: m.start,
          End: m.end,
          Flags: m.flags,
          PgOff: m.pgoff,
          Major: m.major,
          Minor: m.minor,
          Inode: m.inode,
          'File Path': m.path,
        });
      }
    });
    return rows;
  },
});
