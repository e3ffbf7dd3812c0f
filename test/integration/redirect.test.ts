/**
 * The live slice end to end: `vmi plugins:run pslist` through a shadow process on a real
 * TCG lab guest, checked against what the guest itself reports over its serial console.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, Type, TimeUnit } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runVmi, VMI_BIN } from './helpers/cli.js';
import { guestProcs, guestSh, lasting } from './helpers/guest-shell.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { GdbClient, GdbTimeoutError } from '../../src/qemu/gdb.js';
import { QmpClient } from '../../src/qemu/qmp.js';

const NAME = 't-redirect';

/** The CLI, with extra environment variables. */
const vmi = (args: string[], env: NodeJS.ProcessEnv = {}) => runVmi(args, { env });

/** What must not change in a borrowed (or any) process: mappings, open fds, signal state. */
async function processFingerprints(guest: LabGuest, pids: number[]): Promise<Map<number, string>> {
  const sep = '@@@';
  const out = await guestSh(
    guest,
    `for p in ${pids.join(' ')}; do echo "${sep}$p"; cat /proc/$p/maps; ls -l /proc/$p/fd | sed 's/.* [0-9][0-9]:[0-9][0-9] //'; grep -E '^(Sig(Blk|Ign|Cgt)|ShdPnd|SigQ|Uid|Gid|PPid|Threads):' /proc/$p/status; cat /proc/$p/cmdline | tr '\\0' ' '; echo; done`,
  );
  const map = new Map<number, string>();
  for (const chunk of out.split(sep).slice(1)) {
    const nl = chunk.indexOf('\n');
    map.set(Number(chunk.slice(0, nl)), chunk.slice(nl + 1));
  }
  return map;
}

const lastingZombies = (guest: LabGuest) => lasting(guest, (p) => p.state === 'Z');
const lastingShadows = (guest: LabGuest) => lasting(guest, (p) => p.comm === 'vmi-shadow');

