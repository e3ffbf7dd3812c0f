/**
 * Cleaning up stale partial captures touches only what this user's vmi wrote. A planted
 * `.NAME.partial-<dead pid>` directory whose marker names a socket the test listens on
 * is left as it is: no connection reaches the listener, and neither the directory nor a
 * /dev/shm file with vmi's staging name for that pid is removed. A partial that vmi
 * stamped itself is swept (directory and its own staging file).
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
});
