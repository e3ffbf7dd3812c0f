/**
 * runPluginsOnGuest with a fake session (no QEMU): several plugins in one attach, and a
 * plugin that throws costing only its own table.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeOutput } from '../../src/output/write.js';
import { builtinPlugins } from '../../src/plugins/index.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { pstree } from '../../src/plugins/pstree.js';
import { envars } from '../../src/plugins/envars.js';
import { applyShadowRows } from '../../src/runner/shadow-rows.js';
import { runPluginsOnGuest, type AttachedSession } from '../../src/runner/run-plugins.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import { definePlugin } from '../../src/sdk/index.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { addFakeProcess, fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

const GUEST: InspectedGuest = {
  name: 'fake',
  qmpSocket: '/nonexistent/qmp.sock',
  ramSize: 0,
  runDir: '/nonexistent',
  kernelRelease: '6.1.0-test',
};

const boom = definePlugin({
  name: 'boom',
  description: 'Always throws (test double)',
  version: '0.0.1',
  columns: [{ name: 'X', type: 'int32' }] as const,
  async run() {
    throw new Error('guest said no\nsecond line');
  },
});

/** A session over a FakeGuest that counts detaches. */
function fakeSession(g: FakeGuest): AttachedSession & { detaches: number } {
  // Only what runPluginsOnGuest reads; the session grows more stats than this fake needs.
  const stats = {
    attachMs: 1,
    batches: 0,
    calls: 0,
    runMs: 0,
    transport: 'trap',
    shadowPid: 999,
    victimPid: 1,
    recovered: false,
  } as SessionStats;
  return {
    stats,
    detaches: 0,
    run: (calls) => g.run(calls),
    async detach() {
      this.detaches++;
    },
  };
}

function guestWithProcesses(): FakeGuest {
  const g = fakeProcGuest(3);
  addFakeProcess(g, 1, 'init');
  addFakeProcess(g, 2, 'sh');
  addFakeProcess(g, 3, 'sleep');
  return g;
}

