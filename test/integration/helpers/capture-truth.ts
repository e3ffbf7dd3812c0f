/**
 * Ground truth around a capture, from the guest's console (never from vmi): processes
 * (/proc/PID/stat), command lines (/proc/PID/cmdline), socket descriptors
 * (readlink /proc/PID/fd/N) and init's /proc/1/mountinfo; and the comparison of a
 * replay's pslist, psaux, sockstat and mountinfo tables with it.
 */
import { expect } from 'vitest';
import type { LabGuest } from '../../../src/lab/lab.js';
import type { ResultTable } from '../../../src/output/table.js';
import { guestProcs, guestSh, kworker, unseenRows, type GuestProc } from './guest-shell.js';

type Row = Record<string, unknown>;
export const tableRecords = (t: ResultTable): Row[] =>
  t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));

/** What the guest's console says at one instant. */
export interface ConsoleTruth {
  procs: Map<number, GuestProc>;
  /** pid → argv joined by spaces ('' for kernel threads). */
  cmdlines: Map<number, string>;
  /** `pid fd inode` of every socket descriptor. */
  sockets: Set<string>;
  /** init's mountinfo lines: `id parent major:minor root mountpoint ... - fstype source ...`. */
  mounts: string[];
}

export async function consoleTruth(guest: LabGuest): Promise<ConsoleTruth> {
  const procs = await guestProcs(guest);
  const cmd = await guestSh(
    guest,
    `for d in /proc/[0-9]*; do a=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; echo "\${d#/proc/}|$a"; done`,
  );
  const cmdlines = new Map<number, string>();
  for (const l of cmd.split('\n')) {
    const m = /^(\d+)\|(.*)$/.exec(l);
    if (m) cmdlines.set(Number(m[1]), m[2].trimEnd());
  }
  const socks = await guestSh(
    guest,
    `for f in /proc/[0-9]*/fd/*; do l=$(readlink $f 2>/dev/null) || continue; case $l in socket:*) echo "$f $l";; esac; done`,
  );
  const sockets = new Set<string>();
  for (const l of socks.split('\n')) {
    const m = /^\/proc\/(\d+)\/fd\/(\d+) socket:\[(\d+)\]$/.exec(l.trim());
    if (m) sockets.add(`${m[1]} ${m[2]} ${m[3]}`);
  }
  const mounts = (await guestSh(guest, 'cat /proc/1/mountinfo'))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return { procs, cmdlines, sockets, mounts };
}

export interface ReplayMatchOptions {
  /** The replay's shadow process (left out of every table). */
  shadowPid?: number;
  /** Rows the guest may not have shown (a process born and gone between the two reads). */
  transient?: (row: Row, before: ConsoleTruth) => boolean;
  /** Least numbers of compared processes, command lines and sockets. */
  minProcs: number;
  minArgs: number;
  minSockets: number;
}

/**
 * pslist, psaux, sockstat and mountinfo tables of a replay (in that order) against the
 * console just before (`before`) and just after (`after`) the capture.
 */
export function expectReplayMatches(
  tables: ResultTable[],
  before: ConsoleTruth,
  after: ConsoleTruth,
  o: ReplayMatchOptions,
): void {
  const [ps, aux, socks, mounts] = tables.map(tableRecords);
  const lasting = [...before.procs.values()]
    .filter((p) => kworker(after.procs.get(p.pid)?.comm ?? '') === kworker(p.comm))
    .map((p) => p.pid);
  expect(lasting.length).toBeGreaterThan(o.minProcs);
  const mine = (r: Row): boolean => r.PID !== o.shadowPid && r.COMM !== 'vmi-shadow';
  // pslist: every lasting process with the guest's PPID and COMM; nothing the guest never showed.
  const byPid = new Map(ps.filter(mine).map((r) => [r.PID as number, r]));
  for (const pid of lasting) {
    const p = before.procs.get(pid)!;
    expect(byPid.get(pid), `pid ${pid} (${p.comm}) missing from the replayed pslist`).toBeDefined();
    expect(byPid.get(pid)!.PPID, `PPID of ${pid}`).toBe(p.ppid);
    expect(kworker(byPid.get(pid)!.COMM as string), `COMM of ${pid}`).toBe(kworker(p.comm));
  }
  expect(
    unseenRows(
      [...byPid.values()].filter((r) => !o.transient?.(r, before)),
      before.procs,
      after.procs,
    ).map((r) => `${String(r.PID)} ${String(r.COMM)}`),
  ).toEqual([]);
  // psaux: the guest's own command line of every lasting user process.
  const args = new Map(aux.map((r) => [r.PID as number, r.ARGS]));
  let compared = 0;
  for (const pid of lasting) {
    const want = before.cmdlines.get(pid);
    if (!want || want !== after.cmdlines.get(pid)) continue;
    expect(args.get(pid), `ARGS of ${pid}`).toBe(want);
    compared++;
  }
  expect(compared).toBeGreaterThan(o.minArgs);
  // sockstat: the socket descriptors of lasting processes, both ways.
  const rows = new Set(
    socks
      .filter((r) => r.PID !== o.shadowPid && r['Process Name'] !== 'vmi-shadow')
      .map((r) => `${String(r.PID)} ${String(r.FD)} ${String(r.Inode)}`),
  );
  const stable = [...before.sockets].filter((s) => after.sockets.has(s));
  expect(stable.length).toBeGreaterThan(o.minSockets);
  for (const s of stable) expect(rows.has(s), `socket ${s} missing from the replayed sockstat`).toBe(true);
  for (const s of rows)
    expect(before.sockets.has(s) || after.sockets.has(s), `socket ${s} the guest never showed`).toBe(true);
  // mountinfo of init's namespace: id, parent, device, mount point, fstype and source, as /proc/1/mountinfo.
  const rootId = Number(before.mounts.find((l) => l.split(' ')[4] === '/')?.split(' ')[0]);
  const nsOfInit = mounts.find((r) => r.MOUNT_POINT === '/' && r['MOUNT ID'] === rootId)?.MNT_NS_ID;
  expect(nsOfInit, 'init mount namespace in the replayed mountinfo').toBeDefined();
  const got = mounts
    .filter((r) => r.MNT_NS_ID === nsOfInit)
    .map((r) =>
      [r['MOUNT ID'], r.PARENT_ID, r['MAJOR:MINOR'], r.MOUNT_POINT, r.FSTYPE, r.MOUNT_SRC].join(' '),
    )
    .sort();
  const want = before.mounts
    .map((l) => {
      const [pre, post] = l.split(' - ');
      const f = pre.split(' ');
      const g = post.split(' ');
      return [f[0], f[1], f[2], f[4], g[0], g[1]].join(' ');
    })
    .sort();
  expect(got).toEqual(want);
}
