/**
 * A QEMU that vmi did not start: launched here with the lab's kernel and initramfs but
 * with no shared RAM and no gdbstub, only QMP and a serial console. `vmi plugins run
 * --qmp` must switch the gdbstub on, inspect, and leave the guest exactly as it was.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runVmi } from './helpers/cli.js';
import { GuestConsole } from '../../src/lab/console.js';
import { buildInitramfs } from '../../src/lab/initramfs.js';
import { ensureKernel } from '../../src/lab/kernel.js';
import { BASE_CMDLINE } from '../../src/lab/lab.js';
import { LAB_WORKLOAD } from '../../src/lab/workload.js';
import { foreignRunDir } from '../../src/targets/qmp.js';
import { findQemu } from '../../src/qemu/launcher.js';
import { QmpClient } from '../../src/qemu/qmp.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * PIDs of the guest's user processes (kernel threads, children of kthreadd, come and go),
 * taken twice so that the console's own transient subshell and awk drop out.
 */
async function guestPids(con: GuestConsole): Promise<number[]> {
  const once = async (): Promise<number[]> =>
    (await con.run(`awk '$4 != 2 && $1 != 2 {print $1}' /proc/[0-9]*/stat`, 10_000)).output
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter((n) => n > 0);
  const a = await once();
  const b = new Set(await once());
  return a.filter((p) => b.has(p)).sort((x, y) => x - y);
}

const vmi = (args: string[]) => runVmi(args);

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('foreign guest (--qmp only)', () => {
  let dir: string;
  let qemu: ChildProcess;
  let qmpSocket: string;
  let serialSocket: string;
  let con: GuestConsole;
  /** QEMU's QMP socket takes one client at a time: connect per question, as vmi does. */
  const qmp = {
    async execute<T>(command: string): Promise<T> {
      const c = await QmpClient.connect(qmpSocket);
      try {
        return await c.execute<T>(command);
      } finally {
        c.close();
      }
    },
  };

  beforeAll(async () => {
    const kernel = await ensureKernel();
    const initrd = await buildInitramfs(kernel);
    dir = await mkdtemp('/tmp/vmi-foreign-test-');
    qmpSocket = join(dir, 'qmp.sock');
    serialSocket = join(dir, 'serial.sock');
    // Deliberately not src/qemu/launcher: no shared RAM file, no -gdb.
    qemu = spawn(
      await findQemu(),
      [
        ...['-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', '256M'],
        ...['-kernel', kernel.vmlinux, '-initrd', initrd.path, '-append', BASE_CMDLINE],
        ...['-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot', '-nic', 'none'],
        ...['-qmp', `unix:${qmpSocket},server=on,wait=off`],
        ...['-chardev', `socket,id=ser0,path=${serialSocket},server=on,wait=off`, '-serial', 'chardev:ser0'],
      ],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 240_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error('foreign guest did not become ready');
      if (qemu.exitCode !== null) throw new Error(`qemu exited with ${qemu.exitCode}`);
      try {
        con ??= await GuestConsole.connect(serialSocket, { timeoutMs: 3000 });
        if ((await con.run(`cat ${LAB_WORKLOAD.readyFile}`, 3000)).status === 0) break;
      } catch {
        con?.close();
        con = undefined as unknown as GuestConsole;
      }
      await sleep(300);
    }
  });

  afterAll(async () => {
    con?.close();
    qemu?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
    if (qmpSocket) await rm(foreignRunDir(qmpSocket), { recursive: true, force: true });
  });

  it('runs pslist through QMP alone and leaves no trace', async () => {
    const chardevsBefore = await qmp.execute<{ label: string }[]>('query-chardev');
    expect(chardevsBefore.map((c) => c.label)).not.toContain('gdb');
    const before = await guestPids(con);

    const t0 = performance.now();
    const r = await vmi(['plugins', 'run', 'pslist', '--qmp', qmpSocket, '-r', 'json']);
    const ms = performance.now() - t0;
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as { PID: number; COMM: string }[];
    console.log(`foreign pslist: ${rows.length} rows in ${ms.toFixed(0)} ms (CLI, --qmp only)`);
    const seen = new Set(rows.map((x) => x.PID));
    // Every process that lived before and after the run is in the listing.
    const after = await guestPids(con);
    for (const pid of before.filter((p) => after.includes(p))) expect(seen.has(pid), `pid ${pid}`).toBe(true);

    // The gdbstub is off again: no chardev, no socket, nothing to connect to.
    const chardevs = await qmp.execute<{ label: string }[]>('query-chardev');
    expect(chardevs.map((c) => c.label)).not.toContain('gdb');
    const sock = join(foreignRunDir(qmpSocket), 'gdb.sock');
    expect(existsSync(sock)).toBe(false);
    expect(await canConnect(sock)).toBe(false);
    // The VM runs as before.
    expect((await qmp.execute<{ status: string }>('query-status')).status).toBe('running');
    // No shadow left, every process that was there is still there.
    const comms = (await con.run('cat /proc/[0-9]*/comm', 10_000)).output;
    expect(comms).not.toMatch(/vmi-shadow/);
    for (const pid of before) expect(after, `pid ${pid} still alive`).toContain(pid);
    expect(before.length).toBeGreaterThan(10);
  });

  it('leaves a paused guest paused', async () => {
    await qmp.execute('stop');
    try {
      const r = await vmi(['plugins', 'run', 'pslist', '--qmp', qmpSocket, '-r', 'json']);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as unknown[]).length).toBeGreaterThan(10);
      expect((await qmp.execute<{ status: string }>('query-status')).status).toBe('paused');
      const chardevs = await qmp.execute<{ label: string }[]>('query-chardev');
      expect(chardevs.map((c) => c.label)).not.toContain('gdb');
    } finally {
      await qmp.execute('cont');
    }
  });
});
