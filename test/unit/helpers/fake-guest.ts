/**
 * TEST DOUBLE. A fake SyscallExecutor that emulates a few syscalls (openat, read,
 * pread64, close, lseek, getdents64, readlinkat, statx, faccessat, uname, sysinfo, getpid,
 * and getsid/getpgid of the tasks /proc/N names) over an
 * in-memory file tree, and records every run() so tests can count guest entries. It
 * knows nothing about QEMU or the shadow engine; it only honours the executor contract.
 */
import {
  encodeDirents64,
  SYSINFO_SIZE,
  UTSNAME_FIELD,
  UTSNAME_SIZE,
} from '../../../src/abi/linux/structs.js';
import { sysno } from '../../../src/abi/linux/syscalls.js';
import { DEFAULT_BATCH_LIMITS } from '../../../src/sdk/limits.js';
import type { Call, CallArg, CallResult, SyscallExecutor } from '../../../src/sdk/syscall-types.js';

const ENOENT = 2;
const EIO = 5;
const ESRCH = 3;
const EAGAIN = 11;
const ENODATA = 61;
const EPROTONOSUPPORT = 93;
const EBADF = 9;
const EACCES = 13;
const ENOTDIR = 20;
const EISDIR = 21;
const EINVAL = 22;
const ENOSYS = 38;
const O_DIRECTORY = 0o200000;
const AT_FDCWD = -100n;

type Content = string | Uint8Array | (() => string | Uint8Array);

interface FileNode {
  kind: 'file';
  content: Content;
  /** errno returned by openat / read for this file. */
  openErrno?: number;
  readErrno?: number;
  /** At most this many bytes per read(), as a /proc seq_file returns one page at a time. */
  maxPerRead?: number;
}
interface LinkNode {
  kind: 'link';
  target: string;
  /** st_nlink statx reports (the fake does not follow links: as of the open file behind it). Default 1. */
  nlink?: number;
}
/** A directory keeps its inode number while it exists (getdents64's d_ino), as a /proc/PID dentry does. */
type Node = FileNode | LinkNode | { kind: 'dir'; ino?: number };

interface OpenFile {
  path: string;
  node: Node;
  pos: number;
  /** Snapshot of a directory's children at open time. */
  dirents?: string[];
  /** A /proc/PID/mem: pread64 reads these regions at the offset = address. */
  mem?: { start: bigint; data: Uint8Array }[];
}

const enc = new TextEncoder();

export class FakeGuest implements SyscallExecutor {
  readonly nodes = new Map<string, Node>([['/', { kind: 'dir' }]]);
  private readonly fds = new Map<number, OpenFile>();
  private nextFd = 3;
  /** Calls of every run(), in order. */
  readonly runs: Call[][] = [];
  /** Called before each run() with its index (0-based): mutate the tree to simulate the guest changing. */
  beforeRun?: (index: number) => void;
  /** Reject runs above these (default: the SDK's own limits) to prove the SDK splits. */
  limits = { ...DEFAULT_BATCH_LIMITS };
  /** The kernel log syslog(2) returns (READ_ALL, SIZE_BUFFER); undefined: no syslog (ENOSYS). */
  syslogText?: string;
  /**
   * A lying kernel, view by view: names left out of directory listings (`/proc` → `['57']`,
   * a getdents64 filter), paths whose lookup fails (a proc_pid_lookup filter), PIDs getsid
   * and getpgid do not find (a find_task_by_vpid filter).
   */
  /** getxattr values by path and name (`/proc/2/fd/3` → `system.sockprotoname` → `TCP`); else ENODATA. */
  xattrs = new Map<string, Map<string, string>>();
  /**
   * The sock_diag dump: socket inodes by `family/protocol` (`2/6` TCP over IPv4, `1/0` unix).
   * undefined: no NETLINK_SOCK_DIAG (socket() fails with EPROTONOSUPPORT).
   */
  diag?: Map<string, bigint[]>;
  private readonly diagQueues = new Map<number, Uint8Array[]>();
  /**
   * Process memory (issue 17): `/proc/PID/mem` path → its readable regions. pread64 at an
   * address returns the bytes up to the end of the region holding it, EIO outside any.
   */
  mem = new Map<string, { start: bigint; data: Uint8Array }[]>();
  hide: { listing: Map<string, Set<string>>; lookup: Set<string>; tasks: Set<number> } = {
    listing: new Map(),
    lookup: new Set(),
    tasks: new Set(),
  };

