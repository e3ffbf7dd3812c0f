/**
 * Attach reuse of an API Guest (src/shadow/session.ts AttachMemo) on a booted lab guest,
 * against the guest's console: a Guest's second call re-checks its resident shadow only
 * quickly (contextCheck 'quick'); another vmi process attaching in between is seen through
 * the lock's generation and the next call re-verifies whole ('full'); a shadow the guest
 * kills between two calls (by the pid the console shows) is replaced and the next pslist
 * still matches the console; a shadow the guest reniced between two calls is found by the
 * quick re-check and replaced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openGuest, type Guest, type GuestRun } from '../../src/api/index.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { records } from '../helpers/records.js';
import { PLAIN_TERMINAL, requireBuilt, runVmi } from './helpers/cli.js';
import { expectRowsMatchConsole, guestProcs, guestSh, type GuestProc } from './helpers/guest-shell.js';

const NAME = 'keepattach-api';

/** The console's processes without vmi's shadow (tables leave its rows out). */
async function consoleProcs(guest: LabGuest): Promise<Map<number, GuestProc>> {
  const all = await guestProcs(guest);
  for (const [pid, p] of all) if (p.comm === 'vmi-shadow') all.delete(pid);
  return all;
}

describe('API Guest: attach reuse is not fooled', () => {
  let guest: LabGuest;
  let g: Guest;

  beforeAll(async () => {
    requireBuilt('dist/commands/plugins/run.js');
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    g = await openGuest(NAME, { server: false, holdAwake: false });
  }, 300_000);

  afterAll(async () => {
    await g?.close();
    await labDown(NAME);
  }, 120_000);

  /** pslist through the Guest, checked against the console before and after. */
  async function pslist(what: string): Promise<GuestRun> {
    const before = await consoleProcs(guest);
    const run = await g.runAll([{ plugin: 'pslist' }]);
    const after = await consoleProcs(guest);
    expect(run.failures).toEqual([]);
    expectRowsMatchConsole(records(run.results[0]!.table), before, after, what);
    return run;
  }

  it('a second call re-checks quickly; another vmi in between makes the next one verify whole', async () => {
    const first = await pslist('first call');
    expect(first.timing.contextCheck).toBe('fresh');
    const second = await pslist('second call');
    expect(second.timing.contextCheck).toBe('quick');
    expect(second.timing.shadowPid).toBe(first.timing.shadowPid);
    // The quick re-check rode on the plugin's first batch: no guest entry, no time of its own.
    expect(second.timing.contextMs).toBe(0);

    // Another vmi process takes the guest (and reuses the same resident shadow).
    const other = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME], {
      env: { ...PLAIN_TERMINAL, VMI_SERVER: 'off' },
    });
    expect(other.code, other.stderr).toBe(0);
    const third = await pslist('after another vmi');
    expect(third.timing.contextCheck).toBe('full');
    expect(third.timing.contextMs).toBeGreaterThan(0);
    const fourth = await pslist('quiet again');
    expect(fourth.timing.contextCheck).toBe('quick');
    console.log(
      `pslist: fresh ${first.timing.totalMs.toFixed(1)} ms (${first.timing.batches} batches), quick ${second.timing.totalMs.toFixed(1)} ms (${second.timing.batches}), full ${third.timing.totalMs.toFixed(1)} ms (${third.timing.batches}, context ${third.timing.contextMs.toFixed(1)} ms)`,
    );
  }, 240_000);

  it('a shadow the guest killed between two calls is replaced; pslist still matches the console', async () => {
    const before = await pslist('before the kill');
    const pid = before.timing.shadowPid;
    const shown = await guestProcs(guest);
    expect(shown.get(pid)?.comm).toBe('vmi-shadow');
    await guestSh(guest, `kill -9 ${pid}`);
    const after = await pslist('after the kill');
    expect(after.timing.shadowPid).not.toBe(pid);
    const now = await guestProcs(guest);
    expect(now.get(pid)?.comm).not.toBe('vmi-shadow');
    expect(now.get(after.timing.shadowPid)?.comm).toBe('vmi-shadow');
  }, 240_000);

  it('a shadow the guest reniced between two calls is found by the quick re-check and replaced', async () => {
    const warm = await pslist('warm');
    const again = await pslist('quiet');
    expect(again.timing.contextCheck).toBe('quick');
    const pid = again.timing.shadowPid;
    expect(warm.timing.shadowPid).toBe(pid);
    await guestSh(guest, `renice -n 7 -p ${pid} >/dev/null`);
    const stat = await guestSh(guest, `cat /proc/${pid}/stat`);
    // nice is field 19 of /proc/PID/stat (fs/proc/array.c): the guest did change it.
    expect(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]).toBe('7');
    const after = await pslist('after the renice');
    expect(after.timing.shadowPid).not.toBe(pid);
    const now = await guestProcs(guest);
    expect(now.get(pid)?.comm).not.toBe('vmi-shadow');
  }, 240_000);
});
