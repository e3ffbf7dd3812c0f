/**
 * `vmi query` and `vmi collect` against two real booted lab guests, checked against what
 * the guests' own shells say on their consoles:
 * - listeners with their command lines (sockstat ⋈ pslist ⋈ psaux) equal /proc/net/tcp's
 *   listening inodes mapped to processes through /proc/PID/fd links and /proc/PID/cmdline;
 * - an aggregate over both guests equals their consoles' process counts;
 * - a query on a capture (`vmi capture create`, then `vmi query --capture`);
 * - `vmi collect` for 3 rounds over both guests, then `vmi query --lake` finds the process
 *   started from a console between rounds 1 and 2;
 * - a collect killed with SIGKILL in the middle of writing a file leaves nothing that
 *   DuckDB's reader sees but whole files.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { guestProcs, guestSh } from './helpers/guest-shell.js';
import { requireBuilt, runVmi, VMI_BIN } from './helpers/cli.js';

const NAMES = ['sql-a', 'sql-b'];

/** Rows of `-r json` output, without the renderer's Volatility-style `__children`. */
function jsonRows<T>(stdout: string): T[] {
  return (JSON.parse(stdout) as Record<string, unknown>[]).map(({ __children: _, ...row }) => row as T);
}

/** PID → command line (NULs as spaces, trailing space dropped) of every process, from the guest's shell. */
async function guestCmdlines(guest: LabGuest): Promise<Map<number, string>> {
  const out = await guestSh(
    guest,
    `for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) && echo "\${d#/proc/} $c"; done; true`,
  );
  const m = new Map<number, string>();
  for (const line of out.split('\n')) {
    const x = /^(\d+) (.*)$/.exec(line.replace(/\s+$/, ''));
    if (x) m.set(Number(x[1]), x[2]);
  }
  return m;
}

/** Every file under `dir`, relative paths. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name), join(rel, e.name));
      else out.push(join(rel, e.name));
    }
  };
  await walk(dir, '');
  return out.sort();
}

/**
 * The guest's own answer: TCP listeners (state 0A in /proc/net/tcp and tcp6) by inode,
 * the processes holding each inode (readlink of /proc/PID/fd/*), and their command lines.
 * One line per (pid, port, cmdline), sorted.
 */
async function guestListeners(guest: LabGuest): Promise<string[]> {
  const tcp = await guestSh(guest, 'cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true');
  const listening = new Map<string, number>(); // inode → local port
  for (const line of tcp.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A') continue;
    listening.set(f[9], parseInt(f[1].split(':')[1], 16));
  }
  const links = await guestSh(
    guest,
    'for f in /proc/[0-9]*/fd/*; do l=$(readlink $f 2>/dev/null) && case "$l" in socket:*) echo "${f#/proc/} $l";; esac; done; true',
  );
  const holders = new Map<number, Set<string>>();
  for (const line of links.split('\n')) {
    const m = /^(\d+)\/fd\/\d+ socket:\[(\d+)\]$/.exec(line.trim());
    if (!m || !listening.has(m[2])) continue;
    const pid = Number(m[1]);
    if (!holders.has(pid)) holders.set(pid, new Set());
    holders.get(pid)!.add(m[2]);
  }
  const out: string[] = [];
  for (const [pid, inodes] of holders) {
    const cmd = (await guestSh(guest, `tr '\\0' ' ' < /proc/${pid}/cmdline; echo`)).replace(/\s+$/, '');
    for (const inode of inodes) out.push(`${pid} ${listening.get(inode)} ${cmd}`);
  }
  return [...new Set(out)].sort();
}