  /**
   * Filesystems fsopen knows (`tracefs` → the fake directory its detached mounts show,
   * e.g. `/__tracefs`); fsmount returns a directory fd of it. Others: ENODEV.
   */
  detachedFs = new Map<string, string>();

  get runCount(): number {
    return this.runs.length;
  }

  get openFds(): number {
    return this.fds.size;
  }

  /** Inode numbers handed to new directories (get_next_ino: a new /proc/PID gets a new one). */
  private nextIno = 1000;

  addDir(path: string): this {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      if (!this.nodes.has(p)) this.nodes.set(p, { kind: 'dir', ino: this.nextIno++ });
    }
    return this;
  }

  addFile(
    path: string,
    content: Content,
    opts: { openErrno?: number; readErrno?: number; maxPerRead?: number } = {},
  ): this {
    this.addDir(path.slice(0, path.lastIndexOf('/')) || '/');
    this.nodes.set(path, { kind: 'file', content, ...opts });
    return this;
  }

  addLink(path: string, target: string, opts: { nlink?: number } = {}): this {
    this.addDir(path.slice(0, path.lastIndexOf('/')) || '/');
    this.nodes.set(path, { kind: 'link', target, nlink: opts.nlink });
    return this;
  }

  /** Removes a node and everything below it (a process exiting). */
  remove(path: string): void {
    for (const k of [...this.nodes.keys()]) if (k === path || k.startsWith(path + '/')) this.nodes.delete(k);
  }

  /** The node at `p`, unless a hidden lookup filters it or a path above it. */
  private lookup(p: string): Node | undefined {
    for (const h of this.hide.lookup) if (p === h || p.startsWith(h + '/')) return undefined;
    return this.nodes.get(p);
  }

  private children(dir: string): string[] {
    const prefix = dir === '/' ? '/' : dir + '/';
    const names = new Set<string>();
    for (const k of this.nodes.keys()) {
      if (k.startsWith(prefix) && k.length > prefix.length) names.add(k.slice(prefix.length).split('/')[0]);
    }
    // Numeric names in numeric order, like /proc.
    return [...names].sort((a, b) =>
      /^\d+$/.test(a) && /^\d+$/.test(b) ? Number(a) - Number(b) : a < b ? -1 : 1,
    );
  }

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    this.beforeRun?.(this.runs.length);
    this.runs.push([...calls]);
    let out = 0;
    for (const c of calls) for (const a of c.args) if (a.kind === 'out') out += a.size;
    if (calls.length > this.limits.maxCalls) throw new Error(`fake: ${calls.length} calls in one run`);
    if (out > this.limits.maxOutBytes && calls.length > 1)
      throw new Error(`fake: ${out} out bytes in one run`);
    const results: CallResult[] = [];
    for (const c of calls) {
      const ints = c.args.map((a) => this.intArg(a, results));
      results.push(this.exec(c, ints));
    }
    return results;
  }

  private intArg(a: CallArg, done: CallResult[]): bigint {
    if (a.kind === 'int') return a.value;
    if (a.kind === 'result') {
      if (a.index >= done.length) throw new Error(`fake: forward result reference ${a.index}`);
      return done[a.index].ret;
    }
    return 0n;
  }

  private exec(c: Call, ints: bigint[]): CallResult {
    const outSpecs = c.args.filter((a) => a.kind === 'out');
    const path = () => {
      const a = c.args[1];
      if (a.kind !== 'in') throw new Error('fake: path argument is not in-bytes');
      const bytes = a.data;
      if (bytes[bytes.length - 1] !== 0) throw new Error('fake: path not NUL-terminated');
      return new TextDecoder().decode(bytes.subarray(0, bytes.length - 1));
    };
    const fail = (errno: number): CallResult => ({
      ret: BigInt(-errno),
      out: outSpecs.map(() => new Uint8Array(0)),
    });
    const ok = (ret: bigint | number, data?: Uint8Array): CallResult => ({
      ret: BigInt(ret),
      out: outSpecs.map((o) => {
        if (o.kind !== 'out') return new Uint8Array(0);
        const buf = new Uint8Array(o.size);
        if (data) buf.set(data.subarray(0, o.size));
        return o.keep === 'all' ? buf : buf.subarray(0, Number(ret) > 0 ? Number(ret) : 0);
      }),
    });
    const fdOf = (v: bigint) => this.fds.get(Number(v));
    const outSize = () => {
      const o = outSpecs[0];
      return o && o.kind === 'out' ? o.size : 0;
    };

    switch (c.nr) {
      case sysno('openat'): {
        const p = this.resolveAt(ints[0], path());
        if (p === undefined) return fail(EBADF);
        const regions = this.mem.get(p);
        if (regions) {
          const fd = this.nextFd++;
          this.fds.set(fd, { path: p, node: { kind: 'file', content: '' }, pos: 0, mem: regions });
          return ok(fd);
        }
        const node = this.lookup(p);
        if (!node) return fail(ENOENT);
        if (node.kind === 'file' && node.openErrno) return fail(node.openErrno);
        const flags = Number(ints[2]);
        if (flags & O_DIRECTORY && node.kind !== 'dir') return fail(ENOTDIR);
        const fd = this.nextFd++;
        const f: OpenFile = { path: p, node, pos: 0 };
        const omit = this.hide.listing.get(p);
        if (node.kind === 'dir') f.dirents = ['.', '..', ...this.children(p).filter((n) => !omit?.has(n))];
        this.fds.set(fd, f);
        return ok(fd);
      }
      case sysno('close'):
        this.diagQueues.delete(Number(ints[0]));
        return this.fds.delete(Number(ints[0])) ? ok(0) : fail(EBADF);
      case sysno('read'):
      case sysno('pread64'): {
        const f = fdOf(ints[0]);
        if (!f) return fail(EBADF);
        if (f.mem) {
          const at = BigInt.asUintN(64, ints[3]);
          const r = f.mem.find((m) => at >= m.start && at < m.start + BigInt(m.data.length));
          if (!r || c.nr !== sysno('pread64')) return fail(EIO);
          const off = Number(at - r.start);
          const chunk = r.data.subarray(off, off + Math.min(Number(ints[2]), outSize()));
          return ok(chunk.length, chunk);
        }
        if (f.node.kind === 'dir') return fail(EISDIR);
        if (f.node.kind !== 'file') return fail(EINVAL);
        if (f.node.readErrno) return fail(f.node.readErrno);
        const raw = typeof f.node.content === 'function' ? f.node.content() : f.node.content;
        const bytes = typeof raw === 'string' ? enc.encode(raw) : raw;
        const count = Math.min(Number(ints[2]), outSize(), f.node.maxPerRead ?? Infinity);
        const pos = c.nr === sysno('pread64') ? Number(ints[3]) : f.pos;
        const chunk = bytes.subarray(Math.min(pos, bytes.length), Math.min(pos + count, bytes.length));
        if (c.nr === sysno('read')) f.pos += chunk.length;
        return ok(chunk.length, chunk);
      }
      case sysno('lseek'): {
        const f = fdOf(ints[0]);
        if (!f) return fail(EBADF);
        if (ints[2] !== 0n) return fail(EINVAL);
        f.pos = Number(ints[1]);
        return ok(f.pos);
      }
      case sysno('getdents64'): {
        const f = fdOf(ints[0]);
        if (!f) return fail(EBADF);
        if (!f.dirents) return fail(ENOTDIR);
        const count = Math.min(Number(ints[2]), outSize());
        const recs: Uint8Array[] = [];
        let used = 0;
        while (f.pos < f.dirents.length) {
          const name = f.dirents[f.pos];
          const child = f.path === '/' ? '/' + name : `${f.path}/${name}`;
          const node = this.nodes.get(child);
          const type =
            name === '.' || name === '..' || node?.kind === 'dir' ? 4 : node?.kind === 'link' ? 10 : 8;
          const ino = node?.kind === 'dir' && node.ino !== undefined ? node.ino : f.pos + 100;
          const rec = encodeDirents64([{ ino: BigInt(ino), off: BigInt(f.pos + 1), type, name }]);
          if (used + rec.length > count) break;
          recs.push(rec);
          used += rec.length;
          f.pos++;
        }
        if (recs.length === 0 && f.pos < f.dirents.length) return fail(EINVAL);
        const data = new Uint8Array(used);
        let p = 0;
        for (const r of recs) {
          data.set(r, p);
          p += r.length;
        }
        return ok(used, data);
      }
      case sysno('readlinkat'): {
        const node = this.nodes.get(path());
        if (!node) return fail(ENOENT);
        if (node.kind !== 'link') return fail(EINVAL);
        const t = enc.encode(node.target).subarray(0, outSize());
        return ok(t.length, t);
      }
      case sysno('statx'): {
        const at = this.resolveAt(ints[0], path());
        if (at === undefined) return fail(EBADF);
        const node = this.nodes.get(at);
        if (!node) return fail(ENOENT);
        if (node.kind === 'file' && node.openErrno === EACCES) return fail(EACCES);
        const buf = new Uint8Array(256);
        const dv = new DataView(buf.buffer);
        dv.setUint32(0, 0x7ff, true);
        const mode = node.kind === 'dir' ? 0o040755 : node.kind === 'link' ? 0o120777 : 0o100644;
        dv.setUint16(28, mode, true);
        dv.setUint32(16, node.kind === 'link' ? (node.nlink ?? 1) : 1, true);
        if (node.kind === 'file') {
          const raw = typeof node.content === 'function' ? node.content() : node.content;
          dv.setBigUint64(40, BigInt(typeof raw === 'string' ? enc.encode(raw).length : raw.length), true);
        }
        return ok(0, buf);
      }
      case sysno('faccessat'): {
        if (ints[0] !== AT_FDCWD) return fail(EBADF);
        return this.lookup(path()) ? ok(0) : fail(ENOENT);
      }
      case sysno('getsid'):
      case sysno('getpgid'): {
        // Any task id, leader or thread, like find_task_by_vpid: /proc/N or /proc/*/task/N.
        const pid = Number(ints[0]);
        if (this.hide.tasks.has(pid)) return fail(ESRCH);
        if (this.nodes.has(`/proc/${pid}`)) return ok(pid);
        for (const k of this.nodes.keys()) if (k.endsWith(`/task/${pid}`)) return ok(pid);
        return fail(ESRCH);
      }
      case sysno('getxattr'): {
        const a = c.args[0];
        const n = c.args[1];
        if (a.kind !== 'in' || n.kind !== 'in') throw new Error('fake: getxattr arguments');
        const dec = (b: Uint8Array) => new TextDecoder().decode(b.subarray(0, b.length - 1));
        const v = this.xattrs.get(dec(a.data))?.get(dec(n.data));
        if (v === undefined) return fail(ENODATA);
        const bytes = enc.encode(v);
        return ok(bytes.length, bytes);
      }
      case sysno('socket'): {
        if (ints[0] !== 16n || ints[2] !== 4n || !this.diag) return fail(EPROTONOSUPPORT);
        const fd = this.nextFd++;
        this.fds.set(fd, { path: 'socket:[netlink]', node: { kind: 'dir' }, pos: 0 });
        this.diagQueues.set(fd, []);
        return ok(fd);
      }
      case sysno('sendto'): {
        const q = this.diagQueues.get(Number(ints[0]));
        const m = c.args[1];
        if (!q || m.kind !== 'in') return fail(EBADF);
        const family = m.data[16];
        const inodes = this.diag!.get(`${family}/${family === 1 ? 0 : m.data[17]}`);
        const msg = (type: number, body: Uint8Array) => {
          const b = new Uint8Array(16 + body.length);
          const dv = new DataView(b.buffer);
          dv.setUint32(0, b.length, true);
          dv.setUint16(4, type, true);
          b.set(body, 16);
          return b;
        };
        if (!inodes) {
          const e = new Uint8Array(20);
          new DataView(e.buffer).setInt32(0, -ENOENT, true);
          q.push(msg(2, e));
        } else {
          const parts = inodes.map((ino) => {
            const body = new Uint8Array(family === 1 ? 16 : 72);
            new DataView(body.buffer).setUint32(family === 1 ? 4 : 68, Number(ino), true);
            body[0] = family;
            return msg(20, body);
          });
          parts.push(msg(3, new Uint8Array(4)));
          const all = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
          let pos = 0;
          for (const x of parts) {
            all.set(x, pos);
            pos += x.length;
          }
          q.push(all);
        }
        return ok(m.data.length);
      }
      case sysno('recvfrom'): {
        const q = this.diagQueues.get(Number(ints[0]));
        if (!q) return fail(EBADF);
        const next = q.shift();
        if (!next) return fail(EAGAIN);
        return ok(next.length, next);
      }
      case sysno('uname'): {
        const buf = new Uint8Array(UTSNAME_SIZE);
        ['Linux', 'fakeguest', '6.1.0-fake', '#1 SMP', 'x86_64', '(none)'].forEach((s, i) =>
          buf.set(enc.encode(s), i * UTSNAME_FIELD),
        );
        return ok(0, buf);
      }
      case sysno('sysinfo'): {
        const buf = new Uint8Array(SYSINFO_SIZE);
        const dv = new DataView(buf.buffer);
        dv.setBigInt64(0, 1234n, true);
        dv.setBigUint64(8, 65536n, true);
        dv.setBigUint64(32, 1000n, true);
        dv.setUint16(80, 42, true);
        dv.setUint32(104, 4096, true);
        return ok(0, buf);
      }
      case sysno('getpid'):
        return ok(4242);
      case sysno('syslog'): {
        if (this.syslogText === undefined) return fail(ENOSYS);
        const log = enc.encode(this.syslogText);
        if (ints[0] === 10n) return ok(log.length);
        if (ints[0] !== 3n) return fail(EINVAL);
        const n = Math.min(log.length, Number(ints[2]), outSize());
        // READ_ALL returns the newest bytes that fit.
        return ok(n, log.subarray(log.length - n));
      }
      case sysno('fsopen'): {
        const a = c.args[0];
        const name = a.kind === 'in' ? new TextDecoder().decode(a.data.subarray(0, a.data.length - 1)) : '';
        const dir = this.detachedFs.get(name);
        if (dir === undefined) return fail(19); // ENODEV
        const fd = this.nextFd++;
        this.fds.set(fd, { path: dir, node: { kind: 'file', content: '' }, pos: 0 });
        return ok(fd);
      }
      case sysno('fsconfig'):
        return fdOf(ints[0]) ? ok(0) : fail(EBADF);
      case sysno('fsmount'): {
        const f = fdOf(ints[0]);
        if (!f) return fail(EBADF);
        this.addDir(f.path);
        const fd = this.nextFd++;
        this.fds.set(fd, { path: f.path, node: { kind: 'dir' }, pos: 0 });
        return ok(fd);
      }
      default:
        return fail(ENOSYS);
    }
  }

  /** openat/statx path resolution: AT_FDCWD, or relative to an open directory fd. */
  private resolveAt(dirfd: bigint, p: string): string | undefined {
    if (dirfd === AT_FDCWD || p.startsWith('/')) return p;
    const d = this.fds.get(Number(dirfd));
    if (!d || d.node.kind !== 'dir') return undefined;
    return `${d.path}/${p}`;
  }
}

