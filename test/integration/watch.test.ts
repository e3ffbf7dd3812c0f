/**
 * `vmi watch` and the programmatic API on a booted lab guest, against the guest's own
 * console: the API runs pslist twice (the second through the resident shadow, faster) and
 * matches the guest's process list; the watch reports a process started and exited, a
 * listener opened and closed, a module unloaded and loaded; SIGINT leaves no shadow;
 * SIGKILL leaves at most a resident shadow, which the next vmi reuses or replaces; a
 * restarted watch reports nothing for what existed before it started.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openGuest } from '../../src/api/index.js';
import { GuestLock } from '../../src/util/guest-lock.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { makeClock } from '../../src/watch/events.js';
import { watchLoop, type WatchedGuest } from '../../src/watch/watcher.js';
import { records } from '../helpers/records.js';
import { PLAIN_TERMINAL, requireBuilt, ROOT, runVmi, VMI_BIN } from './helpers/cli.js';
import { guestProcs, guestRun, guestSh, lasting, unseenRows } from './helpers/guest-shell.js';

const NAME = 't-watch';

interface Watcher {
  child: ChildProcessByStdio<null, Readable, Readable>;
  events: Record<string, unknown>[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startWatch(args: string[]): Watcher {
  const child = spawn(process.execPath, [VMI_BIN, 'watch', '--guest', NAME, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...PLAIN_TERMINAL },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const w: Watcher = {
    child,
    events: [],
    stderr: [],
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      w.events.push(JSON.parse(out.slice(0, nl)) as Record<string, unknown>);
      out = out.slice(nl + 1);
    }
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    const lines = err.split('\n');
    err = lines.pop()!;
    w.stderr.push(...lines);
  });
  return w;
}

async function waitFor<T>(
  what: string,
  probe: () => T | undefined,
  w: Watcher,
  timeoutMs = 60_000,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (w.child.exitCode !== null || Date.now() - t0 > timeoutMs) {
      throw new Error(`no ${what} (exit ${w.child.exitCode}); stderr:\n${w.stderr.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits for the baseline of a single source (--only). */
async function baseline1(w: Watcher): Promise<void> {
  await waitFor('baseline', () => w.stderr.some((l) => l.includes('baseline:')), w);
}

/** Waits for the baseline of all four sources: changes after this are events. */
async function baseline(w: Watcher): Promise<void> {
  await waitFor(
    'baseline of every source',
    () => w.stderr.filter((l) => l.includes('baseline:')).length >= 4,
    w,
  );
}

type Row = Record<string, unknown>;
const eventOf = (w: Watcher, kind: string, pred: (row: Row) => boolean) =>
  w.events.find((e) => e.kind === kind && pred(e.row as Row));

async function shadowsInGuest(guest: LabGuest): Promise<string[]> {
  const left = await lasting(guest, (p) => p.comm.startsWith('vmi-shadow') || p.state === 'Z');
  return left.map((p) => `${p.pid} ${p.comm} ${p.state}`);
}

