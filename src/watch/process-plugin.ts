/**
 * The processes as `vmi watch` sees them: pslist's ids, credentials and start time plus
 * psaux's argv, and the user name from the guest's own /etc/passwd, in one plugin so one
 * snapshot costs one set of batches (listing, every stat/status/cmdline, passwd).
 * START_MS (since boot) is the kernel's start_time of the task (/proc/PID/stat field 22,
 * in USER_HZ ticks): with the PID it names a process for its whole life, across PID reuse,
 * and unlike CREATION TIME it does not move when the guest's wall clock is set.
 */
import { parseCmdline } from '../abi/linux/proc/index.js';
import {
  definePlugin,
  isVanished,
  NOT_AVAILABLE,
  type ProcessRecord,
  readProcesses,
  type Row,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'PPID', type: 'int32', description: 'Parent process id' },
  { name: 'COMM', type: 'utf8', description: 'Task name (comm)' },
  { name: 'ARGS', type: 'utf8', description: 'argv joined by spaces; [comm] for kernel threads' },
  { name: 'UID', type: 'int64', description: 'Real user id' },
  { name: 'EUID', type: 'int64', description: 'Effective user id' },
  { name: 'USER', type: 'utf8', description: "Name of the real user id in the guest's /etc/passwd" },
  { name: 'CREATION TIME', type: 'timestamp_ms', description: 'Start time (boot time + start_time)' },
  { name: 'START_MS', type: 'int64', description: 'Start time, milliseconds since the guest booted' },
] as const;

export const watchProcesses = definePlugin({
  name: 'watch-processes',
  description: 'Processes with argv, user and start time (the process snapshot of vmi watch)',
  version: '1.0.0',
  columns,
  async run(ctx) {
    // One after the other: /etc/passwd is small, and readProcesses already keeps the
    // guest busy with its own slices.
    const records = await readProcesses(ctx, { files: ['cmdline'] });
    const users = await guestUsers(ctx.sys.readTextFile('/etc/passwd'));
    // Cached: readProcesses read /proc/stat in its batch.
    const bootMs = await ctx.proc.bootTime();
    return processRows(records, users, bootMs);
  },
});

/** The row of one process of watch-processes. */
export type WatchProcessRow = Row<typeof columns>;

/**
 * watch-processes' rows of `records` (readProcesses with `files: ['cmdline']`): processes
 * that vanished meanwhile are left out; `users` maps uid → name, `bootMs` is the boot
 * time (ms since the epoch) their CREATION TIME was computed from.
 */
export function processRows(
  records: readonly ProcessRecord[],
  users: ReadonlyMap<number, string>,
  bootMs: number,
): WatchProcessRow[] {
  const rows: WatchProcessRow[] = [];
  for (const { task, row, files } of records) {
    const f = files.cmdline;
    if (!f || isVanished(f.error)) continue;
    let args: string | ReturnType<typeof unreadable>;
    if (f.error) args = unreadable(f.error.message);
    else {
      const argv = parseCmdline(f.data!);
      args = argv.length > 0 ? argv.join(' ') : `[${String(row.COMM)}]`;
    }
    const created = row['CREATION TIME'];
    const uid = row.UID;
    const name = typeof uid === 'bigint' || typeof uid === 'number' ? users.get(Number(uid)) : undefined;
    rows.push({
      PID: task.pid,
      PPID: row.PPID,
      COMM: row.COMM,
      ARGS: args,
      UID: uid,
      EUID: row.EUID,
      USER: name ?? NOT_AVAILABLE,
      'CREATION TIME': created,
      START_MS: created instanceof Date ? BigInt(created.getTime() - bootMs) : NOT_AVAILABLE,
    });
  }
  return rows;
}

/** uid → name from the guest's /etc/passwd; empty when it has none (a busybox initramfs may not). */
async function guestUsers(text: Promise<string>): Promise<Map<number, string>> {
  let passwd: string;
  try {
    passwd = await text;
  } catch {
    return new Map();
  }
  return parsePasswd(passwd);
}

/** uid → name from the text of an /etc/passwd (the first name of a uid wins; bad lines skipped). */
export function parsePasswd(passwd: string): Map<number, string> {
  const users = new Map<number, string>();
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2]) && !users.has(Number(f[2]))) users.set(Number(f[2]), f[0]);
  }
  return users;
}
