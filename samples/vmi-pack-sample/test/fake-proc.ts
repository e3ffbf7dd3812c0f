/**
 * TEST DOUBLE. A minimal SyscallExecutor over an in-memory file tree: enough of openat,
 * read, pread64, close and getdents64 for plugins that read /proc. A pack can test its
 * plugins this way without a guest; vmi's own test suite has a fuller fake.
 */
import { sysno, type Call, type CallArg, type CallResult, type SyscallExecutor } from 'vmi/sdk';

const ENOENT = 2n;
const EBADF = 9n;
const ENOSYS = 38n;
const enc = new TextEncoder();

function dirents(names: readonly string[]): Uint8Array {
  const recs = names.map((name, i) => {
    const n = enc.encode(name);
    const reclen = Math.ceil((19 + n.length + 1) / 8) * 8;
    const b = new Uint8Array(reclen);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(0, BigInt(i + 1), true);
    dv.setBigInt64(8, BigInt(i + 1), true);
    dv.setUint16(16, reclen, true);
    b[18] = 4; // DT_DIR
    b.set(n, 19);
    return b;
  });
  const out = new Uint8Array(recs.reduce((s, r) => s + r.length, 0));
  let p = 0;
  for (const r of recs) {
    out.set(r, p);
    p += r.length;
  }
  return out;
}

export class FakeProc implements SyscallExecutor {
  readonly files = new Map<string, string>();
  /** Every run(), for counting guest entries. */
  readonly runs: Call[][] = [];
  private readonly fds = new Map<number, { path: string; pos: number; dir?: Uint8Array }>();
  private nextFd = 3;

  /** Adds a process: /proc/PID/<name> for each entry of `files`. */
  addProcess(pid: number, files: Record<string, string>): this {
    for (const [name, text] of Object.entries(files)) this.files.set(`/proc/${pid}/${name}`, text);
    return this;
  }

  private pids(): string[] {
    const s = new Set<string>();
    for (const k of this.files.keys()) {
      const m = /^\/proc\/(\d+)\//.exec(k);
      if (m) s.add(m[1]);
    }
    return [...s].sort((a, b) => Number(a) - Number(b));
  }

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    this.runs.push([...calls]);
    const results: CallResult[] = [];
    const int = (a: CallArg | undefined): bigint =>
      a?.kind === 'int' ? a.value : a?.kind === 'result' ? results[a.index].ret : 0n;
    for (const c of calls) {
      const outs = c.args.filter((a) => a.kind === 'out');
      const reply = (ret: bigint, data: Uint8Array = new Uint8Array(0)): CallResult => ({
        ret,
        out: outs.map((o) => (o.kind === 'out' ? data.subarray(0, o.size) : new Uint8Array(0))),
      });
      const fd = this.fds.get(Number(int(c.args[0])));
      if (c.nr === sysno('openat')) {
        const a = c.args[1];
        const path = a.kind === 'in' ? new TextDecoder().decode(a.data.subarray(0, a.data.length - 1)) : '';
        if (path === '/proc') {
          this.fds.set(this.nextFd, { path, pos: 0, dir: dirents(['.', '..', ...this.pids(), 'self']) });
        } else if (this.files.has(path)) {
          this.fds.set(this.nextFd, { path, pos: 0 });
        } else {
          results.push(reply(-ENOENT));
          continue;
        }
        results.push(reply(BigInt(this.nextFd++)));
      } else if (c.nr === sysno('close')) {
        results.push(reply(fd && this.fds.delete(Number(int(c.args[0]))) ? 0n : -EBADF));
      } else if (c.nr === sysno('read') || c.nr === sysno('pread64') || c.nr === sysno('getdents64')) {
        if (!fd) {
          results.push(reply(-EBADF));
          continue;
        }
        const all: Uint8Array = fd.dir ?? enc.encode(this.files.get(fd.path)!);
        const count = Number(int(c.args[2]));
        const pos = c.nr === sysno('pread64') ? Number(int(c.args[3])) : fd.pos;
        const chunk = all.subarray(pos, Math.min(all.length, pos + count));
        if (c.nr !== sysno('pread64')) fd.pos += chunk.length;
        results.push(reply(BigInt(chunk.length), chunk));
      } else {
        results.push(reply(-ENOSYS));
      }
    }
    return results;
  }
}