describe('vmi query and vmi collect on two lab guests', () => {
  const guests: LabGuest[] = [];
  let work: string;

  beforeAll(async () => {
    requireBuilt('dist/commands/query.js', 'dist/commands/collect.js');
    work = await mkdtemp(join(tmpdir(), 'vmi-sql-'));
    for (const name of NAMES) await labDown(name);
    // One at a time: two TCG boots at once on two cores only slow each other down.
    for (const name of NAMES) guests.push(await labUp({ name, memMiB: 256 }));
  });

  afterAll(async () => {
    for (const name of NAMES) await labDown(name);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('listeners with their command lines (sockstat ⋈ pslist ⋈ psaux) equal the guest console', async () => {
    const sql = `SELECT s.PID, s."Source Port" AS PORT, a.ARGS, p.COMM
      FROM sockstat s JOIN pslist p USING (GUEST, PID) JOIN psaux a USING (GUEST, PID)
      WHERE s.State = 'LISTEN' AND s.Proto = 'TCP' ORDER BY 1, 2`;
    const r = await runVmi(['query', '--guest', NAMES[0], '-r', 'json', '--timing', sql]);
    expect(r.code, r.stderr).toBe(0);
    console.log(r.stderr.trim());
    const rows = jsonRows<{ PID: number; PORT: number; ARGS: string; COMM: string }>(r.stdout);
    const truth = await guestListeners(guests[0]);
    const got = [...new Set(rows.map((x) => `${x.PID} ${x.PORT} ${x.ARGS}`))].sort();
    expect(truth.length).toBeGreaterThanOrEqual(2); // httpd and labd's tcp-server at least
    expect(got).toEqual(truth);
  });

  it('an aggregate over both guests equals their consoles', async () => {
    // Distinct numbers of marker processes on each guest, started from the console.
    await guestSh(guests[0], 'for i in 1; do setsid sleep 7001 </dev/null >/dev/null 2>&1 & done; true');
    await guestSh(guests[1], 'for i in 1 2 3; do setsid sleep 7001 </dev/null >/dev/null 2>&1 & done; true');
    const sql = `SELECT GUEST, count(*) FILTER (WHERE ARGS = 'sleep 7001') AS SLEEPERS,
      count(*) FILTER (WHERE COMM IN ('labd', 'httpd')) AS DAEMONS,
      max(PID) FILTER (WHERE COMM IN ('labd', 'httpd') OR ARGS = 'sleep 7001') AS MAXPID
      FROM psaux GROUP BY GUEST ORDER BY GUEST`;
    const before = await Promise.all(guests.map((g) => guestCmdlines(g)));
    const comms = await Promise.all(guests.map((g) => guestProcs(g)));
    const r = await runVmi(['query', '--guest', NAMES[0], '--guest', NAMES[1], '-r', 'json', sql]);
    expect(r.code, r.stderr).toBe(0);
    const after = await Promise.all(guests.map((g) => guestCmdlines(g)));
    const rows = jsonRows<{ GUEST: string; SLEEPERS: number; DAEMONS: number; MAXPID: number }>(r.stdout);
    const expected = NAMES.map((name, i) => {
      // Processes the console saw both before and after the query (the stable ones).
      const stable = [...before[i].entries()].filter(([pid, cmd]) => after[i].get(pid) === cmd);
      const sleepers = stable.filter(([, cmd]) => cmd === 'sleep 7001').map(([pid]) => pid);
      const daemons = stable
        .filter(([pid]) => ['labd', 'httpd'].includes(comms[i].get(pid)?.comm ?? ''))
        .map(([pid]) => pid);
      return {
        GUEST: name,
        SLEEPERS: sleepers.length,
        DAEMONS: daemons.length,
        MAXPID: Math.max(...sleepers, ...daemons),
      };
    });
    expect(rows).toEqual(expected);
    expect(rows[1].SLEEPERS - rows[0].SLEEPERS).toBe(2);
  });

  it('a query on a capture (vmi capture create, then vmi query --capture)', async () => {
    const g = guests[0];
    const marker = Number(
      (await guestSh(g, 'setsid sleep 7002 </dev/null >/dev/null 2>&1 & echo $!')).trim(),
    );
    const comms = await guestProcs(g);
    const cmds = await guestCmdlines(g);
    const truth = [...cmds.entries()]
      .filter(
        ([pid, cmd]) => cmd.startsWith('sleep 700') || ['labd', 'httpd'].includes(comms.get(pid)?.comm ?? ''),
      )
      .map(([pid, cmd]) => `${pid} ${cmd}`)
      .sort();
    const file = join(work, 'a.vmicap');
    const c = await runVmi(['capture', 'create', '--guest', NAMES[0], '-o', file], { timeoutMs: 180_000 });
    expect(c.code, c.stderr).toBe(0);
    // Gone from the live guest: the capture must still show it.
    await guestSh(g, `kill ${marker}`);
    const r = await runVmi(
      [
        'query',
        '--capture',
        file,
        '-r',
        'json',
        `SELECT PID, ARGS FROM psaux WHERE COMM IN ('labd', 'httpd') OR ARGS LIKE 'sleep 700%' ORDER BY PID`,
      ],
      { timeoutMs: 180_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const got = jsonRows<{ PID: number; ARGS: string }>(r.stdout)
      .map((x) => `${x.PID} ${x.ARGS}`)
      .sort();
    expect(got).toContain(`${marker} sleep 7002`);
    expect(got).toEqual(truth);
  });

  it('vmi collect: 3 rounds over 2 guests; the lake finds the process started between rounds 1 and 2', async () => {
    const lake = join(work, 'lake');
    const child = spawn(
      process.execPath,
      [
        VMI_BIN,
        'collect',
        'pslist',
        'sockstat',
        '-d',
        lake,
        '--guest',
        NAMES[0],
        '--guest',
        NAMES[1],
        '--interval',
        '20s',
        '--rounds',
        '3',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let marker = '';
    let markerError: unknown;
    const started = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (!marker && /round 1\/3 .*: \d+ files/.test(stderr)) {
          marker = 'pending';
          guestSh(guests[1], 'setsid sleep 7003 </dev/null >/dev/null 2>&1 & echo $!')
            .then((pid) => {
              marker = pid.trim();
              // It must be in round 2: the console answered before round 2 began.
              if (/round 2\/3/.test(stderr))
                markerError = new Error(`round 2 ended before the marker started: ${stderr}`);
            })
            .catch((e: unknown) => (markerError = e))
            .finally(resolve);
        }
      });
    });
    const code = await exited;
    await started;
    if (markerError) throw markerError;
    expect(code, stderr).toBe(0);
    expect(stderr.match(/round \d\/3 at \S+: 4 files/g)?.length, stderr).toBe(3);
    const files = (await tree(lake)).filter((f) => f.endsWith('.parquet'));
    expect(files.length).toBe(12); // 3 rounds × 2 plugins × 2 guests
    for (const f of files) {
      expect(f).toMatch(
        /^plugin=(pslist|sockstat)\/host=[^/]+\/guest=sql-[ab]\/date=\d{4}-\d{2}-\d{2}\/\d{8}T\d{9}Z-[0-9a-f]{8}\.parquet$/,
      );
    }
    const sql = `WITH r AS (SELECT COLLECTED_AT AS at, row_number() OVER (ORDER BY COLLECTED_AT) AS n
                            FROM (SELECT DISTINCT COLLECTED_AT FROM pslist)),
      p AS (SELECT pslist.*, r.n FROM pslist JOIN r ON pslist.COLLECTED_AT = r.at)
      SELECT b.GUEST, b.PID, b.COMM FROM p b WHERE b.n = 2 AND NOT EXISTS (
        SELECT 1 FROM p a WHERE a.n = 1 AND a.GUEST = b.GUEST AND a.PID = b.PID
          AND a."CREATION TIME" IS NOT DISTINCT FROM b."CREATION TIME")
      ORDER BY 1, 2`;
    const r = await runVmi(['query', '--lake', lake, '-r', 'json', sql]);
    expect(r.code, r.stderr).toBe(0);
    const rows = jsonRows<{ GUEST: string; PID: number; COMM: string }>(r.stdout);
    expect(rows).toContainEqual({ GUEST: NAMES[1], PID: Number(marker), COMM: 'sleep' });
    // Round 3 still has it, round 1 does not.
    const per = await runVmi([
      'query',
      '--lake',
      lake,
      '-r',
      'json',
      `SELECT count(*)::INTEGER AS N FROM pslist WHERE GUEST = '${NAMES[1]}' AND PID = ${Number(marker)} GROUP BY ALL`,
    ]);
    expect(jsonRows(per.stdout)).toEqual([{ N: 2 }]);
  });

  it('a collect killed with SIGKILL mid-write leaves no partial Parquet file a reader sees', async () => {
    const lake = join(work, 'killed');
    const instance = await DuckDBInstance.create(':memory:');
    const db = await instance.connect();
    const glob = `${lake}/**/*.parquet`;
    const count = async (): Promise<number> =>
      (
        await db.runAndReadAll(
          `SELECT count(*)::INTEGER AS n FROM read_parquet('${glob}', hive_partitioning = true)`,
        )
      ).getRowObjectsJS()[0].n as number;
    try {
      // A whole round first: the lake then holds whole files a reader must keep reading.
      const first = await runVmi(['collect', 'pslist', '-d', lake, '--guest', NAMES[0], '--once']);
      expect(first.code, first.stderr).toBe(0);
      const rowsBefore = await count();
      expect(rowsBefore).toBeGreaterThan(10);
      const child = spawn(
        process.execPath,
        [VMI_BIN, 'collect', 'pslist', '-d', lake, '--guest', NAMES[0], '--once'],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
          // Each file's second half waits 4 s: the kill lands while a file is half written.
          env: { ...process.env, VMI_COLLECT_SLOW_WRITE_MS: '4000' },
        },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      let half: string | undefined;
      const deadline = Date.now() + 120_000;
      while (!half && Date.now() < deadline && child.exitCode === null) {
        await new Promise((r) => setTimeout(r, 20));
        const tmp = (await tree(lake)).find((f) => f.endsWith('.tmp'));
        if (tmp && (await stat(join(lake, tmp))).size > 0) half = tmp;
      }
      expect(half, `no half-written file seen: ${stderr}`).toBeDefined();
      child.kill('SIGKILL');
      await exited;
      expect(child.signalCode).toBe('SIGKILL');
      const after = await tree(lake);
      // The half file is still there, under its hidden temporary name...
      expect(after).toContain(half);
      expect(half!.split('/').pop()).toMatch(/^\..*\.parquet\.tmp$/);
      expect(after.filter((f) => f.endsWith('.parquet')).length).toBe(1);
      // ...and DuckDB's reader over the lake sees the whole files only (a half Parquet file
      // in its glob would fail the read: no footer).
      expect(await count()).toBe(rowsBefore);
      const r = await runVmi([
        'query',
        '--lake',
        lake,
        '-r',
        'json',
        'SELECT count(*)::INTEGER AS N FROM pslist',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(jsonRows(r.stdout)).toEqual([{ N: rowsBefore }]);
    } finally {
      db.closeSync();
      instance.closeSync();
    }
  });
});
