/**
 * vmi watch without a VM: the process snapshot plugin over a fake guest, identities
 * (PID + start time, listener sockets, modules, mounts), the loop's baseline and events,
 * the JSON Lines form, and the end of a watch (signal, closed output, a failed guest).
 */
import { describe, expect, it } from 'vitest';
import { Guest, type GuestRun, type PluginCall } from '../../src/api/guest.js';
import { OutputClosedError } from '../../src/output/sink.js';
import type { ResultTable } from '../../src/output/table.js';
import type { AttachedSession } from '../../src/runner/run-plugins.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { eventLine, isoNs, makeClock, type WatchEvent } from '../../src/watch/events.js';
import { diffSnapshots, snapshotOf, SOURCES } from '../../src/watch/sources.js';
import { watchLoop, type WatchedGuest } from '../../src/watch/watcher.js';
import { firstTimes, parseInterval, watchGuests } from '../../src/watch/watch.js';
import { addFakeProcess, fakeProcGuest, fakeStat, type FakeGuest } from './helpers/fake-guest.js';

/** An API Guest over a FakeGuest (no QEMU). */
function apiGuest(g: FakeGuest): Guest {
  let busy = false;
  const attach = async (): Promise<AttachedSession> => ({
    stats: {
      attachMs: 0,
      batches: 0,
      calls: 0,
      runMs: 0,
      transport: 'doorbell',
      shadowPid: 0,
    } as SessionStats,
    // Like the real engine, one batch at a time: a plugin that overlaps its batches fails here.
    run: async (calls) => {
      if (busy) throw new Error('concurrent batches on one session');
      busy = true;
      try {
        await new Promise((r) => setTimeout(r, 1));
        return await g.run(calls);
      } finally {
        busy = false;
      }
    },
    detach: async () => undefined,
  });
  const target = {
    guest: { name: 'g1', qmpSocket: '/x', ramSize: 0, runDir: '/x' },
    close: async () => undefined,
  };
  return new Guest(target, {}, { attach, stopShadow: async () => undefined });
}

/** A guest whose state changes before each snapshot: `steps[i]` runs before snapshot i. */
function scripted(g: FakeGuest, steps: ((g: FakeGuest) => void)[], stop: AbortController): WatchedGuest {
  const api = apiGuest(g);
  let tick = 0;
  return {
    name: 'g1',
    async runAll(calls: readonly PluginCall[]): Promise<GuestRun> {
      steps[tick]?.(g);
      tick++;
      if (tick >= steps.length) stop.abort();
      return api.runAll(calls);
    },
  };
}

function baseGuest(): FakeGuest {
  const g = fakeProcGuest(0);
  addFakeProcess(g, 1, 'init');
  addFakeProcess(g, 2, 'sh');
  g.addFile('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n');
  return g;
}

function removeProcess(g: FakeGuest, pid: number): void {
  for (const k of [...g.nodes.keys()])
    if (k === `/proc/${pid}` || k.startsWith(`/proc/${pid}/`)) g.nodes.delete(k);
}

async function collect(guest: WatchedGuest, stop: AbortController, sources = ['process'] as const) {
  const events: WatchEvent[] = [];
  const status: string[] = [];
  const stats = await watchLoop(guest, {
    intervalMs: 1,
    sources,
    signal: stop.signal,
    emit: async (e) => void events.push(e),
    status: (m) => void status.push(m),
    now: makeClock(),
  });
  return { events, status, stats };
}

describe('watch: process snapshots', () => {
  it('reads argv, user, parent and start time in one plugin', async () => {
    const g = baseGuest();
    const r = await apiGuest(g).run(SOURCES.process.call.plugin);
    const sh = r.table.rows.find((row) => row[0] === 2)!;
    const col = (n: string) => r.table.columns.findIndex((c) => c.name === n);
    expect(sh[col('ARGS')]).toBe('sh --flag');
    expect(sh[col('PPID')]).toBe(1);
    expect(sh[col('USER')]).toBe('alice');
    // fakeStat: start_time = 1000 + pid ticks, USER_HZ 100 → 10.02 s after boot.
    expect(sh[col('START_MS')]).toBe(10020n);
  });

  it('makes no events for the baseline, then reports a start and an exit', async () => {
    const stop = new AbortController();
    const guest = scripted(
      baseGuest(),
      [() => undefined, (g) => addFakeProcess(g, 7, 'sleep'), (g) => removeProcess(g, 2), () => undefined],
      stop,
    );
    const { events, status, stats } = await collect(guest, stop);
    expect(stats.ticks).toBe(4);
    expect(status.some((m) => m.includes('baseline: 2 processes'))).toBe(true);
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([
      ['process_started', 7, 'sleep --flag'],
      ['process_exited', 2, 'sh --flag'],
    ]);
    expect(events[0].row.USER).toBe('alice');
    expect(events[0].guest).toBe('g1');
  });

  it('tells a reused PID from the process it replaced (PID + start time)', async () => {
    const stop = new AbortController();
    const guest = scripted(
      baseGuest(),
      [
        () => undefined,
        // PID 2 exits and a new process gets PID 2 within one interval: a later start time.
        (g) => {
          g.addFile('/proc/2/stat', fakeStat(2, 'nc', { start: 5000 }));
          g.addFile('/proc/2/cmdline', 'nc\0-l\0');
        },
      ],
      stop,
    );
    const { events } = await collect(guest, stop);
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([
      ['process_exited', 2, 'sh --flag'],
      ['process_started', 2, 'nc -l'],
    ]);
  });

  it('reports nothing as gone when a snapshot fails, and keeps going', async () => {
    const stop = new AbortController();
    const api = apiGuest(baseGuest());
    let tick = 0;
    const guest: WatchedGuest = {
      name: 'g1',
      async runAll(calls) {
        tick++;
        if (tick === 3) stop.abort();
        if (tick === 2) throw new Error('guest busy');
        return api.runAll(calls);
      },
    };
    const { events, status, stats } = await collect(guest, stop);
    expect(events).toEqual([]);
    expect(stats.failedTicks).toBe(1);
    expect(status.some((m) => m.includes('snapshot failed (1 in a row): guest busy'))).toBe(true);
  });
});