describe('live pslist by system call redirection', () => {
  let guest: LabGuest;
  let stable: number[] = [];
  let before: Map<number, string>;

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    // The workload's long-lived processes (one of them gets borrowed) and init.
    const pids = await guestSh(guest, 'cut -d= -f2 /run/vmi-lab/pids');
    stable = [1, ...pids.split('\n').filter(Boolean).map(Number)];
    expect(stable.length).toBeGreaterThan(10);
    // init's signal mask moves while it reaps children: it is checked for life only.
    before = await processFingerprints(guest, stable.slice(1));
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  it('lists every guest process with the PPID and COMM the guest reports', async () => {
    const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '-r', 'json', '--timing']);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    const byPid = new Map(rows.map((row) => [row.PID as number, row]));
    const truth = await guestProcs(guest);
    let compared = 0;
    for (const p of truth.values()) {
      // Processes the console started for this very listing, and the ticker's short
      // sleeps, need not have existed while pslist ran.
      if (['cat', 'sh', 'sleep'].includes(p.comm) && !stable.includes(p.pid)) continue;
      const row = byPid.get(p.pid);
      expect(row, `pid ${p.pid} (${p.comm}) missing from pslist`).toBeDefined();
      expect(row!.PPID).toBe(p.ppid);
      // A kworker's comm names the workqueue it serves at the moment.
      if (p.ppid === 2 && p.comm.startsWith('kworker/')) expect(String(row!.COMM)).toMatch(/^kworker\//);
      else expect(row!.COMM).toBe(p.comm);
      compared++;
    }
    expect(compared).toBeGreaterThan(40);
    const worker = rows.find((row) => row.COMM === 'labd');
    expect(worker).toMatchObject({ UID: 0, EUID: 0, THREADS: 1 });
    // CREATION TIME is wall-clock: the guest booted a few seconds ago.
    const created = Date.parse(String(worker!['CREATION TIME']));
    expect(Math.abs(created - Date.parse(guest.startedAt))).toBeLessThan(120_000);
    expect(r.stderr).toMatch(/attach [\d.]+ ms \(doorbell/);
  });

  it('leaves no shadow, no zombie, and every process exactly as it was', async () => {
    const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '--timing', '-r', 'csv']);
    expect(r.code).toBe(0);
    const borrowed = Number(/borrowed pid (\d+)/.exec(r.stderr)?.[1]);
    const shadowPid = Number(/shadow pid (\d+)/.exec(r.stderr)?.[1]);
    expect(borrowed).toBeGreaterThan(1);
    expect(r.stdout).toContain('vmi-shadow'); // the shadow is honest about itself while it runs

    expect(await lastingShadows(guest)).toEqual([]);
    const after = await guestProcs(guest);
    expect(after.has(shadowPid)).toBe(false);
    expect(JSON.stringify(await lastingZombies(guest))).toBe('[]');
    expect(after.has(borrowed)).toBe(true);
    const now = await processFingerprints(guest, stable.slice(1));
    for (const pid of stable.slice(1)) expect(now.get(pid), `process ${pid} changed`).toBe(before.get(pid));
  });

  it('leaves no breakpoint armed and the VM running', async () => {
    const qmp = await QmpClient.connect(guest.qmpSocket);
    try {
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    } finally {
      qmp.close();
    }
    // A fresh client that does not send '?' (which would clear breakpoints): the guest
    // makes syscalls all the time, so a leftover breakpoint would stop it within 2 s.
    const gdb = await GdbClient.connect(guest.gdbSocket!);
    try {
      await expect(gdb.continueAndWait(2000)).rejects.toBeInstanceOf(GdbTimeoutError);
    } finally {
      await gdb.detach();
    }
  });

  it('works through the trap transport too', async () => {
    const r = await vmi([
      'plugins:run',
      'pslist',
      '--guest',
      NAME,
      '--transport',
      'trap',
      '--timing',
      '-r',
      'json',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\(trap, shadow pid/);
    const pids = (JSON.parse(r.stdout) as Array<{ PID: number }>).map((row) => row.PID);
    expect(pids).toContain(1);
    expect(pids.length).toBeGreaterThan(40);
  });

  for (const [stage, transport] of [
    ['forking the shadow', 'trap'],
    ['shadow ready', 'trap'],
    ['reading', 'trap'],
    ['borrowing pid', 'doorbell'],
    ['shadow ready', 'doorbell'],
  ] as const) {
    it(`survives vmi being killed with SIGKILL at "${stage}" (${transport})`, async () => {
      // The kill lands a moment after the progress line is read: if vmi got to finish
      // in that moment (a loaded host), try again.
      let child!: ChildProcess;
      let stderr = '';
      for (let attempt = 0; attempt < 3; attempt++) {
        const c = spawn(
          process.execPath,
          [VMI_BIN, 'plugins:run', 'pslist', '--guest', NAME, '--transport', transport, '--timing'],
          {
            stdio: ['ignore', 'ignore', 'pipe'],
          },
        );
        child = c;
        stderr = '';
        await new Promise<void>((resolve) => {
          c.stderr.on('data', (d: Buffer) => {
            stderr += d.toString();
            if (stderr.includes(stage) && c.exitCode === null) c.kill('SIGKILL');
          });
          c.on('exit', () => resolve());
        });
        if (c.signalCode === 'SIGKILL') break;
      }
      expect(child.signalCode, `vmi finished before reaching "${stage}": ${stderr}`).toBe('SIGKILL');

      // The next run replays the journal and works.
      const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '--timing', '-r', 'csv']);
      expect(r.stderr).not.toMatch(/Error/);
      expect(r.code).toBe(0);
      const after = await guestProcs(guest);
      for (const pid of stable) expect(after.has(pid), `process ${pid} died`).toBe(true);
      const shadows = await lastingShadows(guest);
      expect(shadows, `killed run:\n${stderr}\nnext run:\n${r.stderr}`).toEqual([]);
      expect(JSON.stringify(await lastingZombies(guest))).toBe('[]');
      const now = await processFingerprints(guest, stable.slice(1));
      for (const pid of stable.slice(1)) expect(now.get(pid), `process ${pid} changed`).toBe(before.get(pid));
    });
  }

  it('writes an Arrow IPC file with typed columns', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmi-arrow-'));
    try {
      const file = join(dir, 'pslist.arrow');
      const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '-r', 'arrow', '-o', file]);
      expect(r.code).toBe(0);
      const t = tableFromIPC(readFileSync(file));
      const type = (name: string) => t.schema.fields.find((f) => f.name === name)?.type;
      expect(type('PID')?.typeId).toBe(Type.Int);
      expect(type('PID')).toMatchObject({ bitWidth: 32, isSigned: true });
      expect(type('COMM')?.typeId).toBe(Type.Utf8);
      expect(type('CREATION TIME')?.typeId).toBe(Type.Timestamp);
      expect(type('CREATION TIME')).toMatchObject({ unit: TimeUnit.MILLISECOND });
      expect(t.numRows).toBeGreaterThan(40);
      const pids = t.getChild('PID')!.toArray() as Int32Array;
      expect([...pids]).toContain(1);
      expect(t.schema.metadata.get('vmi.guest')).toBe(NAME);
      expect(t.schema.metadata.get('vmi.plugin')).toBe('pslist');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('filters by --pid and lists threads with --threads', async () => {
    const r = await vmi(['plugins:run', 'pslist', '--pid', '1', '--threads', '--guest', NAME, '-r', 'json']);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ PID: number; TID: number }>;
    expect(rows.map((x) => x.PID)).toEqual([1]);
    expect(rows[0].TID).toBe(1);
  });

  it('refuses bad input with one line and a non-zero exit', async () => {
    const cases: Array<[string[], RegExp, NodeJS.ProcessEnv?]> = [
      [['plugins:run', 'nosuchplugin', '--guest', NAME], /unknown plugin 'nosuchplugin'/],
      [['plugins:run', 'pslist', '--guest', 'no-such-guest'], /no running lab guest named 'no-such-guest'/],
      [['plugins:run', 'pslist', '--bogus', '--guest', NAME], /pslist has no option --bogus/],
      [['plugins:run', 'pslist', '--pid', 'abc', '--guest', NAME], /--pid expects integer/],
      [
        ['lab', 'up', '--name', 't-noqemu'],
        /qemu-system-x86_64 not found/,
        { VMI_QEMU: '/nonexistent/qemu' },
      ],
    ];
    for (const [args, pattern, env] of cases) {
      const r = await vmi(args, env);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(pattern);
      expect(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => l.trim()).length,
        r.stderr,
      ).toBe(1);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    expect(existsSync(join(tmpdir(), 'vmi-0', 'guests', 't-noqemu'))).toBe(false);
  });
});
