/**
 * The watch loop of one guest: a snapshot of every source per tick through one attach
 * (the API keeps the shadow resident between ticks), diffed against the previous one.
 * A snapshot is incremental (incremental.ts: only what changed is read) unless
 * `fullSnapshots`.
 * The first snapshot is the baseline and makes no events, so a restarted watcher starts
 * from the guest's current state instead of replaying what it saw before.
 */
import type { GuestRun, PluginCall } from '../api/index.js';
import type { WatchEvent } from './events.js';
import { incrementalSources } from './incremental.js';
import { diffSnapshots, snapshotOf, SOURCES, type Snapshot, type SourceName } from './sources.js';

/** What the loop needs of a guest: its name and one attach running several plugins (api Guest). */
export interface WatchedGuest {
  readonly name: string;
  runAll(calls: readonly PluginCall[]): Promise<GuestRun>;
}

export interface WatchLoopOptions {
  /** Target time from the start of one snapshot to the start of the next, ms (a slow snapshot delays the next). */
  intervalMs: number;
  /** The sources to track (default: all four). */
  sources?: readonly SourceName[];
  /** Ends the loop after the snapshot in flight. */
  signal: AbortSignal;
  /** Where events go; a rejection (e.g. OutputClosedError) ends the loop with that error. */
  emit(event: WatchEvent): Promise<void>;
  /** Status lines (baseline, failed snapshots). */
  status?(message: string): void;
  /** Clock, ns since the epoch (events.ts makeClock). */
  now(): bigint;
  /** Consecutive failed snapshots after which the loop gives up (default 10). */
  maxFailures?: number;
  /**
   * Run every source's whole plugin at every tick (watch-processes, sockstat, lsmod,
   * mountinfo) instead of the incremental probes of incremental.ts. Default false.
   */
  fullSnapshots?: boolean;
}

export interface WatchLoopStats {
  ticks: number;
  events: number;
  failedTicks: number;
  /** Milliseconds per snapshot (attach, plugins, detach), last 1000. */
  tickMs: number[];
}

/** Runs until `signal` aborts (resolves) or too many snapshots in a row fail (rejects). */
export async function watchLoop(guest: WatchedGuest, opts: WatchLoopOptions): Promise<WatchLoopStats> {
  const sources = (opts.sources ?? (Object.keys(SOURCES) as SourceName[])).map((n) => SOURCES[n]);
  const incremental = opts.fullSnapshots ? undefined : incrementalSources(sources.map((s) => s.name));
  const calls = incremental ? incremental.calls : sources.map((s) => s.call);
  const previous = new Map<SourceName, Snapshot>();
  const stats: WatchLoopStats = { ticks: 0, events: 0, failedTicks: 0, tickMs: [] };
  const maxFailures = opts.maxFailures ?? 10;
  let failuresInRow = 0;
  while (!opts.signal.aborted) {
    const t0 = performance.now();
    let run: GuestRun | undefined;
    incremental?.beginTick();
    try {
      run = await guest.runAll(calls);
      failuresInRow = 0;
    } catch (err) {
      stats.failedTicks++;
      failuresInRow++;
      const message = err instanceof Error ? err.message : String(err);
      opts.status?.(`${guest.name}: snapshot failed (${failuresInRow} in a row): ${message}`);
      if (failuresInRow >= maxFailures) throw err;
    }
    if (run) {
      const observed = opts.now();
      stats.ticks++;
      const ms = performance.now() - t0;
      stats.tickMs.push(ms);
      if (stats.tickMs.length > 1000) stats.tickMs.shift();
      for (const [i, source] of sources.entries()) {
        const result = run.results[i];
        if (!result) {
          // Its previous snapshot stays: nothing is reported as gone because a read failed.
          const f = run.failures.find((x) => x.index === i);
          opts.status?.(`${guest.name}: ${source.name} snapshot failed: ${f?.message ?? 'no table'}`);
          continue;
        }
        const snap = snapshotOf(source, result.table);
        const before = previous.get(source.name);
        previous.set(source.name, snap);
        if (!before) {
          opts.status?.(
            `${guest.name}: baseline: ${snap.size} ${plural(source.name, snap.size)} (no events for them)`,
          );
          continue;
        }
        const { added, removed } = diffSnapshots(before, snap);
        // Gone first: a PID reused within one interval reads as the old process exiting, then the new one starting.
        for (const row of removed) {
          await opts.emit({
            guest: guest.name,
            timeNs: observed,
            kind: source.removed,
            row,
            columns: result.table.columns,
          });
          stats.events++;
        }
        for (const row of added) {
          await opts.emit({
            guest: guest.name,
            timeNs: observed,
            kind: source.added,
            row,
            columns: result.table.columns,
          });
          stats.events++;
        }
      }
    }
    const wait = opts.intervalMs - (performance.now() - t0);
    if (wait > 0) await sleep(wait, opts.signal);
  }
  return stats;
}

function plural(name: SourceName, n: number): string {
  return n === 1 ? name : name === 'process' ? 'processes' : `${name}s`;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