describe('vmi watch and the API on the lab guest', () => {
  let guest: LabGuest;

  beforeAll(async () => {
    requireBuilt('dist/commands/watch.js', 'dist/api/index.js');
    await labDown(NAME);
    guest = await labUp({ name: NAME });
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  it('API: opens the guest, runs pslist twice (the second resident and faster), matches the console, closes', async () => {
    const before = await guestProcs(guest);
    const g = await openGuest(NAME);
    let first, second;
    try {
      first = await g.runAll([{ plugin: 'pslist' }]);
      second = await g.runAll([{ plugin: 'pslist' }]);
    } finally {
      await g.close();
    }
    const after = await guestProcs(guest);
    expect(first.failures).toEqual([]);
    expect(first.timing.reused).toBe(false);
    expect(second.timing.reused).toBe(true);
    expect(second.timing.shadowPid).toBe(first.timing.shadowPid);
    expect(second.timing.totalMs).toBeLessThan(first.timing.totalMs);
    console.log(
      `API pslist: first ${first.timing.totalMs.toFixed(1)} ms, second ${second.timing.totalMs.toFixed(1)} ms`,
    );
    const table = second.results[0]!;
    expect(table.arrow.numRows).toBe(table.table.rows.length);
    const rows = records(table.table);
    // Every process the guest showed both times is in the table, with its parent and name.
    for (const p of before.values()) {
      if (!after.has(p.pid)) continue;
      const row = rows.find((r) => r.PID === p.pid);
      expect(row, `pid ${p.pid} ${p.comm}`).toBeDefined();
      expect(row!.PPID).toBe(p.ppid);
    }
    expect(unseenRows(rows, before, after)).toEqual([]);
    // close() took the shadow away.
    expect(await shadowsInGuest(guest)).toEqual([]);
  });

  it('watch: a process started and exited, a listener opened and closed, a module unloaded and loaded; SIGINT leaves no shadow', async () => {
    // A loaded module nothing uses (refcount 0, no dependents), as the guest reports it.
    const ko = (
      await guestSh(
        guest,
        `for k in /lib/modules/$(uname -r)/*.ko; do n=$(basename $k .ko); awk -v n=$n '$1 == n && $3 == 0 && $4 == "-" { f = 1 } END { exit !f }' /proc/modules && echo $k; done; true`,
      )
    )
      .trim()
      .split('\n')[0]!;
    const mod = ko.split('/').pop()!.replace(/\.ko$/, '');
    expect((await guestSh(guest, 'cat /proc/modules')).split('\n').some((l) => l.startsWith(`${mod} `))).toBe(
      true,
    );
    const w = startWatch(['--interval', '200ms']);
    try {
      await baseline(w);

      const pid = Number((await guestSh(guest, 'sleep 1000 >/dev/null 2>&1 & echo $!')).trim());
      // Ground truth from the guest: its parent (field 4 of stat) and real uid (status).
      const stat = await guestSh(guest, `cat /proc/${pid}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const uid = Number(/^Uid:\s+(\d+)/m.exec(await guestSh(guest, `cat /proc/${pid}/status`))![1]);
      const started = await waitFor(
        'process_started',
        () => eventOf(w, 'process_started', (r) => r.PID === pid),
        w,
      );
      expect(started).toMatchObject({
        guest: NAME,
        kind: 'process_started',
        row: { PID: pid, PPID: ppid, ARGS: 'sleep 1000', UID: uid, COMM: 'sleep' },
      });
      expect(String(started.time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
      expect(BigInt(String(started.time_ns))).toBeGreaterThan(0n);
      await guestSh(guest, `kill ${pid}`);
      await waitFor('process_exited', () => eventOf(w, 'process_exited', (r) => r.PID === pid), w);

      const port = 7799;
      const lpid = Number(
        (await guestSh(guest, `/usr/sbin/labd tcp-server ${port} >/dev/null 2>&1 & echo $!`)).trim(),
      );
      const opened = await waitFor(
        'listener_opened',
        () => eventOf(w, 'listener_opened', (r) => r['Source Port'] === port),
        w,
      );
      expect(opened.row).toMatchObject({ PID: lpid, Proto: 'TCP', State: 'LISTEN' });
      await guestSh(guest, `kill ${lpid}`);
      await waitFor(
        'listener_closed',
        () => eventOf(w, 'listener_closed', (r) => r['Source Port'] === port),
        w,
      );

      await guestSh(guest, `rmmod ${mod}`);
      await waitFor('module_unloaded', () => eventOf(w, 'module_unloaded', (r) => r.Name === mod), w);
      await guestSh(guest, `insmod ${ko}`);
      const loaded = await waitFor(
        'module_loaded',
        () => eventOf(w, 'module_loaded', (r) => r.Name === mod),
        w,
      );
      // Seen as early as the kernel shows it: Loading while its init runs, then Live.
      expect(['Loading', 'Live']).toContain((loaded.row as Row).State);
      expect(await guestSh(guest, `grep -c '^${mod} ' /proc/modules`)).toBe('1\n');
      // Nothing but what happened: no event for the lab's own processes, listeners, mounts.
      const kinds = new Set(w.events.map((e) => e.kind));
      expect(kinds.has('mount_added') || kinds.has('mount_removed')).toBe(false);
    } finally {
      w.child.kill('SIGINT');
    }
    const end = await w.exited;
    expect(end, w.stderr.join('\n')).toEqual({ code: 0, signal: null });
    expect(w.stderr.some((l) => l.includes('SIGINT: detaching'))).toBe(true);
    expect(await shadowsInGuest(guest)).toEqual([]);
  });

  it('incremental snapshots: a burst of short-lived processes is reported whole, each start and exit', async () => {
    const w = startWatch(['--interval', '100ms', '--only', 'process']);
    try {
      await baseline1(w);
      // Ground truth: the PIDs the guest's shell gives its 20 children, each alive 1.5 s.
      const pids = (
        await guestSh(
          guest,
          'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 1.5 >/dev/null 2>&1 & echo $!; done',
        )
      )
        .trim()
        .split('\n')
        .map(Number);
      expect(pids).toHaveLength(20);
      await waitFor(
        'a process_started and a process_exited for each of the burst',
        () =>
          pids.every(
            (pid) =>
              eventOf(w, 'process_started', (r) => r.PID === pid) &&
              eventOf(w, 'process_exited', (r) => r.PID === pid),
          ),
        w,
      );
      for (const pid of pids) {
        const started = eventOf(w, 'process_started', (r) => r.PID === pid)!;
        const exited = eventOf(w, 'process_exited', (r) => r.PID === pid)!;
        // One process each: the same start time in both, the exit after the start.
        expect((exited.row as Row).START_MS).toBe((started.row as Row).START_MS);
        expect(BigInt(String(exited.time_ns))).toBeGreaterThan(BigInt(String(started.time_ns)));
      }
    } finally {
      w.child.kill('SIGINT');
    }
    expect(await w.exited).toEqual({ code: 0, signal: null });
  });

  it('incremental snapshots: a new process, a second instance of it under init among them, is reported by the first tick that starts after the guest shows it', async () => {
    const g = await openGuest(NAME, { holdAwake: false });
    // Ticks started so far; an event is emitted after its tick's run, before the next starts.
    let started = 0;
    const wg: WatchedGuest = {
      name: NAME,
      runAll: (calls) => {
        started++;
        return g.runAll(calls);
      },
    };
    const seen = new Map<number, { tick: number; row: Row }>();
    let baselined = false;
    const stop = new AbortController();
    const loop = watchLoop(wg, {
      intervalMs: 100,
      sources: ['process'],
      signal: stop.signal,
      now: makeClock(),
      emit: async (e) => {
        if (e.kind === 'process_started') seen.set(Number(e.row.PID), { tick: started, row: e.row });
      },
      status: (m) => {
        if (m.includes('baseline:')) baselined = true;
      },
    });
    const pids: number[] = [];
    try {
      for (let i = 0; i < 600 && !baselined; i++) await new Promise((r) => setTimeout(r, 50));
      expect(baselined, 'no baseline from the watch loop').toBe(true);
      for (let round = 0; round < 3; round++) {
        // A `sleep 1000` whose shell exits at once: init's child, the twin of the one before.
        const pid = Number((await guestSh(guest, "sh -c 'sleep 1000 >/dev/null 2>&1 & echo $!'")).trim());
        pids.push(pid);
        // Ground truth: the guest shows it running sleep (exec done) under init.
        let stat = '';
        for (let k = 0; k < 50; k++) {
          stat = await guestSh(guest, `cat /proc/${pid}/stat`);
          if (stat.includes('(sleep)')) break;
        }
        expect(stat).toContain('(sleep)');
        expect(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]).toBe('1');
        const shown = started;
        for (let k = 0; k < 200 && !seen.has(pid); k++) await new Promise((r) => setTimeout(r, 50));
        const ev = seen.get(pid);
        expect(ev, `no process_started for ${pid}`).toBeDefined();
        // The tick in flight when the guest showed it may have listed /proc before; the next must report it.
        expect(
          ev!.tick,
          `pid ${pid}: reported by tick ${ev!.tick}, shown during tick ${shown}`,
        ).toBeLessThanOrEqual(shown + 1);
        expect(ev!.row).toMatchObject({ PID: pid, PPID: 1, COMM: 'sleep', ARGS: 'sleep 1000' });
      }
    } finally {
      stop.abort();
      await loop.catch(() => undefined);
      await g.close();
      if (pids.length > 0) await guestRun(guest, `kill ${pids.join(' ')}`);
    }
  });

  it('incremental snapshots: a PID taken over with the allocation cursor put back where it was (ns_last_pid) is an exit and a start', async () => {
    const w = startWatch(['--interval', '100ms', '--only', 'process']);
    let pids: number[] = [];
    try {
      await baseline1(w);
      // Another task of the guest may take x between the rewind and the fork (a CI run
      // once saw x + 1): then the swap is tried again with a new x.
      let x = 0;
      let y = -1;
      for (let attempt = 0; attempt < 5 && y !== x; attempt++) {
        x = Number((await guestSh(guest, 'sleep 1000 >/dev/null 2>&1 & echo $!')).trim());
        pids = [x];
        const first = x;
        await waitFor('process_started', () => eventOf(w, 'process_started', (r) => r.PID === first), w);
        // In one command, with builtins only but the one fork: end x, wait until init has
        // reaped it (each console command runs in a subshell, so x is init's orphan and
        // stays a zombie holding its PID until busybox init reaps it, up to ~1 s; a CI run
        // that forked before then got x + 6), put the cursor before it, start another
        // program (it gets x), put the cursor back where it was.
        const out = await guestSh(
          guest,
          `kill ${x}; i=0; while [ -e /proc/${x} ] && [ $i -lt 500000 ]; do i=$((i+1)); done; [ -e /proc/${x} ] && { echo "pid ${x} not reaped"; exit 1; }; read L < /proc/sys/kernel/ns_last_pid; echo ${x - 1} > /proc/sys/kernel/ns_last_pid; sleep 1001 >/dev/null 2>&1 & echo $!; echo $L > /proc/sys/kernel/ns_last_pid`,
        );
        y = Number(out.trim());
        pids = [y];
        if (y !== x) {
          await guestRun(guest, `kill ${y}`);
          pids = [];
        }
      }
      expect(y, 'the guest gave the new program the same PID (5 tries)').toBe(x);
      const swapped = x;
      // Ground truth: the guest shows the PID running the new program.
      expect((await guestSh(guest, `tr '\\0' ' ' < /proc/${swapped}/cmdline`)).trim()).toBe('sleep 1001');
      const started = await waitFor(
        'a process_started for the new program',
        () => eventOf(w, 'process_started', (r) => r.PID === swapped && r.ARGS === 'sleep 1001'),
        w,
        20_000,
      );
      const exited = eventOf(w, 'process_exited', (r) => r.PID === swapped && r.ARGS === 'sleep 1000');
      expect(exited, 'the old program exited').toBeDefined();
      expect(w.events.indexOf(exited!)).toBeLessThan(w.events.indexOf(started));
    } finally {
      w.child.kill('SIGINT');
      if (pids.length > 0) await guestRun(guest, `kill ${pids.join(' ')}`);
    }
    expect(await w.exited).toEqual({ code: 0, signal: null });
  });

  it('many clients: two plugin runs started at once beside a watch both succeed; a held guest is waited for, or refused with --wait 0', async () => {
    const w = startWatch(['--interval', '200ms']);
    try {
      await baseline(w);
      const before = await guestProcs(guest);
      const [a, b] = await Promise.all([
        runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json'], { env: PLAIN_TERMINAL }),
        runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json'], { env: PLAIN_TERMINAL }),
      ]);
      const after = await guestProcs(guest);
      for (const r of [a, b]) {
        expect(r.code, r.stderr).toBe(0);
        const rows = JSON.parse(r.stdout) as Row[];
        for (const p of before.values())
          // vmi leaves its own shadow (the watch's, resident) out of every table.
          if (after.has(p.pid) && p.comm !== 'sleep' && p.comm !== 'vmi-shadow')
            expect(rows.find((x) => x.PID === p.pid)?.PPID, `pid ${p.pid} ${p.comm}`).toBe(p.ppid);
        // Nothing that never existed (short `sleep`s of the lab's ticker come and go while
        // two runs and a watch share one TCG vCPU: they are not what this checks).
        expect(unseenRows(rows, before, after).filter((r) => r.COMM !== 'sleep')).toEqual([]);
      }
    } finally {
      w.child.kill('SIGTERM');
    }
    expect(await w.exited).toEqual({ code: 0, signal: null });

    // This test process holds the guest as another vmi would.
    const lock = new GuestLock(guest.runDir, NAME);
    await lock.acquire({ waitMs: 10_000 });
    let released = false;
    try {
      const refused = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '--wait', '0'], {
        env: PLAIN_TERMINAL,
      });
      expect(refused.code).not.toBe(0);
      expect(refused.stdout).toBe('');
      const errors = refused.stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
      expect(errors).toEqual([expect.stringContaining(`another vmi: vmi pid ${process.pid}`)]);
      // Released only once the waiting vmi has said whom it waits for (its start-up alone
      // can take seconds on a loaded host).
      const waiting = spawn(
        process.execPath,
        [VMI_BIN, 'plugins', 'run', 'pslist', '--guest', NAME, '--wait', '90'],
        {
          cwd: ROOT,
          env: { ...process.env, ...PLAIN_TERMINAL },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      waiting.stdout.on('data', (d: Buffer) => (out += d.toString()));
      waiting.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = new Promise<number | null>((res) => waiting.on('exit', res));
      for (let i = 0; i < 600 && !err.includes('is held by'); i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(err).toContain(`vmi: guest ${NAME} is held by vmi pid ${process.pid}`);
      lock.release();
      released = true;
      expect(await code, err).toBe(0);
      expect(out).toContain('PID');
    } finally {
      if (!released) lock.release();
    }
  });

  it('SIGKILL leaves at most a resident shadow, which the next vmi reuses; a restarted watch replays nothing', async () => {
    const before = await guestProcs(guest);
    const killed = startWatch(['--interval', '100ms']);
    await baseline(killed);
    killed.child.kill('SIGKILL');
    await killed.exited;
    // What is new in the guest and lasts (the console's own commands come and go; so do the
    // lab ticker's sleeps): the resident shadow and nothing else.
    const after1 = await guestProcs(guest);
    await new Promise((r) => setTimeout(r, 1500));
    const after2 = await guestProcs(guest);
    const fresh = [...after2.values()].filter(
      (p) => !before.has(p.pid) && after1.get(p.pid)?.comm === p.comm && p.comm !== 'sleep',
    );
    expect(fresh.map((p) => p.comm)).toEqual(['vmi-shadow']);
    const status = await runVmi(['shadow', 'status', '--guest', NAME, '--json'], { env: PLAIN_TERMINAL });
    expect(status.code, status.stderr).toBe(0);
    const st = JSON.parse(status.stdout) as { resident: boolean; pid?: number; health?: string };
    expect(st.resident).toBe(true);
    expect(st.pid).toBe(fresh[0].pid);

    // Started before the next watch: part of its baseline, never an event.
    const old = Number((await guestSh(guest, 'sleep 1000 >/dev/null 2>&1 & echo $!')).trim());
    const next = startWatch(['--interval', '100ms']);
    try {
      await baseline(next);
      expect(next.stderr.join('\n')).toMatch(
        new RegExp(`reusing the resident shadow \\(pid ${st.pid}\\)|starting a new one`),
      );
      const marker = Number((await guestSh(guest, 'sleep 999 >/dev/null 2>&1 & echo $!')).trim());
      await waitFor('process_started', () => eventOf(next, 'process_started', (r) => r.PID === marker), next);
      expect(eventOf(next, 'process_started', (r) => r.PID === old)).toBeUndefined();
      await guestRun(guest, `kill ${old} ${marker}`);
    } finally {
      next.child.kill('SIGTERM');
    }
    expect(await next.exited).toEqual({ code: 0, signal: null });
    expect(await shadowsInGuest(guest)).toEqual([]);
  });

  it('-o: a path it cannot open, or a guest not running, is a one-line error before any attach; a write that fails later (ENOSPC) ends the watch with one line and no shadow left', async () => {
    const bad = await runVmi(['watch', '--guest', NAME, '-o', '/nonexistent-dir/events.jsonl'], {
      env: PLAIN_TERMINAL,
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toEqual([
      "vmi: error: cannot open -o /nonexistent-dir/events.jsonl: ENOENT: no such file or directory, open '/nonexistent-dir/events.jsonl'",
    ]);
    expect(await shadowsInGuest(guest)).toEqual([]);
    const nosuch = await runVmi(['watch', '--guest', 'nosuch'], { env: PLAIN_TERMINAL });
    expect(nosuch.code).toBe(1);
    expect(nosuch.stderr.trim().split('\n')).toEqual([
      "vmi: error: guest nosuch: no running lab guest named 'nosuch': start it with `vmi lab up --name nosuch` (see `vmi lab list`)",
    ]);

    // /dev/full opens, and every write to it fails with ENOSPC.
    const w = startWatch(['--interval', '200ms', '--only', 'process', '-o', '/dev/full']);
    let pid = 0;
    try {
      await baseline1(w);
      pid = Number((await guestSh(guest, 'sleep 1000 >/dev/null 2>&1 & echo $!')).trim());
      const end = await Promise.race([
        w.exited,
        new Promise<'running'>((r) => setTimeout(() => r('running'), 30_000)),
      ]);
      expect(end, w.stderr.join('\n')).toEqual({ code: 1, signal: null });
    } finally {
      if (w.child.exitCode === null) w.child.kill('SIGKILL');
      if (pid) await guestRun(guest, `kill ${pid}`);
    }
    const errors = w.stderr.filter((l) => l.startsWith('vmi: error:'));
    expect(errors).toEqual([
      'vmi: error: writing the events to /dev/full: ENOSPC: no space left on device, write',
    ]);
    expect(w.stderr.join('\n')).not.toMatch(/\n\s+at /);
    expect(await shadowsInGuest(guest)).toEqual([]);
  });

  it('ends quietly when its reader goes away (EPIPE) and leaves no shadow', async () => {
    // pipefail: the pipeline's status is vmi's, not head's.
    const sh = spawn(
      'bash',
      [
        '-c',
        `set -o pipefail; "${process.execPath}" "${VMI_BIN}" watch --guest ${NAME} --interval 50ms --only process | head -1`,
      ],
      { cwd: ROOT, env: { ...process.env, ...PLAIN_TERMINAL }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    sh.stdout.on('data', (d: Buffer) => (out += d.toString()));
    sh.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const waitBaseline = async () => {
      for (let i = 0; i < 600 && !/baseline:/.test(err); i++)
        await new Promise((res) => setTimeout(res, 100));
    };
    await waitBaseline();
    expect(err).toMatch(/baseline:/);
    // Its start is the line head takes; its exit, a second later, is the write that meets EPIPE.
    await guestSh(guest, 'sleep 1 >/dev/null 2>&1 &');
    const code = await new Promise<number | null>((res) => sh.on('exit', res));
    expect(code, err).toBe(0);
    expect(JSON.parse(out.trim()).kind).toMatch(/^process_(started|exited)$/);
    expect(err).not.toMatch(/EPIPE|Error:/);
    expect(await shadowsInGuest(guest)).toEqual([]);
  });
});
