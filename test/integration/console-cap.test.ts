/**
 * A guest cannot fill the host's disk through its serial console: the console log in the
 * run dir is capped (rotated once to console.log.1). The guest writes CONSOLE_MIB MiB to
 * its console (ttyS0, the log's source) with a 1 MiB cap; afterwards both files together
 * stay within 2 × the cap, the newest output is in the log, QEMU is alive and the
 * guest's shell answers.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { processAlive } from '../../src/util/process-alive.js';
import { readFile } from 'node:fs/promises';

const NAME = 't-console';
const CAP = 1 << 20;
const CONSOLE_MIB = Number(process.env.VMI_TEST_CONSOLE_MIB ?? 16);

const size = (p: string) =>
  stat(p).then(
    (s) => s.size,
    () => 0,
  );

describe('console log cap', () => {
  let guest: LabGuest;
  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME, consoleLogCap: CAP });
  });
  afterAll(async () => {
    await labDown(NAME);
  });

  it(`${CONSOLE_MIB} MiB written to the console leave at most 2 × ${CAP >> 20} MiB on the host`, async () => {
    const con = await GuestConsole.connect(guest.serialSocket);
    const t0 = Date.now();
    try {
      // Printable bytes to the console device itself, in the background, then a marker;
      // this client disconnects at once (it would otherwise receive all of it too).
      const r = await con.run(
        `(sleep 1; head -c $((${CONSOLE_MIB} * 1048576)) /dev/zero | tr '\\0' 'x' > /dev/ttyS0; ` +
          `echo; echo console-done-$((40+2))) > /dev/ttyS0 2>&1 &`,
      );
      expect(r.status).toBe(0);
    } finally {
      con.close();
    }
    // Wait for the marker to reach the host's log.
    while (!(await readFile(guest.consoleLog, 'utf8').catch(() => '')).includes('console-done-42')) {
      if (Date.now() - t0 > 600_000) throw new Error('the guest did not finish writing to its console');
      await new Promise((r) => setTimeout(r, 500));
    }
    const ms = Date.now() - t0;
    // Let the writer drain the FIFO.
    await new Promise((r) => setTimeout(r, 1000));
    const log = await size(guest.consoleLog);
    const old = await size(`${guest.consoleLog}.1`);
    process.stderr.write(
      `console cap: guest wrote ${CONSOLE_MIB} MiB in ${(ms / 1000).toFixed(1)} s; console.log ${log} B, console.log.1 ${old} B (cap ${CAP} B)\n`,
    );
    expect(log).toBeLessThanOrEqual(CAP);
    expect(old).toBeLessThanOrEqual(CAP);
    expect(old).toBeGreaterThan(0); // it did rotate
    expect(await readFile(guest.consoleLog, 'utf8')).toContain('console-done-42');
    expect(processAlive(guest.pid)).toBe(true);
    const con2 = await GuestConsole.connect(guest.serialSocket);
    try {
      expect((await con2.run('echo alive-$((6*7))')).output.trim()).toBe('alive-42');
    } finally {
      con2.close();
    }
  }, 900_000);

  it('the log writer exits with its guest', async () => {
    const writerAlive = () =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .some((d) => {
          try {
            const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
            return cmd.includes('console-log-writer') && cmd.includes(guest.runDir);
          } catch {
            return false;
          }
        });
    expect(writerAlive()).toBe(true);
    await labDown(NAME);
    const t0 = Date.now();
    while (writerAlive() && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 200));
    expect(writerAlive()).toBe(false);
  });
});
