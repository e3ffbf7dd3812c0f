/**
 * `vmi collect`: plugins × guests, once or every interval, into a Hive-partitioned Parquet
 * lake (layout and naming: lake.ts). Each round attaches to every guest once,
 * concurrently, and runs all the plugins through that attach (src/runner/multi-guest.ts);
 * then each (plugin, guest) table becomes one file with a leading COLLECTED_AT column (the
 * round's start time, the same in every file of the round, so "between two collections"
 * is a comparison of two values). The file's key-value metadata holds the table's
 * metadata (guest identity, kernel, shadow context...) plus `vmi.version`, `vmi.schema`
 * (the columns with their vmi types, JSON) and `vmi.collection.round`.
 *
 * A file is written to a hidden temporary name, fsynced, then renamed: a reader never sees
 * half a file, even when the collector is killed with SIGKILL in the middle of a write.
 * stop() (SIGINT, SIGTERM) lets the file being written finish, then ends the run.
 */
import { hostname } from 'node:os';
import { mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ResultTable } from '../output/table.js';
import { toParquet } from '../output/renderers/parquet.js';
import { runPluginsOnGuests } from '../runner/multi-guest.js';
import type { PluginRequest, RunOnGuestOptions } from '../runner/run-plugins.js';
import type { GuestTarget } from '../targets/index.js';
import { dataFileName, expiredDates, partitionDir, tempFileName } from './lake.js';
import { COLLECTED_AT_COLUMN } from './query.js';

export interface CollectOptions extends RunOnGuestOptions {
  /** Root of the lake (created if missing, mode 0700: it holds guest data). */
  dir: string;
  /** vmi's version, written into every file's metadata. */
  version: string;
  /** Rounds to run; undefined runs until stop(). */
  rounds?: number;
  /** Milliseconds from one round's start to the next's. */
  intervalMs: number;
  /** Delete `date=` partitions older than this many days after each round. */
  retainDays?: number;
  /** Host partition value (default: this machine's hostname). */
  host?: string;
  /** Mode of the data files (default 0600). */
  fileMode?: number;
  /** One line per event: files written, failures, the round's summary. */
  log: (line: string) => void;
  /**
   * Test hook (VMI_COLLECT_SLOW_WRITE_MS): sleep this long between the two halves of each
   * file's bytes, so that a test can kill the collector while a file is half written.
   */
  slowWriteMs?: number;
}

export interface RoundSummary {
  round: number;
  at: Date;
  files: number;
  rows: number;
  failures: number;
  ms: number;
}