function table(plugin: string, names: string[], rows: unknown[][]): ResultTable {
  return {
    plugin,
    columns: names.map((name) => ({ name, type: 'utf8' as const })),
    rows: rows as ResultTable['rows'],
    errors: [],
    metadata: {},
  };
}

describe('watch: a source whose read fails', () => {
  it('keeps its previous snapshot: nothing gone, and what changed meanwhile is still reported', async () => {
    const stop = new AbortController();
    const g = baseGuest();
    const api = apiGuest(g);
    let tick = 0;
    const guest: WatchedGuest = {
      name: 'g1',
      async runAll(calls) {
        tick++;
        if (tick === 2) addFakeProcess(g, 8, 'late');
        if (tick === 3) stop.abort();
        const r = await api.runAll(calls);
        // The process plugin fails on the second snapshot only.
        if (tick === 2)
          return {
            ...r,
            results: [undefined],
            failures: [{ plugin: 'watch-processes', index: 0, message: 'EIO', error: new Error('EIO') }],
          };
        return r;
      },
    };
    const { events, status } = await collect(guest, stop);
    expect(status.some((m) => m.includes('process snapshot failed: EIO'))).toBe(true);
    expect(events.map((e) => [e.kind, e.row.PID])).toEqual([['process_started', 8]]);
  });
});

describe('watch: identities of listeners, modules, mounts', () => {
  const cols = ['NetNS', 'PID', 'Inode', 'Proto', 'Source Port', 'State'];
  it('tracks listening sockets once per socket, not per holder, and ignores the rest', () => {
    const before = snapshotOf(
      SOURCES.listener,
      table('sockstat', cols, [
        [1n, 10, 500n, 'TCP', 22, 'LISTEN'],
        [1n, 11, 500n, 'TCP', 22, 'LISTEN'], // the same socket in a forked child
        [1n, 12, 501n, 'TCP', 40000, 'ESTABLISHED'],
        [1n, 13, 502n, 'UDP', 53, 'UNCONNECTED'],
        [1n, 14, 503n, 'UDP', 0, 'UNCONNECTED'],
      ]),
    );
    expect([...before.keys()]).toEqual(['1:500', '1:502']);
    const after = snapshotOf(
      SOURCES.listener,
      table('sockstat', cols, [
        [1n, 11, 500n, 'TCP', 22, 'LISTEN'], // its first holder exited: still the same listener
        [1n, 20, 600n, 'TCP', 8080, 'LISTEN'],
      ]),
    );
    const d = diffSnapshots(before, after);
    expect(d.added.map((r) => r['Source Port'])).toEqual([8080]);
    expect(d.removed.map((r) => r['Source Port'])).toEqual([53]);
  });

  it('names modules by name and mounts by namespace and mount id', () => {
    const m1 = snapshotOf(SOURCES.module, table('lsmod', ['Name'], [['ext4'], ['loop']]));
    const m2 = snapshotOf(SOURCES.module, table('lsmod', ['Name'], [['ext4'], ['dummy']]));
    expect(diffSnapshots(m1, m2)).toEqual({ added: [{ Name: 'dummy' }], removed: [{ Name: 'loop' }] });
    const mcols = ['MNT_NS_ID', 'MOUNT ID', 'MOUNT_POINT'];
    const a = snapshotOf(
      SOURCES.mount,
      table('mountinfo', mcols, [
        [1n, 20, '/'],
        [2n, 20, '/'],
      ]),
    );
    const b = snapshotOf(
      SOURCES.mount,
      table('mountinfo', mcols, [
        [1n, 20, '/'],
        [1n, 31, '/mnt'],
      ]),
    );
    const d = diffSnapshots(a, b);
    expect(d.added.map((r) => r.MOUNT_POINT)).toEqual(['/mnt']);
    expect(d.removed.map((r) => r.MNT_NS_ID)).toEqual([2n]);
  });
});

