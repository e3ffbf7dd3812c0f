/**
 * lsof: the open files of every process (Volatility's linux.lsof), one row per file
 * descriptor: the path the kernel gives for /proc/PID/fd/N (`socket:[INODE]`,
 * `pipe:[INODE]`, `anon_inode:[...]` for the others) and the statx of the open file itself,
 * which the magic link leads to even when the file was deleted. Deleted comes from that
 * statx's link count, and an unlinked file's path loses the ` (deleted)` the kernel
 * appends (sdk/unlinked.ts): a file really named `r (deleted)` is not mistaken for it. TID is the process id: threads share the descriptor table.
 */
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from '../abi/linux/flags.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  PID_OPTION,
  readProcessFds,
  type Row,
  type RowValue,
  selectPids,
  type Statx,
  unlinkedPath,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'TID', type: 'int32', description: 'Thread id (= PID: threads share the descriptor table)' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  { name: 'FD', type: 'int32', description: 'File descriptor number' },
  {
    name: 'Path',
    type: 'utf8',
    description: "Target of /proc/PID/fd/N; an unlinked file's without the kernel's ' (deleted)'",
  },
  {
    name: 'Deleted',
    type: 'bool',
    description: 'The open file is unlinked: its link count (statx st_nlink via /proc/PID/fd/N) is 0',
  },
  { name: 'Device', type: 'utf8', description: 'major:minor of the filesystem holding the file' },
  { name: 'Inode', type: 'int64', description: 'Inode number' },
  {
    name: 'Type',
    type: 'utf8',
    description: 'REG, DIR, CHR, BLK, FIFO, SOCK, LNK (UNKNOWN: anonymous inodes)',
  },
  { name: 'Mode', type: 'utf8', description: 'Type and permissions, as ls -l prints them (-rw-r--r--)' },
  { name: 'Changed', type: 'timestamp_ms', description: 'Inode change time (ctime)' },
  { name: 'Modified', type: 'timestamp_ms', description: 'Content modification time (mtime)' },
  { name: 'Accessed', type: 'timestamp_ms', description: 'Access time (atime)' },
  { name: 'Size', type: 'int64', description: 'Size in bytes' },
] as const;

const TYPES: [number, string, string][] = [
  [S_IFREG, 'REG', '-'],
  [S_IFDIR, 'DIR', 'd'],
  [S_IFCHR, 'CHR', 'c'],
  [S_IFBLK, 'BLK', 'b'],
  [S_IFIFO, 'FIFO', 'p'],
  [S_IFSOCK, 'SOCK', 's'],
  [S_IFLNK, 'LNK', 'l'],
];

function fileType(mode: number): [string, string] {
  const t = TYPES.find(([bits]) => (mode & S_IFMT) === bits);
  return t ? [t[1], t[2]] : ['UNKNOWN', '?'];
}

/** `-rwsr-xr-x` from st_mode, with setuid/setgid/sticky as ls shows them. */
export function modeString(mode: number): string {
  const rwx = (bits: number, special: boolean, on: string, off: string) =>
    (bits & 4 ? 'r' : '-') +
    (bits & 2 ? 'w' : '-') +
    (special ? (bits & 1 ? on : off) : bits & 1 ? 'x' : '-');
  return (
    fileType(mode)[1] +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's', 'S') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's', 'S') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't', 'T')
  );
}

const time = (ts: Statx['mtime']) => new Date(Number(ts.sec) * 1000 + Math.floor(ts.nsec / 1e6));

export const lsof = definePlugin({
  name: 'lsof',
  volatilityName: 'linux.lsof',
  description: 'Lists the open files of the processes of the guest',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    // 1 batch for the listing (none with --pid), 1 for the cgroups with --container, 1 for
    // /proc/PID/fd, 1 for every comm, link and statx.
    const pids = await selectPids(ctx, ctx.options.pid, ctx.options.container);
    const procs = pids.length > 0 ? await readProcessFds(ctx, { pids, statx: true }) : [];
    const rows: Row<typeof columns>[] = [];
    for (const p of procs) {
      for (const f of p.fds) {
        let stat: Record<
          'Device' | 'Inode' | 'Type' | 'Mode' | 'Changed' | 'Modified' | 'Accessed' | 'Size',
          RowValue
        >;
        if (f.stat) {
          const s = f.stat;
          stat = {
            Device: `${s.devMajor}:${s.devMinor}`,
            Inode: s.ino,
            Type: fileType(s.mode)[0],
            Mode: modeString(s.mode),
            Changed: time(s.ctime),
            Modified: time(s.mtime),
            Accessed: time(s.atime),
            Size: s.size,
          };
        } else {
          const why = f.error?.message ?? 'not read';
          ctx.warn(`pid ${p.pid} fd ${f.fd}: ${why}`);
          const u = unreadable(why);
          stat = { Device: u, Inode: u, Type: u, Mode: u, Changed: u, Modified: u, Accessed: u, Size: u };
        }
        const unread = unreadable(f.error?.message ?? 'not read');
        const named = f.target === undefined ? undefined : unlinkedPath(f.target, f.stat);
        rows.push({
          PID: p.pid,
          TID: p.pid,
          Process: p.comm,
          FD: f.fd,
          Path: named?.path ?? unread,
          Deleted: named?.deleted ?? unread,
          ...stat,
        });
      }
    }
    return rows;
  },
});