/** A running collection; stop() ends it after the file being written. */
export interface Collector {
  done: Promise<RoundSummary[]>;
  stop(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The table as written to the lake: COLLECTED_AT first, and its schema and vmi version in the metadata. */
export function lakeTable(table: ResultTable, at: Date, round: number, version: string): ResultTable {
  const columns = [COLLECTED_AT_COLUMN, ...table.columns];
  return {
    ...table,
    columns,
    rows: table.rows.map((r) => [at, ...r]),
    // The lake is flat: a tree's depths are not a column there.
    depths: undefined,
    metadata: {
      ...table.metadata,
      version,
      schema: JSON.stringify(columns.map((c) => ({ name: c.name, type: c.type }))),
      'collection.round': String(round),
      'collection.round_time': at.toISOString(),
    },
  };
}

/** Writes `bytes` to `dir/name` through a hidden temporary file and a rename. */
export async function writeLakeFile(
  dir: string,
  name: string,
  bytes: Uint8Array,
  mode = 0o600,
  slowWriteMs = 0,
): Promise<string> {
  const tmp = join(dir, tempFileName(name));
  const fh = await open(tmp, 'wx', 0o600);
  let closed = false;
  try {
    await fh.chmod(mode);
    const half = slowWriteMs > 0 ? bytes.length >> 1 : bytes.length;
    for (const [from, to] of [
      [0, half],
      [half, bytes.length],
    ]) {
      for (let off = from; off < to;) off += (await fh.write(bytes, off, to - off)).bytesWritten;
      if (slowWriteMs > 0 && to === half) {
        await fh.sync();
        await sleep(slowWriteMs);
      }
    }
    await fh.sync();
    await fh.close();
    closed = true;
    const path = join(dir, name);
    await rename(tmp, path);
    return path;
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Deletes the `date=` partitions older than `days` under every plugin/host/guest of the lake. */
export async function applyRetention(root: string, days: number, now: Date): Promise<string[]> {
  const removed: string[] = [];
  const dirs = async (p: string, prefix: string): Promise<string[]> => {
    try {
      return (await readdir(p, { withFileTypes: true }))
        .filter((e) => e.isDirectory() && e.name.startsWith(prefix))
        .map((e) => e.name);
    } catch {
      return [];
    }
  };
  for (const plugin of await dirs(root, 'plugin=')) {
    for (const host of await dirs(join(root, plugin), 'host=')) {
      for (const guest of await dirs(join(root, plugin, host), 'guest=')) {
        const base = join(root, plugin, host, guest);
        const dates = (await dirs(base, 'date=')).map((d) => d.slice('date='.length));
        for (const d of expiredDates(dates, days, now)) {
          const p = join(base, `date=${d}`);
          await rm(p, { recursive: true, force: true });
          removed.push(p);
        }
      }
    }
  }
  return removed;
}

/** Starts collecting; the returned promise settles when the last round (or stop()) ends. */
export function startCollect(
  targets: readonly GuestTarget[],
  requests: readonly PluginRequest[],
  opts: CollectOptions,
): Collector {
  let stopping = false;
  let wake: (() => void) | undefined;
  const stop = (): void => {
    stopping = true;
    wake?.();
  };
  const host = opts.host ?? hostname();
  const run = async (): Promise<RoundSummary[]> => {
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    const summaries: RoundSummary[] = [];
    for (let round = 1; opts.rounds === undefined || round <= opts.rounds; round++) {
      if (stopping) break;
      const at = new Date();
      const t0 = performance.now();
      const multi = await runPluginsOnGuests(targets, requests, opts);
      let files = 0;
      let rows = 0;
      let failures = 0;
      outer: for (const o of multi.outcomes) {
        if (o.error) {
          failures++;
          opts.log(`error: guest ${o.guest}: ${o.error.message.replace(/\s*\n\s*/g, ' ')}`);
          continue;
        }
        for (const f of o.run?.failures ?? []) {
          failures++;
          opts.log(`error: guest ${o.guest}: ${f.plugin}: ${f.message.replace(/\s*\n\s*/g, ' ')}`);
        }
        for (const table of o.run?.byRequest ?? []) {
          if (!table) continue;
          // A signal arrived: the file being written was finished; no new one is started.
          if (stopping) break outer;
          const dir = join(opts.dir, partitionDir({ plugin: table.plugin, host, guest: o.guest, at }));
          await mkdir(dir, { recursive: true, mode: 0o700 });
          const bytes = await toParquet(lakeTable(table, at, round, opts.version));
          await writeLakeFile(dir, dataFileName(at), bytes, opts.fileMode, opts.slowWriteMs);
          files++;
          rows += table.rows.length;
        }
      }
      let retained = '';
      if (opts.retainDays !== undefined) {
        const removed = await applyRetention(opts.dir, opts.retainDays, new Date());
        if (removed.length > 0) retained = `, ${removed.length} expired partitions deleted`;
      }
      const ms = performance.now() - t0;
      summaries.push({ round, at, files, rows, failures, ms });
      opts.log(
        `round ${round}${opts.rounds ? `/${opts.rounds}` : ''} at ${at.toISOString()}: ${files} files, ${rows} rows, ` +
          `${multi.outcomes.length} guests, ${failures} failures${retained}, ${(ms / 1000).toFixed(2)} s${stopping ? ' (stopped)' : ''}`,
      );
      if (stopping || (opts.rounds !== undefined && round >= opts.rounds)) break;
      const wait = opts.intervalMs - (performance.now() - t0);
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    }
    return summaries;
  };
  return { done: run(), stop };
}