/** A /proc/PID/stat line like the kernel writes it. */
export function fakeStat(
  pid: number,
  comm: string,
  opts: {
    ppid?: number;
    state?: string;
    threads?: number;
    start?: number;
    pgrp?: number;
    session?: number;
  } = {},
): string {
  const { ppid = 1, state = 'S', threads = 1, start = 1000 + pid, pgrp = pid, session = pid } = opts;
  return (
    `${pid} (${comm}) ${state} ${ppid} ${pgrp} ${session} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 ${threads} 0 ${start} ` +
    `12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n`
  );
}

/** A /proc/PID/status like the kernel writes it (abridged). */
export function fakeStatus(
  pid: number,
  comm: string,
  opts: { uid?: number[]; gid?: number[]; ppid?: number; nspid?: number[] } = {},
): string {
  const { uid = [0, 0, 0, 0], gid = [0, 0, 0, 0], ppid = 1 } = opts;
  return (
    `Name:\t${comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t${pid}\nNgid:\t0\nPid:\t${pid}\nPPid:\t${ppid}\n` +
    `TracerPid:\t0\nUid:\t${uid.join('\t')}\nGid:\t${gid.join('\t')}\nFDSize:\t64\nGroups:\t\n` +
    `VmPeak:\t    1000 kB\nVmSize:\t    1000 kB\nThreads:\t1\nSigQ:\t0/1000\n` +
    `NSpid:\t${(opts.nspid ?? [pid]).join('\t')}\n`
  );
}

