/**
 * Cleaning up stale partial captures touches only what this user's vmi wrote. A planted
 * `.NAME.partial-<dead pid>` directory whose marker names a socket the test listens on
 * is left as it is: no connection reaches the listener, and neither the directory nor a
 * /dev/shm file with vmi's staging name for that pid is removed. A partial that vmi
 * stamped itself is swept (directory and its own staging file). A capture killed while
 * QEMU copied its disks (--with-disks) left backup jobs in QEMU: the sweep cancels and
 * dismisses them (a fake QMP server records the commands), and resumes the guest only if
 * the capture had it paused, not when the guest was already running on.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture } from '../../src/capture/create.js';
import { stampPartialDir } from '../../src/capture/partial-stamp.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-sweep-'));
const saved = process.env.VMI_RUNTIME_ROOT;
let server: Server;
let connections = 0;
const sock = join(root, 'listener.sock');

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync('/bin/true');
  return r.pid!;
}

beforeAll(async () => {
  process.env.VMI_RUNTIME_ROOT = join(root, 'rt');
  server = createServer((c) => {
    connections++;
    c.destroy();
  });
  await new Promise<void>((r) => server.listen(sock, r));
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  if (saved === undefined) delete process.env.VMI_RUNTIME_ROOT;
  else process.env.VMI_RUNTIME_ROOT = saved;
  rmSync(root, { recursive: true, force: true });
});

/** A partial directory for `out` left by capture `pid`, with a paused marker naming the listener. */
function plant(out: string, pid: number): { dir: string; shm: string } {
  const dir = join(root, `.${out}.partial-${pid}`);
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(dir, 'source-paused.json'), JSON.stringify({ qmpSocket: sock }), { mode: 0o600 });
  writeFileSync(join(dir, 'ram.raw'), 'x');
  const shm = `/dev/shm/vmi-capture-${pid}-0123abcd.ram`;
  writeFileSync(shm, 'staging', { mode: 0o600 });
  return { dir, shm };
}

/** createCapture up to its first QMP connection (to a socket that does not exist). */
async function captureAttempt(out: string): Promise<void> {
  await expect(
    createCapture({ output: join(root, out), qmpSocket: join(root, 'no-such-qmp.sock') }),
  ).rejects.toThrow();
}

describe('stale partial captures', () => {
  it('a planted partial directory is not touched and its socket never connected to', async () => {
    const pid = deadPid();
    const { dir, shm } = plant('planted.vmicap', pid);
    try {
      await captureAttempt('planted.vmicap');
      expect(connections).toBe(0);
      expect(existsSync(dir)).toBe(true);
      expect(readdirSync(dir).sort()).toEqual(['ram.raw', 'source-paused.json']);
      expect(existsSync(shm)).toBe(true);
    } finally {
      rmSync(shm, { force: true });
    }
  });

  it('the same directory with a forged stamp (copied from another partial) is not touched either', async () => {
    const pid = deadPid();
    const { dir, shm } = plant('forged.vmicap', pid);
    // A genuine stamp of another directory, copied in: it is bound to that path.
    const other = join(root, 'other');
    mkdirSync(other, { mode: 0o700 });
    await stampPartialDir(other, pid, sock);
    writeFileSync(join(dir, '.vmi-partial'), readFileSync(join(other, '.vmi-partial'), 'utf8'), {
      mode: 0o600,
    });
    try {
      await captureAttempt('forged.vmicap');
      expect(connections).toBe(0);
      expect(existsSync(dir)).toBe(true);
      expect(existsSync(shm)).toBe(true);
    } finally {
      rmSync(shm, { force: true });
    }
  });

  it('a partial that vmi stamped itself is swept, with its own staging file', async () => {
    const pid = deadPid();
    const { dir, shm } = plant('ours.vmicap', pid);
    await stampPartialDir(dir, pid);
    await captureAttempt('ours.vmicap');
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(shm)).toBe(false);
    // A stamp without a paused guest: nothing was connected to.
    expect(connections).toBe(0);
  });

  it('a partial stamped with a paused guest does reach that guest (the listener sees the connection)', async () => {
    const pid = deadPid();
    const { dir, shm } = plant('paused.vmicap', pid);
    await stampPartialDir(dir, pid, sock);
    const before = connections;
    await captureAttempt('paused.vmicap');
    expect(connections).toBe(before + 1);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(shm)).toBe(false);
  });

  it('a capture killed while copying disks: its backup jobs are cancelled and dismissed; a paused guest is resumed, a running one left alone', async () => {
    for (const phase of ['paused', 'copying'] as const) {
      const qmp = await fakeQmp();
      try {
        const pid = deadPid();
        const { dir, shm } = plant(`killed-${phase}.vmicap`, pid);
        await stampPartialDir(dir, pid, qmp.path, phase);
        await captureAttempt(`killed-${phase}.vmicap`);
        expect(qmp.jobs, phase).toEqual([]);
        const cmds = qmp.log.filter((c) => c !== 'query-migrate' && c !== 'query-jobs');
        expect(cmds.filter((c) => c.startsWith('job-')).sort(), phase).toEqual([
          'job-cancel vmi-capture-disk0',
          'job-cancel vmi-capture-disk1',
          'job-dismiss vmi-capture-disk0',
          'job-dismiss vmi-capture-disk1',
        ]);
        // A job of something else is not touched.
        expect(qmp.log).not.toContain('job-cancel backup-by-someone-else');
        expect(cmds.includes('cont'), phase).toBe(phase === 'paused');
        expect(existsSync(dir)).toBe(false);
        expect(existsSync(shm)).toBe(false);
      } finally {
        await qmp.close();
      }
    }
  });
});

/**
 * A QMP server with a stopped guest and two running vmi backup jobs plus one of someone
 * else: job-cancel concludes a job, job-dismiss removes it; `log` lists every command.
 */
async function fakeQmp(): Promise<{
  path: string;
  log: string[];
  jobs: string[];
  close: () => Promise<void>;
}> {
  const path = join(root, `qmp-${Math.random().toString(16).slice(2)}.sock`);
  const log: string[] = [];
  const jobs = new Map<string, string>([
    ['vmi-capture-disk0', 'running'],
    ['vmi-capture-disk1', 'running'],
    ['backup-by-someone-else', 'running'],
  ]);
  const server = createServer((c) => {
    c.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\n');
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        const req = JSON.parse(line) as { execute: string; arguments?: { id?: string }; id?: unknown };
        const id = req.arguments?.id;
        log.push(id ? `${req.execute} ${id}` : req.execute);
        let ret: unknown = {};
        if (req.execute === 'query-migrate') ret = { status: 'completed' };
        else if (req.execute === 'query-status') ret = { status: 'paused', running: false };
        else if (req.execute === 'query-jobs')
          ret = [...jobs].map(([jid, status]) => ({
            id: jid,
            type: 'backup',
            status,
            'current-progress': 0,
            'total-progress': 1,
          }));
        else if (req.execute === 'job-cancel' && id && jobs.has(id)) jobs.set(id, 'concluded');
        else if (req.execute === 'job-dismiss' && id) jobs.delete(id);
        c.write(JSON.stringify({ return: ret, ...(req.id !== undefined ? { id: req.id } : {}) }) + '\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    log,
    get jobs() {
      return [...jobs.keys()].filter((j) => j.startsWith('vmi-'));
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
