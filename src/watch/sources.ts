/**
 * What `vmi watch` tracks: four sources, each one plugin run per snapshot, a way to name
 * a row for its whole life (its identity), and the pair of event kinds its rows make
 * when they appear and disappear.
 */
import type { RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import type { PluginCall } from '../api/index.js';
import { watchProcesses } from './process-plugin.js';

/** The event kinds, as written in each event's `kind`. */
export const WATCH_KINDS = [
  'process_started',
  'process_exited',
  'listener_opened',
  'listener_closed',
  'module_loaded',
  'module_unloaded',
  'mount_added',
  'mount_removed',
] as const;
export type WatchKind = (typeof WATCH_KINDS)[number];

/** A row by column name (the plugin's column names). */
export type WatchRow = Record<string, RowValue>;

export const SOURCE_NAMES = ['process', 'listener', 'module', 'mount'] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

export interface WatchSource {
  name: SourceName;
  /** The plugin run that snapshots it. */
  call: PluginCall;
  /** Kind of an appearing row, of a disappearing one. */
  added: WatchKind;
  removed: WatchKind;
  /** The row's identity across snapshots; undefined: not tracked (a socket that does not listen). */
  key(row: WatchRow): string | undefined;
}

const cell = (v: RowValue | undefined): string =>
  v instanceof Date
    ? String(v.getTime())
    : v === null || v === undefined || typeof v === 'object'
      ? ''
      : String(v);

/**
 * A listener: a TCP or unix socket in LISTEN, or a UDP socket bound to a port and not
 * connected (the way a UDP server waits). A socket shared by several processes (a
 * forked server) is one listener: its identity is the socket inode in its namespace.
 */
function isListener(row: WatchRow): boolean {
  if (row.State === 'LISTEN') return true;
  const port = row['Source Port'];
  return row.Proto === 'UDP' && row.State === 'UNCONNECTED' && typeof port === 'number' && port > 0;
}

export const SOURCES: Readonly<Record<SourceName, WatchSource>> = {
  process: {
    name: 'process',
    call: { plugin: watchProcesses },
    added: 'process_started',
    removed: 'process_exited',
    // A reused PID gets a new start time: a new process, never the old one come back.
    key: (r) => (typeof r.START_MS === 'bigint' ? `${cell(r.PID)}@${r.START_MS}` : undefined),
  },
  listener: {
    name: 'listener',
    call: { plugin: 'sockstat' },
    added: 'listener_opened',
    removed: 'listener_closed',
    key: (r) => (isListener(r) ? `${cell(r.NetNS)}:${cell(r.Inode)}` : undefined),
  },
  module: {
    name: 'module',
    call: { plugin: 'lsmod' },
    added: 'module_loaded',
    removed: 'module_unloaded',
    key: (r) => (typeof r.Name === 'string' ? r.Name : undefined),
  },
  mount: {
    name: 'mount',
    call: { plugin: 'mountinfo' },
    added: 'mount_added',
    removed: 'mount_removed',
    key: (r) => `${cell(r.MNT_NS_ID)}:${cell(r['MOUNT ID'])}`,
  },
};

/** A source's state at one instant: identity → its row (the first row of that identity). */
export type Snapshot = Map<string, WatchRow>;

/** The tracked rows of a table, by identity. */
export function snapshotOf(source: WatchSource, table: ResultTable): Snapshot {
  const names = table.columns.map((c) => c.name);
  const out: Snapshot = new Map();
  for (const cells of table.rows) {
    const row: WatchRow = {};
    names.forEach((n, i) => (row[n] = cells[i]));
    const key = source.key(row);
    if (key !== undefined && !out.has(key)) out.set(key, row);
  }
  return out;
}

/** What changed from `before` to `after`: rows that appeared, rows that went (in snapshot order). */
export function diffSnapshots(before: Snapshot, after: Snapshot): { added: WatchRow[]; removed: WatchRow[] } {
  const added: WatchRow[] = [];
  const removed: WatchRow[] = [];
  for (const [k, row] of after) if (!before.has(k)) added.push(row);
  for (const [k, row] of before) if (!after.has(k)) removed.push(row);
  return { added, removed };
}
