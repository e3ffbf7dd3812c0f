/**
 * The console log writer dying does not take the guest with it: with the writer killed
 * (SIGKILL), QEMU's writes into the log FIFO fail instead of waiting, and the guest prints
 * 300 KB to its console (far more than the FIFO holds), then answers on it; QEMU is alive.
 * Ground truth from the host (the writer's and QEMU's processes) and the guest's console.
 * A writer whose log does not keep up is test/unit/console-log-writer.test.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { processAlive } from '../../src/util/process-alive.js';
import { guestRun } from './helpers/guest-shell.js';

const NAME = 't-conwriter';

/** Pids of the console-log-writer processes of this guest, from /proc. */
function writerPids(guest: LabGuest): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
        return cmd.includes('console-log-writer') && cmd.includes(guest.runDir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('console log writer killed', () => {
  let guest: LabGuest;
  let killed: number | undefined;
  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
  });
  afterAll(async () => {
    await labDown(NAME);
  });

  // Retried: once in a CI run (console-cap's 16 MiB flood running beside it, both cores
  // busy) the flood got no answer within 120 s; alone it takes ~2.5 s. The cause is not
  // found yet (see the closing note of 2026-11-29): a stall that repeats still fails.
  it(
    'the guest keeps printing to its console and answering; QEMU lives',
    { retry: 2, timeout: 240_000 },
    async () => {
      // A retry finds the writer already killed by the first attempt.
      const pids = killed === undefined ? writerPids(guest) : [killed];
      expect(pids).toHaveLength(1);
      killed = pids[0];
      if (processAlive(pids[0])) process.kill(pids[0], 'SIGKILL');
      const t0 = Date.now();
      while (processAlive(pids[0]) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
      expect(processAlive(pids[0])).toBe(false);
      const flood = await guestRun(
        guest,
        "head -c 300000 /dev/zero | tr '\\0' x; echo; echo flood-$((40+2))",
        40_000,
      );
      expect(flood.status).toBe(0);
      expect(flood.output).toContain('flood-42');
      expect(flood.output.length).toBeGreaterThan(64 << 10);
      expect((await guestRun(guest, 'echo alive-$((6*7))')).output.trim()).toBe('alive-42');
      expect(processAlive(guest.pid)).toBe(true);
    },
  );
});
