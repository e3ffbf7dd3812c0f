/**
 * maps: the memory mappings of every process (Volatility's linux.proc.Maps), from
 * /proc/PID/maps. Kernel threads have no user memory, hence no rows. Volatility's
 * `--dump` (the mapped bytes) is out of scope here.
 *
 * Deleted is the link count of the mapped inode, read with statx through
 * /proc/PID/map_files/START-END (sdk/unlinked.ts). The kernel appends ` (deleted)` to the
 * path of every unlinked dentry, so only the mappings whose path ends that way can be
 * unlinked: those are the ones asked (one more batch, only when there are any), and their
 * link count decides, so a file really named `r (deleted)` stays `r (deleted)`, not deleted.
 */
import { parseMaps } from '../abi/linux/proc/index.js';
import {
  bytesToText,
  DELETED_SUFFIX,
  CONTAINER_OPTION,
  definePlugin,
  flags,
  notAvailable,
  unlinkedPath,
  isVanished,
  ProcFs,
  unreadable,
  PID_OPTION,
  type Row,
  type RowValue,
  selectPids,
} from '../sdk/index.js';

const { STATX_NLINK } = flags;

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
    description:
      "Mapped file, [heap], [stack], [vdso]..., empty if anonymous; an unlinked file's without the kernel's ' (deleted)'",
  },
  {
    name: 'Deleted',
    type: 'bool',
    description:
      'The mapped file is unlinked: its link count (statx st_nlink via /proc/PID/map_files/START-END) is 0; N/A without a file',
  },
] as const;

const NO_FILE = notAvailable('no file behind the mapping');

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
    // Mappings whose path carries the kernel's suffix: their link count is read below.
    const suffixed: { row: Row<typeof columns>; path: string; mapFile: string }[] = [];
    pids.forEach((pid, i) => {
      const commFile = files[2 * i];
      const mapsFile = files[2 * i + 1];
      if (isVanished(commFile.error) || isVanished(mapsFile.error)) return;
      let comm: RowValue;
      if (commFile.error) {
        ctx.warn(`pid ${pid}: ${commFile.error.message}`);
        comm = unreadable(commFile.error.message);
      } else {
        comm = bytesToText(commFile.data!).replace(/\n$/, '');
      }
      if (mapsFile.error) {
        ctx.warn(`pid ${pid}: ${mapsFile.error.message}`);
        return;
      }
      const { entries, errors } = parseMaps(mapsFile.data!, mapsFile.path);
      for (const e of errors) ctx.warn(e.message);
      for (const m of entries) {
        const row: Row<typeof columns> = {
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
          Deleted: m.inode === 0n && m.major === 0 && m.minor === 0 ? NO_FILE : false,
        };
        rows.push(row);
        if (row.Deleted === false && m.path.endsWith(DELETED_SUFFIX)) {
          const range = `${m.start.toString(16)}-${m.end.toString(16)}`;
          suffixed.push({ row, path: m.path, mapFile: ProcFs.path(pid, `map_files/${range}`) });
        }
      }
    });
    if (suffixed.length > 0) {
      // 1 more batch: statx of every suffixed mapping's map_files link.
      const stats = await ctx.sys.statx(
        suffixed.map((x) => x.mapFile),
        { mask: STATX_NLINK },
      );
      suffixed.forEach((x, i) => {
        const r = stats[i];
        if (r.error) {
          ctx.warn(`${r.path}: ${r.error.message}`);
          x.row.Deleted = unreadable(r.error.message);
          return;
        }
        const named = unlinkedPath(x.path, r.stat);
        x.row['File Path'] = named.path;
        x.row.Deleted = named.deleted ?? unreadable('statx without a link count');
      });
    }
    return rows;
  },
});
