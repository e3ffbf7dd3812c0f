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
import { guestProcs, guestSh, lasting, unseenRows } from './helpers/guest-shell.js';
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

/** A pid from vmi's progress line; a line that does not parse fails here (never NaN). */
function pidIn(stderr: string, re: RegExp): number {
  const m = re.exec(stderr);
  expect(m, `no ${String(re)} in vmi's stderr:\n${stderr}`).not.toBeNull();
  const pid = Number(m![1]);
  expect(Number.isSafeInteger(pid) && pid > 1, `${m![1]} is not a pid`).toBe(true);
  return pid;
}

/** The last pid the guest kernel handed out (its own counter). */
async function lastPid(guest: LabGuest): Promise<number> {
  return Number((await guestSh(guest, 'cat /proc/sys/kernel/ns_last_pid')).trim());
}

/**
 * The shadow vmi names is a process the guest kernel created during that run (a pid
 * handed out between the two counter reads, unknown to the guest before the run) and
 * gone from the guest's /proc after it.
 */
function expectShadowPid(
  shadowPid: number,
  run: { lastBefore: number; lastAfter: number; before: Map<number, unknown>; after: Map<number, unknown> },
): void {
  expect(shadowPid, `shadow pid ${shadowPid} not handed out during the run`).toBeGreaterThan(run.lastBefore);
  expect(shadowPid, `shadow pid ${shadowPid} not handed out during the run`).toBeLessThanOrEqual(
    run.lastAfter,
  );
  expect(run.before.has(shadowPid), `shadow pid ${shadowPid} existed before the run`).toBe(false);
  expect(run.after.has(shadowPid), `shadow pid ${shadowPid} still in the guest's /proc`).toBe(false);
}