describe('watch: event lines', () => {
  it('writes guest, ISO time with ns, time_ns, kind and the typed row', () => {
    const line = eventLine({
      guest: 'lab',
      timeNs: 1764454201123456789n,
      kind: 'process_started',
      row: {
        PID: 7,
        START_MS: 9007199254740993n,
        'CREATION TIME': new Date(Date.UTC(2026, 10, 29, 22, 10, 1, 5)),
        USER: null,
      },
      columns: [
        { name: 'PID', type: 'int32' },
        { name: 'START_MS', type: 'int64' },
        { name: 'CREATION TIME', type: 'timestamp_ms' },
        { name: 'USER', type: 'utf8' },
      ],
    });
    expect(line.endsWith('}\n')).toBe(true);
    expect(line.split('\n')).toHaveLength(2);
    const o = JSON.parse(line);
    expect(o).toMatchObject({
      guest: 'lab',
      time: '2025-11-29T22:10:01.123456789Z',
      time_ns: '1764454201123456789',
      kind: 'process_started',
      row: { PID: 7, 'CREATION TIME': '2026-11-29T22:10:01.005000+00:00', USER: null },
    });
    // 64-bit integers exact, not rounded through a double.
    expect(line).toContain('"START_MS":9007199254740993');
    expect(isoNs(5n)).toBe('1970-01-01T00:00:00.000000005Z');
  });

  it('shows each attach progress line once, not at every snapshot', () => {
    const seen: string[] = [];
    const p = firstTimes((m) => seen.push(m));
    for (const m of [
      'attaching',
      'reusing the resident shadow (pid 9)',
      'attaching',
      'reusing the resident shadow (pid 9)',
    ])
      p(m);
    p('reusing the resident shadow (pid 12)');
    expect(seen).toEqual([
      'attaching',
      'reusing the resident shadow (pid 9)',
      'reusing the resident shadow (pid 12)',
    ]);
  });

  it('parses --interval from 50 ms to 1 s', () => {
    expect(parseInterval('1s')).toBe(1000);
    expect(parseInterval('0.5s')).toBe(500);
    expect(parseInterval('50ms')).toBe(50);
    expect(parseInterval('100')).toBe(100);
    for (const bad of ['49ms', '2s', '0', 'fast', '-1s'])
      expect(() => parseInterval(bad)).toThrow(RangeError);
  });
});

describe('watch: the end of a watch', () => {
  function openFake(log: string[], failing = new Set<string>()) {
    return async (spec: unknown, o: { keepShadow?: boolean; holdAwake?: boolean }) => {
      const name = String(spec);
      // A watch lets the shadow sleep between its batches (guest CPU), never spin through a tick.
      expect(o.holdAwake).toBe(false);
      if (failing.has(name)) throw new Error(`no running lab guest named '${name}'`);
      const api = apiGuest(baseGuest());
      let tick = 0;
      return {
        name,
        runAll: async (calls: readonly PluginCall[]) => {
          // A new process on every snapshot after the baseline.
          const r = await api.runAll(calls);
          tick++;
          return r;
        },
        close: async () => void log.push(`close ${name} keepShadow=${o.keepShadow} after ${tick}`),
      };
    };
  }

  it('closes every guest (removing its shadow) when the signal aborts', async () => {
    const log: string[] = [];
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 30);
    const r = await watchGuests({
      guests: ['a', 'b'],
      intervalMs: 50,
      sources: ['process'],
      signal: stop.signal,
      emit: async () => undefined,
      open: openFake(log),
    });
    expect(r.outputClosed).toBe(false);
    expect(r.outcomes.map((o) => [o.guest, o.error])).toEqual([
      ['a', undefined],
      ['b', undefined],
    ]);
    expect(log.map((l) => l.replace(/ after \d+/, ''))).toEqual([
      'close a keepShadow=false',
      'close b keepShadow=false',
    ]);
  });

  it('ends quietly when the reader of the events goes away (EPIPE), and a failed guest costs only itself', async () => {
    const log: string[] = [];
    const never = new AbortController();
    let emitted = 0;
    const gs = baseGuest();
    const r = await watchGuests({
      guests: ['a', 'gone'],
      intervalMs: 50,
      sources: ['process'],
      keepShadow: true,
      signal: never.signal,
      emit: async () => {
        emitted++;
        throw new OutputClosedError();
      },
      open: async (spec, o) => {
        if (spec === 'gone') return openFake(log, new Set(['gone']))(spec, o);
        const api = apiGuest(gs);
        let tick = 0;
        return {
          name: 'a',
          runAll: async (calls) => {
            if (tick++ === 1) addFakeProcess(gs, 9, 'new');
            return api.runAll(calls);
          },
          close: async () => void log.push(`close a keepShadow=${o.keepShadow}`),
        };
      },
    });
    expect(r.outputClosed).toBe(true);
    expect(emitted).toBe(1);
    expect(r.outcomes.find((o) => o.guest === 'gone')?.error?.message).toMatch(/no running lab guest/);
    expect(r.outcomes.find((o) => o.guest === 'a')?.error).toBeUndefined();
    expect(log).toEqual(['close a keepShadow=true']);
  });
});
