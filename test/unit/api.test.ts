/**
 * The programmatic API (src/api/guest.ts) with a fake session (no QEMU): plugins by name
 * with options, Arrow tables and metadata, the resident shadow asked for on every attach
 * and removed at close (unless keepShadow), calls one at a time, errors typed.
 */
import { describe, expect, it } from 'vitest';
import {
  Guest,
  GuestClosedError,
  openGuest,
  PluginRunError,
  UnknownPluginError,
  type GuestInternals,
} from '../../src/api/guest.js';
import * as pkg from '../../src/index.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import type { AttachedSession } from '../../src/runner/run-plugins.js';
import { definePlugin } from '../../src/sdk/index.js';
import type { SessionOptions, SessionStats } from '../../src/shadow/session.js';
import { addFakeProcess, fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

const GUEST: InspectedGuest = {
  name: 'fake',
  qmpSocket: '/nonexistent/qmp.sock',
  ramSize: 0,
  runDir: '/nonexistent',
};

interface Harness {
  guest: Guest;
  attaches: SessionOptions[];
  stops: number;
  targetCloses: number;
  /** Attaches in flight at once, at most. */
  maxConcurrent: number;
}

function harness(
  g: FakeGuest,
  opts: { keepShadow?: boolean; captureId?: string; foundShadow?: boolean } = {},
): Harness {
  const h = { attaches: [] as SessionOptions[], stops: 0, targetCloses: 0, maxConcurrent: 0 } as Harness;
  let inFlight = 0;
  const internals: GuestInternals = {
    attach: async (_guest, o) => {
      h.attaches.push(o);
      inFlight++;
      h.maxConcurrent = Math.max(h.maxConcurrent, inFlight);
      const stats = {
        attachMs: 1,
        batches: 0,
        calls: 0,
        runMs: 0,
        transport: 'doorbell',
        shadowPid: 999,
        victimPid: 0,
        recovered: false,
        // The second attach finds the shadow the first one left.
        reused: (opts.foundShadow ?? false) || h.attaches.length > 1,
      } as SessionStats;
      const session: AttachedSession = {
        stats,
        run: async (calls) => {
          await new Promise((r) => setTimeout(r, 2));
          return g.run(calls);
        },
        async detach() {
          inFlight--;
        },
      };
      return session;
    },
    stopShadow: async () => {
      h.stops++;
    },
  };
  const target = {
    guest: { ...GUEST, ...(opts.captureId ? { captureId: opts.captureId } : {}) },
    close: async () => {
      h.targetCloses++;
    },
  };
  h.guest = new Guest(target, { keepShadow: opts.keepShadow ?? false }, internals);
  return h;
}

function threeProcesses(): FakeGuest {
  const g = fakeProcGuest(3);
  addFakeProcess(g, 1, 'init');
  addFakeProcess(g, 2, 'sh');
  addFakeProcess(g, 3, 'sleep');
  return g;
}

describe('openGuest API', () => {
  it('is exported from the package entry with the SDK', () => {
    expect(typeof pkg.openGuest).toBe('function');
    expect(typeof pkg.definePlugin).toBe('function');
    expect(pkg.PluginRunError).toBe(PluginRunError);
  });

  it('runs a plugin by name with options and returns Arrow plus metadata', async () => {
    const h = harness(threeProcesses());
    const r = await h.guest.run('pslist', { pid: [2, 3] });
    expect(r.plugin).toBe('pslist');
    expect(r.arrow.numRows).toBe(2);
    expect(r.arrow.getChild('PID')?.toArray()).toEqual(Int32Array.from([2, 3]));
    expect(r.arrow.schema.metadata.get('vmi.guest')).toBe('fake');
    expect(r.table.rows.map((row) => row[0])).toEqual([2, 3]);
    expect(r.metadata).toMatchObject({ guest: 'fake', source: 'live', 'collection.transport': 'doorbell' });
    expect(r.errors).toEqual([]);
  });

  it('asks every attach for a resident shadow, reports reuse, and removes it at close', async () => {
    const h = harness(threeProcesses());
    const a = await h.guest.runAll([{ plugin: 'pslist' }]);
    const b = await h.guest.runAll([{ plugin: 'pslist' }, { plugin: 'psaux' }]);
    expect(h.attaches.map((o) => o.keepResident)).toEqual([true, true]);
    expect([a.timing.reused, b.timing.reused]).toEqual([false, true]);
    expect(b.results.map((x) => x?.plugin)).toEqual(['pslist', 'psaux']);
    expect(b.timing.pluginMs).toHaveProperty('psaux');
    await h.guest.close();
    await h.guest.close();
    expect(h.stops).toBe(1);
    expect(h.targetCloses).toBe(1);
  });

  it('leaves the shadow with keepShadow, and stops none when nothing attached', async () => {
    const kept = harness(threeProcesses(), { keepShadow: true });
    await kept.guest.run('pslist');
    await kept.guest.close();
    expect(kept.stops).toBe(0);
    // A resident shadow it found, with no live server of the guest using it: removed too.
    const found = harness(threeProcesses(), { foundShadow: true });
    await found.guest.run('pslist');
    await found.guest.close();
    expect(found.stops).toBe(1);
    const idle = harness(threeProcesses());
    await idle.guest.close();
    expect(idle.stops).toBe(0);
    expect(idle.targetCloses).toBe(1);
    // A replay clone is destroyed whole by its target's close.
    const clone = harness(threeProcesses(), { captureId: 'cap' });
    await clone.guest.run('pslist');
    await clone.guest.close();
    expect(clone.stops).toBe(0);
  });

  it('runs concurrent calls one at a time (one attach per guest)', async () => {
    const h = harness(threeProcesses());
    const all = await Promise.all([h.guest.run('pslist'), h.guest.run('psaux'), h.guest.run('pslist')]);
    expect(all.map((r) => r.plugin)).toEqual(['pslist', 'psaux', 'pslist']);
    expect(h.maxConcurrent).toBe(1);
  });

  it('types its errors: unknown plugin, failed plugin, closed guest', async () => {
    const h = harness(threeProcesses());
    await expect(h.guest.runAll([{ plugin: 'nosuch' }])).rejects.toThrow(UnknownPluginError);
    const boom = definePlugin({
      name: 'boom',
      description: 'throws',
      version: '0.0.1',
      columns: [{ name: 'X', type: 'int32' }] as const,
      async run() {
        throw new Error('guest said no');
      },
    });
    await expect(h.guest.run(boom)).rejects.toThrow(PluginRunError);
    const mixed = await h.guest.runAll([{ plugin: boom }, { plugin: 'pslist' }]);
    expect(mixed.results.map((x) => x?.plugin)).toEqual([undefined, 'pslist']);
    expect(mixed.failures).toMatchObject([{ plugin: 'boom', index: 0, message: 'guest said no' }]);
    await h.guest.close();
    await expect(h.guest.run('pslist')).rejects.toThrow(GuestClosedError);
    await expect(h.guest.run('nosuch')).rejects.toThrow(GuestClosedError);
  });

  it('checks what a plain-JavaScript caller passes: the guest, the transport, the plugin', async () => {
    for (const bad of [{}, null, '', { lab: 3 }, { capture: '' }])
      await expect(openGuest(bad as never), JSON.stringify(bad)).rejects.toThrow(
        /^openGuest: the guest must be a lab guest's name, \{ lab: NAME \}, \{ qmp: SOCKET \} or \{ capture: FILE \}/,
      );
    await expect(openGuest('x', { transport: 'bogus' as never })).rejects.toThrow(
      /^openGuest: transport must be one of auto, doorbell, trap; got bogus/,
    );
    const h = harness(threeProcesses());
    await expect(h.guest.run(null as never)).rejects.toThrow(UnknownPluginError);
    await h.guest.close();
  });
});
