/**
 * Change events of `vmi watch` and their JSON Lines form: one object per line,
 * `{"guest", "time", "time_ns", "kind", "row"}` (docs/watch.md). `row` is the plugin's row
 * keyed by column name, cells written as `vmi plugins run -r jsonl` writes them (64-bit
 * integers exact, timestamps ISO 8601 UTC, absent values null).
 */
import type { ColumnSpec } from '../output/columns.js';
import { jsonFormatter } from '../output/renderers/json.js';
import type { WatchKind, WatchRow } from './sources.js';

export interface WatchEvent {
  /** The guest's name. */
  guest: string;
  /** When vmi observed the change: the end of the first snapshot that showed it, ns since the epoch. */
  timeNs: bigint;
  kind: WatchKind;
  /** The row that appeared, or the last row seen of what disappeared. */
  row: WatchRow;
  /** The row's columns (their types decide how cells are written). */
  columns: readonly ColumnSpec[];
}

/**
 * Wall-clock time in nanoseconds: Date.now() once, then the monotonic clock, so events
 * of one watch are ordered even if the host's clock is stepped meanwhile.
 */
export function makeClock(): () => bigint {
  const epochNs = BigInt(Date.now()) * 1_000_000n;
  const hr0 = process.hrtime.bigint();
  return () => epochNs + (process.hrtime.bigint() - hr0);
}

/** `2026-11-29T22:10:01.123456789Z` for ns since the epoch. */
export function isoNs(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // …T22:10:01.123Z
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return `${iso.slice(0, 19)}.${frac}Z`;
}

/** The event as one line of JSON, with its newline. */
export function eventLine(e: WatchEvent): string {
  let row = '';
  for (const c of e.columns) {
    if (!(c.name in e.row)) continue;
    row += `${row ? ',' : ''}${JSON.stringify(c.name)}:${jsonFormatter(c.type)(e.row[c.name])}`;
  }
  return (
    `{"guest":${JSON.stringify(e.guest)},"time":"${isoNs(e.timeNs)}","time_ns":"${e.timeNs}",` +
    `"kind":"${e.kind}","row":{${row}}}\n`
  );
}
