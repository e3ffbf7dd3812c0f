/**
 * psxview and sockxview on a clean lab guest: no row flagged, every view's counts printed,
 * and the processes and sockets they report checked against the guest's own shell
 * (`ls /proc`, /proc/net/*, /proc/PID/fd) before and after the run, modulo races.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { psxview, PSXVIEW_VIEWS } from '../../src/plugins/psxview.js';
import { sockxview } from '../../src/plugins/sockxview.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';
import { records } from '../helpers/records.js';
import { guestSh } from './helpers/guest-shell.js';

const NAME = 't-xview';

const pidsOf = (out: string) =>
  new Set(
    out
      .split(/\s+/)
      .filter((s) => /^\d+$/.test(s))
      .map(Number),
  );
/** Inodes (≠ 0) of the sockets in /proc/net tables as the guest's shell prints them. */
const tableInodes = (out: string) => {
  const set = new Set<bigint>();
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    // inet: inode is the 10th field; unix: the 7th; headers have no number there.
    const ino = /^\s*\d+:/.test(line) ? f[9] : /^[0-9a-f]{16}:/.test(line.trim()) ? f[6] : undefined;
    if (ino && /^\d+$/.test(ino) && ino !== '0') set.add(BigInt(ino));
  }
  return set;
};

function viewCounts(rows: Record<string, RowValue>[], views: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {
    rows: rows.length,
    HIDDEN: rows.filter((r) => r.HIDDEN === true).length,
  };
  for (const v of views) out[v] = rows.filter((r) => r[v] === true).length;
  return out;
}

describe('cross-view plugins on a clean lab guest', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const tables: Record<string, ResultTable> = {};
  const truth = {
    before: new Set<number>(),
    after: new Set<number>(),
    sockets: new Set<bigint>(),
    fdSockets: new Set<bigint>(),
  };

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    truth.before = pidsOf(await guestSh(guest, 'ls /proc'));
    truth.sockets = tableInodes(
      await guestSh(guest, 'cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/unix'),
    );
    const fds = await guestSh(guest, 'ls -l /proc/[0-9]*/fd/ 2>/dev/null; true');
    for (const m of fds.matchAll(/socket:\[(\d+)\]/g)) truth.fdSockets.add(BigInt(m[1]));
    run = await runPluginsOnGuest(guest, [
      { plugin: psxview, options: {} },
      { plugin: sockxview, options: {} },
    ]);
    truth.after = pidsOf(await guestSh(guest, 'ls /proc'));
    for (const t of run.tables) tables[t.plugin] = t;
    console.log('plugin ms on the lab guest:', run.pluginMs, 'batches:', run.session.batches);
  }, 300_000);

  afterAll(async () => {
    await labDown(NAME);
  });

  it('reports no problems', () => {
    expect(run.tables.map((t) => t.plugin)).toEqual(['psxview', 'sockxview']);
    for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
  });

  it('psxview flags no process, and reports the PIDs `ls /proc` shows', () => {
    const rows = records(tables.psxview);
    console.log('psxview view counts:', viewCounts(rows, PSXVIEW_VIEWS));
    expect(rows.filter((r) => r.HIDDEN === true)).toEqual([]);
    const reported = new Set(rows.map((r) => r.PID as number));
    // Processes there before and after the run were there during it.
    const stable = [...truth.before].filter((p) => truth.after.has(p));
    expect(stable.filter((p) => !reported.has(p))).toEqual([]);
    // Anything else is what ran meanwhile: the console's own commands and vmi's shadow.
    const extra = [...reported].filter((p) => !truth.before.has(p) && !truth.after.has(p));
    console.log(
      'psxview PIDs not in either `ls /proc`:',
      rows.filter((r) => extra.includes(r.PID as number)).map((r) => `${r.PID} ${String(r.COMM)}`),
    );
    expect(extra.length).toBeLessThanOrEqual(3);
    // Every process is seen by the listing, the probe and both syscalls.
    for (const r of rows)
      expect([r.proc_listing, r.proc_probe, r.getsid, r.getpgid], String(r.PID)).toEqual([
        true,
        true,
        true,
        true,
      ]);
    expect(stable.length).toBeGreaterThan(5);
  });

  it('sockxview flags no socket, and reports the sockets of /proc/net and the fd tables', () => {
    const rows = records(tables.sockxview);
    console.log('sockxview view counts:', viewCounts(rows, ['fd_table', 'proc_net', 'sock_diag']));
    console.log('sockxview sock_diag cells:', [...new Set(rows.map((r) => String(r.sock_diag)))]);
    expect(rows.filter((r) => r.HIDDEN === true)).toEqual([]);
    const reported = new Set(rows.map((r) => r.Inode as bigint));
    // Sockets held in a descriptor and listed in a table: the lab workload's (they live all along).
    const lasting = [...truth.sockets].filter((i) => truth.fdSockets.has(i));
    expect(lasting.length).toBeGreaterThan(2);
    expect(lasting.filter((i) => !reported.has(i))).toEqual([]);
    for (const r of rows.filter((x) => lasting.includes(x.Inode as bigint)))
      expect([r.fd_table, r.proc_net], String(r.Inode)).toEqual([true, true]);
  });
});
