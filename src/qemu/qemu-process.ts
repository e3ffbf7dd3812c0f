/**
 * The host process behind a QEMU that vmi did not start, found from its QMP socket: the
 * process that holds the socket's listening end (its inode in /proc/net/unix, then the
 * /proc/PID/fd link `socket:[INODE]`). No name matching, no "the biggest QEMU": a socket
 * inode has exactly one owner unless QEMU forked with it open, which is refused as
 * ambiguous. Also the host's /proc/PID/maps and /proc/PID/stat, read here because only
 * src/qemu talks about the QEMU process.
 *
 * Limits: /proc/PID/fd of another user's process (or of a more privileged one, for a
 * caller without CAP_SYS_PTRACE) is unreadable. Then the holder cannot be proven, and
 * the process whose command line names the socket is returned as a candidate only
 * (`proven: false`): whoever uses it must prove it (read access and a content check).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { resolve } from 'node:path';

export class QemuProcessError extends Error {
  override name = 'QemuProcessError';
}

/** A listening unix socket in /proc/net/unix: inode and path. */
export interface UnixListener {
  inode: number;
  path: string;
}

/** `__SO_ACCEPTCON` in the Flags column: the socket listens. */
const SO_ACCEPTCON = 0x10000;

/**
 * Listening sockets with a path, from the text of /proc/net/unix (pure). Lines:
 * `Num RefCount Protocol Flags Type St Inode Path` (net/unix/af_unix.c unix_seq_show).
 * Abstract sockets (path starting with `@`) and unnamed ones are skipped.
 */
export function parseUnixListeners(text: string): UnixListener[] {
  const out: UnixListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const flags = parseInt(f[3], 16);
    const inode = Number(f[6]);
    const path = f.slice(7).join(' ');
    if (!(flags & SO_ACCEPTCON) || !Number.isSafeInteger(inode) || !path.startsWith('/')) continue;
    out.push({ inode, path });
  }
  return out;
}

/**
 * Field 22 of /proc/PID/stat (start time in clock ticks since boot), from the file's text
 * (pure). The command name (field 2) may hold spaces and parentheses: fields are counted
 * after its last `)`. Together with the PID it names one process for the host's uptime.
 */
export function parseStartTime(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(rest[19]);
  if (!Number.isSafeInteger(v)) throw new QemuProcessError(`malformed /proc/PID/stat: ${stat.slice(0, 80)}`);
  return v;
}

/** The start time of a live process (clock ticks since boot). @throws QemuProcessError when it is gone */
export function processStartTime(pid: number, proc = '/proc'): number {
  try {
    return parseStartTime(readFileSync(`${proc}/${pid}/stat`, 'utf8'));
  } catch (e) {
    if (e instanceof QemuProcessError) throw e;
    throw new QemuProcessError(`process ${pid} is gone`);
  }
}

export interface QemuProcess {
  pid: number;
  /** Clock ticks since boot (parseStartTime): tells a reused PID from the original. */
  startTime: number;
  /** True when the process was seen holding the socket; false for a command-line candidate. */
  proven: boolean;
}

/**
 * The process listening on unix socket `socketPath` (QEMU's QMP socket).
 * @param proc the procfs mount (tests pass a fake tree)
 * @throws QemuProcessError when no listener has that path, when several processes hold
 *   it, or when no holder is visible and no candidate names the socket
 */
export function findSocketServer(socketPath: string, proc = '/proc'): QemuProcess {
  const path = resolve(socketPath);
  const inodes = new Set(
    parseUnixListeners(readFileSync(`${proc}/net/unix`, 'utf8'))
      .filter((l) => l.path === path)
      .map((l) => l.inode),
  );
  if (inodes.size === 0) throw new QemuProcessError(`no process listens on ${path}`);
  const holders: number[] = [];
  const hidden: number[] = [];
  for (const name of readdirSync(proc)) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`${proc}/${name}/fd`);
    } catch {
      hidden.push(Number(name));
      continue;
    }
    let unreadable = false;
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`${proc}/${name}/fd/${fd}`);
      } catch (e) {
        // Listing the fds is allowed where reading the links is not (no ptrace access):
        // such a process may be the holder; an fd closed meanwhile (ENOENT) is nothing.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') unreadable = true;
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(Number(m[1]))) {
        holders.push(Number(name));
        unreadable = false;
        break;
      }
    }
    if (unreadable) hidden.push(Number(name));
  }
  if (holders.length > 1)
    throw new QemuProcessError(`several processes hold ${path} (pids ${holders.join(', ')})`);
  const start = (pid: number) => processStartTime(pid, proc);
  if (holders.length === 1) return { pid: holders[0], startTime: start(holders[0]), proven: true };
  // Not visible to us: name the process whose command line mentions the socket, unproven.
  const named = hidden.filter((pid) => {
    try {
      return readFileSync(`${proc}/${pid}/cmdline`, 'utf8')
        .split('\0')
        .some((a) => a.includes(path));
    } catch {
      return false;
    }
  });
  if (named.length === 1) return { pid: named[0], startTime: start(named[0]), proven: false };
  throw new QemuProcessError(
    `cannot see which process serves ${path} (the fds of ${hidden.length} processes are not readable: no ptrace access)`,
  );
}

/** One line of /proc/PID/maps: [start, end) host-virtual, permissions (`rw-p`). */
export interface HostMapping {
  start: number;
  end: number;
  perms: string;
}

/** The mappings in the text of /proc/PID/maps (pure; addresses fit 2^53 on x86-64's 47-bit user space). */
export function parseHostMaps(text: string): HostMapping[] {
  const out: HostMapping[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4})/.exec(line);
    if (m) out.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3] });
  }
  return out;
}

/**
 * Whether [addr, addr+length) is covered by readable and writable mappings without a
 * hole (pure). QEMU maps a RAM block with one mmap, but the kernel may show it split
 * (madvise, THP): adjacent pieces count.
 */
export function mappingsCover(maps: readonly HostMapping[], addr: number, length: number): boolean {
  let at = addr;
  const end = addr + length;
  for (const m of [...maps].sort((a, b) => a.start - b.start)) {
    if (m.end <= at) continue;
    if (m.start > at) return false;
    if (m.perms[0] !== 'r' || m.perms[1] !== 'w') return false;
    at = m.end;
    if (at >= end) return true;
  }
  return at >= end;
}