/** The initial PID namespace's inode (PROC_PID_INIT_INO), as in every real guest. */
export const INIT_PID_NS = 4026531836;

/** A FakeGuest with /proc/stat, /proc/uptime and `n` processes (pids 1..n). */
export function fakeProcGuest(n: number, btime = 1700000000): FakeGuest {
  const g = new FakeGuest();
  g.addFile('/proc/stat', `cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 0\nctxt 10\nbtime ${btime}\nprocesses ${n}\n`);
  g.addFile('/proc/uptime', '100.50 180.25\n');
  g.addFile('/proc/meminfo', 'MemTotal: 1 kB\n');
  g.addDir('/proc/sys');
  g.addLink('/proc/self', '4242');
  for (let pid = 1; pid <= n; pid++) addFakeProcess(g, pid, `proc${pid}`);
  return g;
}

export function addFakeProcess(g: FakeGuest, pid: number, comm: string, tids: number[] = [pid]): void {
  g.addFile(`/proc/${pid}/stat`, fakeStat(pid, comm, { threads: tids.length }));
  g.addFile(
    `/proc/${pid}/status`,
    fakeStatus(pid, comm, { uid: [1000, 1001, 1002, 1003], gid: [100, 101, 102, 103] }),
  );
  g.addFile(`/proc/${pid}/cmdline`, `${comm}\0--flag\0`);
  g.addFile(`/proc/${pid}/cgroup`, '0::/\n');
  g.addLink(`/proc/${pid}/ns/pid`, `pid:[${INIT_PID_NS}]`);
  for (const tid of tids) {
    g.addFile(`/proc/${pid}/task/${tid}/stat`, fakeStat(tid, comm, { threads: tids.length }));
    g.addFile(`/proc/${pid}/task/${tid}/status`, fakeStatus(tid, comm));
    g.addFile(`/proc/${pid}/task/${tid}/cgroup`, '0::/\n');
    g.addLink(`/proc/${pid}/task/${tid}/ns/pid`, `pid:[${INIT_PID_NS}]`);
  }
}
