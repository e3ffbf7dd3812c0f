/**
 * psxview against the fake guest: a clean guest flags nothing; a PID one view leaves out
 * (the fake's `hide`, a lying kernel) is flagged with the evidence; processes that start
 * or exit between views are not; the sweep of a 32768-PID space stays a few dozen batches.
 */
import { describe, expect, it } from 'vitest';
import { isAbsent } from '../../src/output/columns.js';
import { validateTable, type ResultTable } from '../../src/output/table.js';
import { psxview } from '../../src/plugins/psxview.js';
import { runPlugin, type RowValue } from '../../src/sdk/index.js';
import { addFakeProcess, fakeProcGuest, fakeStat, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

/** The live children of `parent`, by the ppid in each /proc/N/stat (what task->children holds). */
function childrenOf(g: FakeGuest, parent: number): string {
  const kids: number[] = [];
  for (const [k, n] of g.nodes) {
    const m = /^\/proc\/(\d+)\/stat$/.exec(k);
    if (!m || n.kind !== 'file' || typeof n.content !== 'string') continue;
    if (Number(n.content.split(' ')[3]) === parent) kids.push(Number(m[1]));
  }
  return kids.map((k) => `${k} `).join('');
}

/**
 * pids 1..n: 1 is init (PPID 0), the rest its children; process 3 has a second thread
 * 9, which the real kernel answers at /proc/9 and getsid(9) though /proc does not list it.
 */
function cleanGuest(n = 5, pidMax = 64): FakeGuest {
  const g = fakeProcGuest(n);
  g.addFile('/proc/sys/kernel/pid_max', `${pidMax}\n`);
  g.addFile('/proc/sys/kernel/ns_last_pid', `${n + 4}\n`);
  for (let pid = 1; pid <= n; pid++) {
    g.addFile(`/proc/${pid}/stat`, fakeStat(pid, `proc${pid}`, { ppid: pid === 1 ? 0 : 1 }));
    g.addFile(`/proc/${pid}/task/${pid}/children`, () => childrenOf(g, pid));
  }
  addFakeProcess(g, 3, 'proc3', [3, 9]);
  g.addFile('/proc/3/stat', fakeStat(3, 'proc3', { ppid: 1, threads: 2 }));
  g.addFile('/proc/3/task/3/children', () => childrenOf(g, 3));
  g.addFile('/proc/3/task/9/children', '');
  g.addFile(
    '/proc/9/status',
    'Name:\tproc3\nTgid:\t3\nPid:\t9\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n',
  );
  g.hide.listing.set('/proc', new Set(['9']));
  return g;
}

async function run(g: FakeGuest, options: Record<string, unknown> = {}) {
  const r = await runPlugin(psxview, { executor: g, options });
  return { rows: records(r.table), runs: r.runs };
}

describe('psxview', () => {
  it('flags nothing on a clean guest, and a thread is not a process', async () => {
    const { rows } = await run(cleanGuest());
    expect(rows.map((r) => r.PID)).toEqual([1, 2, 3, 4, 5]);
    expect(rows.filter((r) => r.HIDDEN)).toEqual([]);
    const r2 = rows.find((r) => r.PID === 2)!;
    expect(r2).toMatchObject({
      proc_listing: true,
      proc_probe: true,
      getsid: true,
      getpgid: true,
      children: true,
      parent_of: false,
      EVIDENCE: '',
    });
    expect(rows.find((r) => r.PID === 1)!.parent_of).toBe(true);
  });

  it('flags a PID left out of the /proc listing, with the evidence', async () => {
    const g = cleanGuest();
    g.hide.listing.get('/proc')!.add('4');
    const { rows } = await run(g);
    const hidden = rows.filter((r) => r.HIDDEN);
    expect(hidden.map((r) => r.PID)).toEqual([4]);
    expect(hidden[0]).toMatchObject({ proc_listing: false, proc_probe: true, getsid: true, children: true });
    expect(hidden[0].EVIDENCE).toBe(
      'missing from proc_listing; seen by proc_probe, getsid, getpgid, children of 1',
    );
    expect(hidden[0].COMM).toBe('proc4');
  });

  it('flags a PID /proc hides from listing and lookup, by the syscalls and its parent', async () => {
    const g = cleanGuest();
    g.hide.listing.get('/proc')!.add('4');
    g.hide.lookup.add('/proc/4');
    const { rows } = await run(g);
    const hidden = rows.filter((r) => r.HIDDEN);
    expect(hidden.map((r) => r.PID)).toEqual([4]);
    expect(hidden[0]).toMatchObject({ proc_listing: false, proc_probe: false, getsid: true, getpgid: true });
    expect(hidden[0].EVIDENCE).toMatch(/^missing from proc_listing, proc_probe; seen by getsid, getpgid/);
  });

  it('flags a PID the syscalls do not find though /proc lists it', async () => {
    const g = cleanGuest();
    g.hide.tasks.add(5);
    const { rows } = await run(g);
    expect(rows.filter((r) => r.HIDDEN).map((r) => [r.PID, r.EVIDENCE])).toEqual([
      [5, 'missing from getsid, getpgid; seen by proc_listing, proc_probe, children of 1'],
    ]);
  });

  it('flags a process missing from its parent’s children list', async () => {
    const g = cleanGuest();
    g.addFile('/proc/1/task/1/children', '2 3 4 ');
    const { rows } = await run(g);
    expect(rows.filter((r) => r.HIDDEN).map((r) => [r.PID, r.children])).toEqual([[5, false]]);
  });

  it('flags a parent only its children name', async () => {
    const g = cleanGuest();
    // 6 is hidden everywhere but its child 5 still names it as PPID.
    g.addFile('/proc/5/stat', fakeStat(5, 'proc5', { ppid: 6 }));
    const { rows } = await run(g);
    const hidden = rows.filter((r) => r.HIDDEN);
    expect(hidden.map((r) => r.PID)).toEqual([6]);
    expect(hidden[0].EVIDENCE).toBe(
      'missing from proc_listing, proc_probe, getsid, getpgid; seen by PPID of 5',
    );
    expect(isAbsent(hidden[0].COMM)).toBe(true);
  });

  it('does not flag a process that starts or exits between the views', async () => {
    const g = cleanGuest();
    // After the listing (run 0) and the limits (run 1): 6 starts, 5 exits.
    g.beforeRun = (i) => {
      if (i !== 2) return;
      addFakeProcess(g, 6, 'late');
      g.addFile('/proc/6/stat', fakeStat(6, 'late', { ppid: 1 }));
      g.addFile('/proc/6/task/6/children', '');
      g.remove('/proc/5');
    };
    const { rows } = await run(g);
    expect(rows.filter((r) => r.HIDDEN)).toEqual([]);
    expect(rows.map((r) => r.PID)).toEqual([1, 2, 3, 4, 6]);
  });

  it('sweeps a 32768-PID space in a few dozen batches', async () => {
    const g = cleanGuest(5, 32768);
    const { rows, runs } = await run(g);
    expect(rows.filter((r) => r.HIDDEN)).toEqual([]);
    // listing 1 + limits 1 + sweep 32 (2 calls a PID, 2048 calls a batch) + tasks 1 + files 1 + getpgid 1.
    expect(runs).toBe(37);
    const swept = g.runs.flat().filter((c) => c.nr === 124).length; // getsid
    expect(swept).toBe(32768);
  });

  it('sweeps 1..--max-pid when given, and refuses a bad one', async () => {
    const g = cleanGuest(5, 32768);
    await run(g, { 'max-pid': 100 });
    expect(g.runs.flat().filter((c) => c.nr === 124).length).toBe(100);
    await expect(run(cleanGuest(), { 'max-pid': 0 })).rejects.toThrow(/max-pid/);
  });

  it('sweeps up to the last PID handed out when pid_max is huge', async () => {
    const g = cleanGuest(5, 4194304);
    const r = await runPlugin(psxview, { executor: g });
    // ns_last_pid is 9.
    expect(g.runs.flat().filter((c) => c.nr === 124).length).toBe(9);
    expect(r.table.rows.length).toBe(5);
  });
});