describe('runPluginsOnGuest', () => {
  it('runs several plugins through one attach and stamps guest metadata', async () => {
    const session = fakeSession(guestWithProcesses());
    let attaches = 0;
    const run = await runPluginsOnGuest(
      GUEST,
      [
        { plugin: pslist, options: {} },
        { plugin: psaux, options: {} },
      ],
      { attach: async () => (attaches++, session) },
    );
    expect(attaches).toBe(1);
    expect(session.detaches).toBe(1);
    expect(run.failures).toEqual([]);
    expect(run.tables.map((t) => t.plugin)).toEqual(['pslist', 'psaux']);
    expect(run.byRequest).toEqual(run.tables);
    expect(run.tables[0].rows.map((r) => r[0])).toEqual([1, 2, 3]);
    // The kernel that answered (uname in the guest), not the one the caller believed in.
    expect(run.tables[0].metadata).toMatchObject({
      guest: 'fake',
      'kernel.release': '6.1.0-fake',
      hostname: 'fakeguest',
      'collection.transport': 'trap',
      source: 'live',
    });
    expect(Object.keys(run.pluginMs)).toEqual(['pslist', 'psaux']);
  });

  it('sends the identity uname with the first plugin batch, not on its own', async () => {
    const g = guestWithProcesses();
    const session = fakeSession(g);
    const batches: number[][] = [];
    session.run = (calls) => (batches.push(calls.map((c) => c.nr)), g.run(calls));
    const run = await runPluginsOnGuest(GUEST, [{ plugin: pslist, options: {} }], {
      attach: async () => session,
    });
    // pslist: the /proc listing, then the namespace links with the files; uname (63) rides on the first.
    expect(batches).toHaveLength(2);
    expect(batches[0][0]).toBe(63);
    expect(batches.flat().filter((nr) => nr === 63)).toHaveLength(1);
    expect(run.tables[0].metadata).toMatchObject({ 'kernel.release': '6.1.0-fake' });
    expect(run.tables[0].rows.map((r) => r[0])).toEqual([1, 2, 3]);
  });

  it('tells plugins whether the transport chains: whole-batch slices on trap, half ones on doorbell', async () => {
    const largest = async (transport: 'trap' | 'doorbell'): Promise<number> => {
      const g = fakeProcGuest(1000);
      const session = fakeSession(g);
      session.stats.transport = transport;
      let max = 0;
      session.run = (calls) => ((max = Math.max(max, calls.length)), g.run(calls));
      const run = await runPluginsOnGuest(GUEST, [{ plugin: pslist, options: {} }], {
        attach: async () => session,
      });
      expect(run.tables[0].rows).toHaveLength(999); // the fake shadow (pid 999) is left out
      return max;
    };
    // 10 calls per process (stat, status, cgroup, the ns/pid link): a batch holds 204.
    expect(await largest('trap')).toBeGreaterThan(1024);
    expect(await largest('doorbell')).toBeLessThanOrEqual(1024 + 4);
  });

  it('keeps the other tables when a plugin throws, and records the failure', async () => {
    const session = fakeSession(guestWithProcesses());
    const run = await runPluginsOnGuest(
      GUEST,
      [
        { plugin: pslist, options: {} },
        { plugin: boom, options: {} },
        { plugin: psaux, options: {} },
      ],
      { attach: async () => session },
    );
    expect(session.detaches).toBe(1);
    expect(run.tables.map((t) => t.plugin)).toEqual(['pslist', 'psaux']);
    expect(run.byRequest.map((t) => t?.plugin)).toEqual(['pslist', undefined, 'psaux']);
    expect(run.failures).toHaveLength(1);
    expect(run.failures[0]).toMatchObject({
      plugin: 'boom',
      index: 1,
      message: 'guest said no\nsecond line',
    });
    expect(run.failures[0].error).toBeInstanceOf(Error);
    expect(run.tables[1].rows).toHaveLength(3);

    // -o DIR then holds the tables that exist, one file each.
    const dir = await mkdtemp(join(tmpdir(), 'vmi-runner-'));
    try {
      await writeOutput(run.tables, { format: 'parquet', output: `${dir}/` });
      expect((await readdir(dir)).sort()).toEqual(['psaux.parquet', 'pslist.parquet']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('records every plugin when the guest stops answering, and still detaches', async () => {
    const g = guestWithProcesses();
    const session = fakeSession(g);
    session.run = async () => {
      throw new Error('shadow lost');
    };
    const run = await runPluginsOnGuest(
      GUEST,
      builtinPlugins.slice(0, 3).map((plugin) => ({ plugin, options: {} })),
      { attach: async () => session },
    );
    expect(session.detaches).toBe(1);
    expect(run.tables).toEqual([]);
    expect(run.failures.map((f) => f.plugin)).toEqual(builtinPlugins.slice(0, 3).map((p) => p.name));
    expect(run.failures.every((f) => /shadow lost/.test(f.message))).toBe(true);
  });
});

describe("the shadow's own rows", () => {
  /** Processes 1..3 plus the shadow (pid 999, as fakeSession says) forked off `sh`: same argv and environment. */
  function guestWithShadow(): FakeGuest {
    const g = guestWithProcesses();
    addFakeProcess(g, 999, 'vmi-shadow');
    g.addFile('/proc/999/cmdline', 'sh\0--flag\0');
    for (const pid of [1, 2, 3, 999]) g.addFile(`/proc/${pid}/environ`, `PID_IS=${pid}\0`);
    return g;
  }
  const requests = [
    { plugin: pslist, options: {} },
    { plugin: psaux, options: {} },
    { plugin: pstree, options: {} },
    { plugin: envars, options: {} },
  ];

  it('are left out of every table by default, with the shadow PID in the metadata', async () => {
    const session = fakeSession(guestWithShadow());
    const run = await runPluginsOnGuest(GUEST, requests, { attach: async () => session });
    expect(run.failures).toEqual([]);
    for (const t of run.tables) {
      expect(
        t.rows.map((r) => r[0]),
        t.plugin,
      ).toEqual([1, 2, 3]);
      expect(t.columns.map((c) => c.name)).not.toContain('VMI_SHADOW');
      expect(t.metadata).toMatchObject({ 'shadow.pid': '999', 'shadow.rows': 'excluded (1)' });
    }
    expect(run.tables[2].depths).toHaveLength(3);
  });

  it('are kept and marked in VMI_SHADOW with includeShadow', async () => {
    const session = fakeSession(guestWithShadow());
    const run = await runPluginsOnGuest(GUEST, requests, {
      attach: async () => session,
      includeShadow: true,
    });
    for (const t of run.tables) {
      const mark = t.columns.findIndex((c) => c.name === 'VMI_SHADOW');
      expect(mark, t.plugin).toBe(t.columns.length - 1);
      expect(t.rows.map((r) => [r[0], r[mark]])).toEqual([
        [1, false],
        [2, false],
        [3, false],
        [999, true],
      ]);
      expect(t.metadata['shadow.rows']).toBe('included, marked in VMI_SHADOW (1)');
    }
  });

  it('take their subtree with them in a tree, and leave tables without PID alone', () => {
    const tree = {
      plugin: 'pstree',
      columns: [
        { name: 'PID', type: 'int32' as const },
        { name: 'COMM', type: 'utf8' as const },
      ],
      rows: [
        [1, 'init'],
        [999, 'vmi-shadow'],
        [1000, 'child'],
        [2, 'sh'],
      ],
      depths: [0, 1, 2, 1],
      errors: [],
      metadata: {},
    };
    applyShadowRows(tree, [999], false);
    expect(tree.rows).toEqual([
      [1, 'init'],
      [2, 'sh'],
    ]);
    expect(tree.depths).toEqual([0, 1]);
    const kmsg = {
      plugin: 'kmsg',
      columns: [{ name: 'MESSAGE', type: 'utf8' as const }],
      rows: [['999']],
      errors: [],
      metadata: {},
    };
    applyShadowRows(kmsg, [999], false);
    expect(kmsg.rows).toEqual([['999']]);
    expect(kmsg.metadata).toMatchObject({ 'shadow.pid': '999', 'shadow.rows': 'none (no PID column)' });
  });
});
