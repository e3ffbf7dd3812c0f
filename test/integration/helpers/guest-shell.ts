import { expect } from 'vitest';
import { GuestConsole } from '../../../src/lab/console.js';
import type { LabGuest } from '../../../src/lab/lab.js';

/**
 * Runs one shell command in the guest over its serial console (ground truth from inside
 * the guest) and returns its output; a non-zero status is an error. The console takes
 * one client at a time, so it is closed again at once.
 */
export async function guestSh(guest: LabGuest, command: string): Promise<string> {
  const r = await guestRun(guest, command, 60_000);
  if (r.status !== 0) throw new Error(`guest command failed (${r.status}): ${command}\n${r.output}`);
  return r.output;
}

/** Like guestSh, but a non-zero status is returned, not thrown. */
export async function guestRun(
  guest: LabGuest,
  command: string,
  timeoutMs = 30_000,
): Promise<{ output: string; status: number }> {
  const con = await GuestConsole.connect(guest.serialSocket);
  try {
    return await con.run(command, timeoutMs);
  } finally {
    con.close();
  }
}

export interface GuestProc {
  pid: number;
  ppid: number;
  comm: string;
  state: string;
}

/** The guest's own process list, straight from /proc by its shell (no vmi involved). */
export async function guestProcs(guest: LabGuest): Promise<Map<number, GuestProc>> {
  // Every field of /proc/PID/stat after the last ')' is space separated: state is [0], ppid [1].
  // A process that exits between the two reads is left out, not listed with an empty comm
  // (a CI run once compared such a "pid 139 ()" against vmi's table).
  const out = await guestSh(
    guest,
    `for d in /proc/[0-9]*; do s=$(cat $d/stat 2>/dev/null) || continue; c=$(cat $d/comm 2>/dev/null) || continue; echo "\${d#/proc/}|$c|\${s##*) }"; done`,
  );
  const procs = new Map<number, GuestProc>();
  for (const line of out.split('\n')) {
    const m = /^(\d+)\|(.*)\|(\S) (-?\d+) /.exec(line);
    if (m) procs.set(Number(m[1]), { pid: Number(m[1]), comm: m[2], state: m[3], ppid: Number(m[4]) });
  }
  return procs;
}

/**
 * Processes matching `pred` that are still there after a while. busybox init reaps
 * orphans once a second, so an exited shadow may be a zombie (of init's) for that long.
 */
export async function lasting(guest: LabGuest, pred: (p: GuestProc) => boolean): Promise<GuestProc[]> {
  let found: GuestProc[] = [];
  for (let i = 0; i < 6; i++) {
    found = [...(await guestProcs(guest)).values()].filter(pred);
    if (found.length === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return found;
}

/**
 * Rows of a process table (PID, PPID, COMM) for processes the guest showed neither in
 * `before` nor in `after` (two guestProcs around the run). One churn is expected: the
 * lab's ticker starts a `sleep 10` every 10 s, so a slow run (a loaded host) can see a
 * sleep that was born and gone between the two reads; such a row is not returned when
 * its parent is a process the guest showed both times with a `sleep` child then too.
 */
export function unseenRows<R extends Record<string, unknown>>(
  rows: readonly R[],
  before: Map<number, GuestProc>,
  after: Map<number, GuestProc>,
): R[] {
  const sleepParents = new Set(
    [...before.values(), ...after.values()].filter((p) => p.comm === 'sleep').map((p) => p.ppid),
  );
  return rows.filter((r) => {
    const pid = r.PID as number;
    if (before.has(pid) || after.has(pid)) return false;
    const ppid = r.PPID as number;
    const tickerSleep = r.COMM === 'sleep' && sleepParents.has(ppid) && before.has(ppid) && after.has(ppid);
    return !tickerSleep;
  });
}

/**
 * A kworker's name without its work item (`kworker/0:1-events` → `kworker/0:1`; `+` while
 * the item runs, `kworker/u2:1+events_unbound`, kernel/workqueue.c wq_worker_comm): that
 * part changes by the moment.
 */
export const kworker = (comm: string): string => comm.replace(/^(kworker\/[^-+]+)[-+].*$/, '$1');

/**
 * A process table against the console's view before and after the run: every process the
 * guest showed both times (same comm) is a row with its PPID and COMM, and no row is a
 * process the guest never showed (unseenRows). Returns how many processes were compared.
 */
export function expectRowsMatchConsole(
  rows: Record<string, unknown>[],
  before: Map<number, GuestProc>,
  after: Map<number, GuestProc>,
  what: string,
): number {
  const byPid = new Map(rows.map((r) => [r.PID as number, r]));
  let compared = 0;
  for (const p of before.values()) {
    if (kworker(after.get(p.pid)?.comm ?? '') !== kworker(p.comm)) continue;
    const row = byPid.get(p.pid);
    expect(row, `${what}: pid ${p.pid} (${p.comm}) missing`).toBeDefined();
    expect(row!.PPID, `${what}: PPID of ${p.pid}`).toBe(p.ppid);
    expect(kworker(row!.COMM as string), `${what}: COMM of ${p.pid}`).toBe(kworker(p.comm));
    compared++;
  }
  expect(compared, what).toBeGreaterThan(40);
  expect(
    unseenRows(rows, before, after).map((r) => `${String(r.PID)} ${String(r.COMM)}`),
    `${what}: rows the guest never showed`,
  ).toEqual([]);
  return compared;
}