/** USER_HZ: /proc/PID/stat counts starttime in these ticks; 100 on x86-64 (AT_CLKTCK). */
const CLK_TCK = 100;

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

  it('lists every guest process with the PPID and COMM the guest reports, and no other', async () => {
    const procsBefore = await guestProcs(guest);
    const lastBefore = await lastPid(guest);
    const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '-r', 'json', '--timing']);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    const byPid = new Map(rows.map((row) => [row.PID as number, row]));
    const truth = await guestProcs(guest);
    const lastAfter = await lastPid(guest);
    // Every process the guest shows before and after the run is a row, with its PPID and COMM.
    let compared = 0;
    for (const p of truth.values()) {
      if (procsBefore.get(p.pid)?.comm !== p.comm) continue; // started or exited around the run
      const row = byPid.get(p.pid);
      expect(row, `pid ${p.pid} (${p.comm}) missing from pslist`).toBeDefined();
      expect(row!.PPID).toBe(p.ppid);
      // A kworker's comm names the workqueue it serves at the moment.
      if (p.ppid === 2 && p.comm.startsWith('kworker/')) expect(String(row!.COMM)).toMatch(/^kworker\//);
      else expect(row!.COMM).toBe(p.comm);
      compared++;
    }
    expect(compared).toBeGreaterThan(40);
    // And every row is a process the guest showed before or after the run: the shadow (a
    // pid the guest kernel handed out during the run, gone now) is left out of the evidence.
    const shadowPid = pidIn(r.stderr, /shadow pid (\d+)/);
    expectShadowPid(shadowPid, { lastBefore, lastAfter, before: procsBefore, after: truth });
    const extra = unseenRows(rows, procsBefore, truth);
    expect(extra.map((row) => `${String(row.PID)} ${String(row.COMM)}`)).toEqual([]);
    expect(byPid.has(shadowPid)).toBe(false);
    const worker = rows.find((row) => row.COMM === 'labd');
    expect(worker).toMatchObject({ UID: 0, EUID: 0, THREADS: 1 });
    // CREATION TIME is the guest's boot time (/proc/stat btime, whole seconds) plus the
    // task's starttime (/proc/PID/stat field 22, in USER_HZ ticks), as the guest reports them.
    const starts = await guestSh(
      guest,
      `grep '^btime ' /proc/stat; for p in ${stable.join(' ')}; do s=$(cat /proc/$p/stat); set -- \${s##*) }; echo "$p \${20}"; done`,
    );
    const btime = Number(/^btime (\d+)$/m.exec(starts)?.[1]);
    expect(btime, starts).toBeGreaterThan(1_000_000_000);
    let timed = 0;
    for (const [, pid, ticks] of starts.matchAll(/^(\d+) (\d+)$/gm)) {
      const row = byPid.get(Number(pid));
      expect(row, `pid ${pid} missing from pslist`).toBeDefined();
      const want = btime * 1000 + Math.round((Number(ticks) * 1000) / CLK_TCK);
      expect(Date.parse(String(row!['CREATION TIME'])), `CREATION TIME of ${pid}`).toBe(want);
      timed++;
    }
    expect(timed).toBe(stable.length);
    expect(r.stderr).toMatch(/attach [\d.]+ ms \(doorbell/);
  });

  it('lists 500 more processes, read a batch of them at a time, each with its own PPID, COMM and namespace', async () => {
    // 500 idle children (psnative spawn: they pause(), their parent exits): with the
    // workload's ~60, pslist reads their files in three pipelined slices.
    await guestSh(guest, 'psnative spawn 500 >/dev/null');
    try {
      const procsBefore = await guestProcs(guest);
      const r = await vmi(['plugins:run', 'pslist', '--guest', NAME, '-r', 'json']);
      expect(r.code, r.stderr).toBe(0);
      const truth = await guestProcs(guest);
      const nsLink = (await guestSh(guest, 'readlink /proc/1/ns/pid')).trim();
      const nsId = Number(/^pid:\[(\d+)\]$/.exec(nsLink)?.[1]);
      expect(nsId, nsLink).toBeGreaterThan(0);
      const rows = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
      const byPid = new Map(rows.map((row) => [row.PID as number, row]));
      let spawned = 0;
      for (const p of truth.values()) {
        if (procsBefore.get(p.pid)?.comm !== p.comm || p.comm !== 'psnative') continue;
        const row = byPid.get(p.pid);
        expect(row, `pid ${p.pid} (${p.comm}) missing from pslist`).toBeDefined();
        expect(row).toMatchObject({ PPID: p.ppid, COMM: p.comm, NSPID: String(p.pid), PID_NS_ID: nsId });
        spawned++;
      }
      expect(spawned).toBe(500);
      expect(rows.filter((row) => row.COMM === 'psnative')).toHaveLength(500);
      // Rows in PID order across the slices, none twice.
      const pids = rows.map((row) => row.PID as number);
      expect(pids).toEqual([...new Set(pids)].sort((a, b) => a - b));
    } finally {
      await guestSh(guest, 'kill $(pidof psnative) 2>/dev/null; true');
    }
  });

  it('leaves no shadow, no zombie, and every process exactly as it was', async () => {
    const procsBefore = await guestProcs(guest);
    const lastBefore = await lastPid(guest);
    const r = await vmi([
      'plugins:run',
      'pslist',
      '--guest',
      NAME,
      '--timing',
      '-r',
      'csv',
      '--include-shadow',
    ]);
    expect(r.code).toBe(0);
    const borrowed = pidIn(r.stderr, /borrowed pid (\d+)/);
    const shadowPid = pidIn(r.stderr, /shadow pid (\d+)/);
    // Honest about itself while it runs when asked: --include-shadow keeps its row, marked True.
    expect(r.stdout).toMatch(new RegExp(`^${shadowPid},.*vmi-shadow,.*,True$`, 'm'));
    expect(r.stdout.match(/,True$/gm)).toHaveLength(1);

    expect(await lastingShadows(guest)).toEqual([]);
    const after = await guestProcs(guest);
    expectShadowPid(shadowPid, { lastBefore, lastAfter: await lastPid(guest), before: procsBefore, after });
    expect(JSON.stringify(await lastingZombies(guest))).toBe('[]');
    expect(procsBefore.has(borrowed), `borrowed pid ${borrowed} was not a guest process`).toBe(true);
    expect(after.get(borrowed)?.comm).toBe(procsBefore.get(borrowed)!.comm);
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
    expect(r.stderr).toMatch(/\(trap, memory ram-file, shadow pid/);
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
