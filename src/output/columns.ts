/**
 * The column vocabulary of plugin results. A plugin declares its columns with these
 * types; renderers and the Arrow assembly never look at which plugin made a table.
 */

/**
 * Column types a plugin can declare.
 * - `int32`, `int64`, `uint64`, `float64`, `bool`: as in Arrow.
 * - `utf8`: byte text (src/util/byte-text.ts): valid UTF-8 as is, `\xNN` for every other
 *   byte and `\x5c` for a backslash, so guest bytes come back exactly. Stored as Arrow
 *   Utf8 with field metadata `vmi.encoding: utf8-xescape`.
 * - `timestamp_ms`: milliseconds since the Unix epoch, UTC (value: Date, number or bigint).
 * - `hex64`: an unsigned 64-bit integer that is an address or offset; stored as Arrow
 *   Uint64, shown as `0x…` by the text, CSV and JSON renderers.
 */
export type ColumnType =
  'int32' | 'int64' | 'uint64' | 'float64' | 'bool' | 'utf8' | 'timestamp_ms' | 'hex64';

export const COLUMN_TYPES: readonly ColumnType[] = [
  'int32',
  'int64',
  'uint64',
  'float64',
  'bool',
  'utf8',
  'timestamp_ms',
  'hex64',
];

export interface ColumnSpec {
  /** Volatility-style column name, e.g. `PID`, `CREATION TIME`. */
  name: string;
  type: ColumnType;
  /** One line for help text and the Arrow field metadata. */
  description?: string;
}

/**
 * Why a cell has no value, mirroring Volatility 3's absent values: `unreadable` (the
 * guest was asked and the read failed: UnreadableValue) and `not_available` (this view
 * cannot provide the value at all: NotAvailableValue).
 */
export type AbsentKind = 'unreadable' | 'not_available';

/**
 * An explicit "no value" marker, distinct from an empty string or zero. Text renderers
 * show it (`-` for unreadable, `N/A` for not available); Arrow stores null and keeps the
 * reason in the table's `vmi.errors` metadata.
 */
export class AbsentValue {
  constructor(
    readonly kind: AbsentKind,
    readonly reason?: string,
  ) {
    Object.freeze(this);
  }

  toString(): string {
    return this.kind === 'unreadable' ? '-' : 'N/A';
  }
}

/** The guest was asked but the value could not be read (e.g. the process exited, EACCES). */
export const UNREADABLE: AbsentValue = new AbsentValue('unreadable');
/** The value does not exist in this view (e.g. a kernel address a syscall view never sees). */
export const NOT_AVAILABLE: AbsentValue = new AbsentValue('not_available');

/** An unreadable marker carrying the reason, e.g. `unreadable('ENOENT: /proc/42/cmdline')`. */
export function unreadable(reason: string): AbsentValue {
  return new AbsentValue('unreadable', reason);
}

/** A not-available marker carrying the reason. */
export function notAvailable(reason: string): AbsentValue {
  return new AbsentValue('not_available', reason);
}

/** One cell. Integers may be number or bigint; `null` is a plain missing value. */
export type RowValue = number | bigint | string | boolean | Date | null | AbsentValue;

export function isAbsent(v: unknown): v is AbsentValue {
  return v instanceof AbsentValue;
}

/** True for null, undefined and absent markers: cells that become Arrow nulls. */
export function isNullish(v: unknown): v is null | undefined | AbsentValue {
  return v === null || v === undefined || v instanceof AbsentValue;
}
