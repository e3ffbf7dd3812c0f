/**
 * Several guests at once: `vmi plugins run pslist --guest a --guest b --guest c` attaches
 * to all three concurrently, every row carries its GUEST, and one guest that goes away
 * costs only its own rows (exit code 3).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runVmi } from './helpers/cli.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { pslist } from '../../src/plugins/pslist.js';
import { runPluginsOnGuests } from '../../src/runner/multi-guest.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import { resolveLiveTargets } from '../../src/targets/lab.js';

const NAMES = ['t-multi-a', 't-multi-b', 't-multi-c'];

const vmi = (args: string[]) => runVmi(args);

describe('several guests at once', () => {
  const guests: LabGuest[] = [];

  beforeAll(async () => {
    for (const name of NAMES) await labDown(name);
    // One at a time: three TCG boots at once on two cores only slow each other down.
    for (const name of NAMES) guests.push(await labUp({ name, memMiB: 192 }));
  });

  afterAll(async () => {
    for (const name of NAMES) await labDown(name);
  });

  it('pslist returns every guest rows, tagged, faster than one after another', async () => {
    const requests = [{ plugin: pslist, options: {} }];
    // Warm-up: syscall entries are cached per guest after the first attach.
    for (const g of guests) await runPluginsOnGuest(g, requests);

    // Best of three rounds each, interleaved: a noisy 2-core host only ever adds time.
    const targets = await resolveLiveTargets({ guests: NAMES });
    let sequentialMs = Infinity;
    let concurrentMs = Infinity;
    let multi!: Awaited<ReturnType<typeof runPluginsOnGuests>>;
    for (let round = 0; round < 3; round++) {
      const t0 = performance.now();
      for (const g of guests) await runPluginsOnGuest(g, requests);
      sequentialMs = Math.min(sequentialMs, performance.now() - t0);
      const t1 = performance.now();
      multi = await runPluginsOnGuests(targets, requests);
      concurrentMs = Math.min(concurrentMs, performance.now() - t1);
    }
    console.log(
      `pslist on 3 guests: concurrent ${concurrentMs.toFixed(0)} ms, sequential ${sequentialMs.toFixed(0)} ms; ` +
        multi.outcomes.map((o) => `${o.guest} ${o.ms.toFixed(0)} ms`).join(', '),
    );

    expect(multi.partial).toBe(false);
    expect(multi.failed).toBe(false);
    const [table] = multi.tables;
    expect(table.columns[0]).toMatchObject({ name: 'GUEST', type: 'utf8' });
    expect(table.columns.slice(1).map((c) => c.name)).toEqual(pslist.columns.map((c) => c.name));
    const pidCol = table.columns.findIndex((c) => c.name === 'PID');
    for (const name of NAMES) {
      const mine = table.rows.filter((r) => r[0] === name);
      expect(mine.length, name).toBeGreaterThan(10);
      expect(mine.some((r) => r[pidCol] === 1)).toBe(true);
    }
    expect(new Set(table.rows.map((r) => r[0]))).toEqual(new Set(NAMES));
    // Two cores, three guests: not 3× faster, but less than the single runs added up.
    expect(concurrentMs).toBeLessThan(sequentialMs);
  });

  it('the CLI prints a GUEST column for every guest', async () => {
    const r = await vmi(['plugins', 'run', 'pslist', ...NAMES.flatMap((n) => ['--guest', n]), '-r', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as { GUEST: string; PID: number }[];
    expect(new Set(rows.map((x) => x.GUEST))).toEqual(new Set(NAMES));
    expect(Object.keys(rows[0])[0]).toBe('GUEST');
  });

  it('a guest that is gone costs its own rows only: partial result, exit code 3', async () => {
    await labDown(NAMES[2]);
    const r = await vmi(['plugins', 'run', 'pslist', ...NAMES.flatMap((n) => ['--guest', n]), '-r', 'csv']);
    expect(r.code).toBe(3);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('vmi: error: '));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^vmi: error: guest ${NAMES[2]}: `));
    const lines = r.stdout.trim().split('\n');
    expect(lines[0].split(',')[0]).toBe('GUEST');
    const byGuest = new Set(lines.slice(1).map((l) => l.split(',')[0]));
    expect(byGuest).toEqual(new Set(NAMES.slice(0, 2)));
  });
});
