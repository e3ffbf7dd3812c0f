import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestBusyError, GuestLock, parseLockFile } from '../../src/util/guest-lock.js';

describe('guest lock: a second vmi waits for its turn', () => {
  let dir: string;
  let holder: ChildProcess;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmi-lock-'));
    // A live process stands for the other vmi.
    holder = spawn('sleep', ['30'], { stdio: 'ignore' });
  });
  afterEach(() => {
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const plant = (): void =>
    writeFileSync(
      join(dir, 'vmi.lock'),
      `${holder.pid}\nplugins run psaux --guest lab\n2026-11-29T00:00:00.000Z\n`,
    );

  it('reads what the holder recorded, and older PID-only files', () => {
    expect(parseLockFile('12\nplugins run x\n2026-01-01T00:00:00Z\n')).toEqual({
      pid: 12,
      command: 'plugins run x',
      since: '2026-01-01T00:00:00Z',
    });
    expect(parseLockFile('12')).toEqual({ pid: 12, command: '' });
    expect(parseLockFile('')).toBeUndefined();
    expect(parseLockFile('12abc\n')).toBeUndefined();
    expect(parseLockFile('-3\n')).toBeUndefined();
  });

  it('waits while a live vmi holds the guest, says once who, and takes it when released', async () => {
    plant();
    const told: string[] = [];
    setTimeout(() => rmSync(join(dir, 'vmi.lock')), 300);
    const t0 = Date.now();
    const lock = new GuestLock(dir, 'lab');
    await lock.acquire({ waitMs: 5000, onWait: (m) => told.push(m) });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(told).toHaveLength(1);
    expect(told[0]).toContain(
      `vmi pid ${holder.pid} (vmi plugins run psaux --guest lab, since 2026-11-29T00:00:00.000Z)`,
    );
    expect(parseLockFile(`${process.pid}\n`)?.pid).toBe(process.pid);
    lock.release();
    expect(existsSync(join(dir, 'vmi.lock'))).toBe(false);
  });

  it('a session of this same process holding the guest is waited for quietly, and named as such', async () => {
    const first = new GuestLock(dir, 'lab');
    await first.acquire({ waitMs: 0 });
    const told: string[] = [];
    const second = new GuestLock(dir, 'lab');
    await expect(second.acquire({ waitMs: 200, onWait: (m) => told.push(m) })).rejects.toThrow(
      new RegExp(
        `still held by another vmi after 0 s: another session of this vmi \\(pid ${process.pid}, since `,
      ),
    );
    expect(told).toEqual([]);
    setTimeout(() => first.release(), 100);
    await second.acquire({ waitMs: 5000, onWait: (m) => told.push(m) });
    expect(told).toEqual([]);
    second.release();
  });

  it('gives up after the wait with one line naming the holder', async () => {
    plant();
    const lock = new GuestLock(dir, 'lab');
    await expect(lock.acquire({ waitMs: 200 })).rejects.toThrow(GuestBusyError);
    await expect(lock.acquire({ waitMs: 200 })).rejects.toThrow(
      new RegExp(`still held by another vmi after 0 s: vmi pid ${holder.pid} \\(vmi plugins run psaux`),
    );
    await expect(lock.acquire({ waitMs: 0 })).rejects.toThrow(
      /being inspected by another vmi: vmi pid \d+.*--wait/,
    );
  });

  it('takes over the lock of a dead vmi at once', async () => {
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    plant();
    const told: string[] = [];
    const lock = new GuestLock(dir, 'lab');
    await lock.acquire({ waitMs: 0, onWait: (m) => told.push(m) });
    expect(told).toEqual([]);
    lock.release();
  });

  it('a late waiter that judged the dead holder stale does not remove the lock another waiter took since', () => {
    const path = join(dir, 'vmi.lock');
    // Waiter B reads a dead holder's lock (pid 2^22 + 1 is above pid_max's default)...
    const staleText = '4194305\nplugins run pslist\n';
    writeFileSync(path, staleText);
    const judged = { text: staleText, ino: statSync(path).ino };
    // ...meanwhile waiter A removes it and links its own in place (a live holder).
    rmSync(path);
    plant();
    const fresh = readFileSync(path, 'utf8');
    // B now acts on what it judged: only that file may go.
    const b = new GuestLock(dir, 'lab') as unknown as {
      removeStale(judged: { text: string; ino: number }): void;
    };
    b.removeStale(judged);
    expect(existsSync(path)).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(fresh);
    // The stale file itself is removed when it is still the one in place.
    rmSync(path);
    writeFileSync(path, staleText);
    b.removeStale({ text: staleText, ino: statSync(path).ino });
    expect(existsSync(path)).toBe(false);
  });

  it('two waiters in turn: each gets the guest, never both at once', async () => {
    const a = new GuestLock(dir, 'lab');
    await a.acquire();
    const b = new GuestLock(dir, 'lab');
    let bHas = false;
    const pb = b.acquire({ waitMs: 5000 }).then(() => (bHas = true));
    await new Promise((r) => setTimeout(r, 150));
    // Same process: the lock file names our own pid, which is alive, but it is ours: the
    // takeover rule for our own pid must not let b in while a holds it.
    expect(bHas).toBe(false);
    a.release();
    await pb;
    expect(bHas).toBe(true);
    b.release();
  });

  it('counts every holder in a generation: the next holder sees whether anyone held the guest in between', async () => {
    const a = new GuestLock(dir, 'lab');
    await a.acquire({ waitMs: 0 });
    const mine = a.generation;
    expect(mine).toMatch(/^1:[0-9a-f]{16}$/);
    expect(a.generationBefore).toBeUndefined();
    a.release();
    expect(a.generation).toBeUndefined();
    // Nobody in between: the generation is still the one this holder wrote.
    await a.acquire({ waitMs: 0 });
    expect(a.generationBefore).toBe(mine);
    const again = a.generation;
    a.release();
    // Another vmi in between: it counted itself.
    const b = new GuestLock(dir, 'lab');
    await b.acquire({ waitMs: 0 });
    b.release();
    await a.acquire({ waitMs: 0 });
    expect(a.generationBefore).not.toBe(again);
    a.release();
    // A lock taken over from a dead holder (which may have died before counting): unknown.
    writeFileSync(join(dir, 'vmi.lock'), '999999999\n');
    await a.acquire({ waitMs: 0 });
    expect(a.generationBefore).toBeUndefined();
    a.release();
    // A malformed generation file counts as unknown, never as this holder's.
    writeFileSync(join(dir, 'vmi.gen'), 'garbage');
    await a.acquire({ waitMs: 0 });
    expect(a.generationBefore).toBeUndefined();
    expect(a.generation).toMatch(/^1:[0-9a-f]{16}$/);
    const old = a.generation;
    a.release();
    // A run directory made again (the guest restarted) and another vmi there first: its
    // count (1) repeats a's last one, its epoch does not, so a's memo never matches.
    rmSync(join(dir, 'vmi.gen'));
    await b.acquire({ waitMs: 0 });
    expect(b.generation).toMatch(/^1:/);
    b.release();
    await a.acquire({ waitMs: 0 });
    expect(a.generationBefore).toMatch(/^1:/);
    expect(a.generationBefore).not.toBe(old);
    a.release();
  });
});
