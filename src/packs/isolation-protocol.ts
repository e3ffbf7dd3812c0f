/**
 * The messages between vmi and an isolated pack's child process (src/packs/isolated-pack.ts
 * starts it, src/packs/isolated-child.ts is its entry). They travel over Node's IPC channel
 * with `serialization: 'advanced'` (the structured clone algorithm: bigint, Uint8Array and
 * Date survive; functions, getters, prototypes and symbols do not).
 *
 * Everything the child sends is data from code vmi does not trust: the parent checks each
 * message's shape here before it acts on it, and the child never learns more than a batch's
 * results.
 */
import { AbsentValue, type RowValue } from '../output/columns.js';
import type { RunLimits } from '../sdk/limits.js';
import type { OptionSpecs } from '../sdk/plugin.js';
import type { PluginNeeds } from '../sdk/policy.js';
import type { Call, CallResult } from '../sdk/syscall-types.js';
import type { ColumnSpec } from '../output/columns.js';

/** First message, parent → child: what to load and, for a run, which plugin with what. */
export interface InitMessage {
  t: 'init';
  /** The pack's package name (for messages). */
  pack: string;
  /** The pack's package root (real path) and its entry module, relative to it. */
  root: string;
  entry: string;
  /** The plugin API version its package.json declares, if any. */
  apiVersion?: number;
  /** uid/gid to switch to before the pack is imported (vmi runs as root), or null. */
  drop: { uid: number; gid: number } | null;
  /** 'describe': report the pack's plugins; 'run': run one of them. */
  mode: 'describe' | 'run';
  plugin?: string;
  options?: Record<string, unknown>;
  runLimits?: Partial<RunLimits>;
}

/** Parent → child: the answer to one batch. */
export type BatchReply =
  | { t: 'result'; id: number; results: CallResult[] }
  | { t: 'refused'; id: number; name: string; message: string };

/** What a pack plugin declares, as data (its run() stays in the child). */
export interface PluginDescription {
  name: string;
  description: string;
  version: string;
  apiVersion: unknown;
  columns: ColumnSpec[];
  options: OptionSpecs;
  needs?: PluginNeeds;
}

/** Child → parent. */
export type ChildMessage =
  | { t: 'described'; plugins: PluginDescription[]; rejected: { plugin: string; apiVersion: unknown }[] }
  | { t: 'load-failed'; message: string }
  | { t: 'batch'; id: number; calls: Call[] }
  | { t: 'progress'; message: string }
  | { t: 'rows'; rows: unknown[][]; depths?: number[] }
  | { t: 'done'; errors: string[]; runs: number; calls: number }
  | { t: 'failed'; name: string; message: string };

/** A message from the child that is not one of {@link ChildMessage}: the pack broke the protocol. */
export class PackProtocolError extends Error {
  override name = 'PackProtocolError';
}

/** Longest string the parent accepts for a progress line, warning or error message. */
export const MAX_MESSAGE_CHARS = 4096;

/** Rows per 'rows' message: bounds each message, and lets the parent count rows as they come. */
export const ROWS_PER_MESSAGE = 5000;

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

/** A short, printable string from the child (control characters replaced, length capped). */
export function cleanText(x: unknown): string {
  const s = typeof x === 'string' ? x : String(x);
  // eslint-disable-next-line no-control-regex
  return s.slice(0, MAX_MESSAGE_CHARS).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '?');
}

/**
 * Checks a message from the child against {@link ChildMessage} (shapes only: calls are
 * checked by the policy, rows by {@link decodeRow}). Throws PackProtocolError.
 */
export function checkChildMessage(m: unknown): ChildMessage {
  if (!isObject(m) || typeof m.t !== 'string') throw new PackProtocolError('a message that is not an object');
  const bad = (what: string) => new PackProtocolError(`a bad '${String(m.t)}' message: ${what}`);
  switch (m.t) {
    case 'described':
      if (!Array.isArray(m.plugins) || !Array.isArray(m.rejected))
        throw bad('plugins and rejected must be lists');
      return m as ChildMessage;
    case 'load-failed':
    case 'progress':
      if (typeof m.message !== 'string') throw bad('no message');
      return m as ChildMessage;
    case 'batch':
      if (!Number.isSafeInteger(m.id) || !Array.isArray(m.calls)) throw bad('no id or calls');
      return m as ChildMessage;
    case 'rows':
      if (!Array.isArray(m.rows) || !m.rows.every((r) => Array.isArray(r))) throw bad('rows must be lists');
      if (m.depths !== undefined && !Array.isArray(m.depths)) throw bad('depths must be a list');
      return m as ChildMessage;
    case 'done':
      if (!Array.isArray(m.errors) || !Number.isSafeInteger(m.runs) || !Number.isSafeInteger(m.calls))
        throw bad('errors, runs and calls');
      return m as ChildMessage;
    case 'failed':
      if (typeof m.name !== 'string' || typeof m.message !== 'string') throw bad('name and message');
      return m as ChildMessage;
    default:
      throw new PackProtocolError(`an unknown message '${cleanText(m.t)}'`);
  }
}

/** A cell as the child sends it: AbsentValue becomes `{ absent: kind, reason }`. */
export function encodeCell(v: RowValue): unknown {
  return v instanceof AbsentValue
    ? { absent: v.kind, ...(v.reason === undefined ? {} : { reason: v.reason }) }
    : v;
}

/**
 * A cell from the child back into a RowValue: primitives and valid Dates as they are,
 * `{ absent, reason }` into an AbsentValue; anything else throws PackProtocolError.
 */
export function decodeCell(v: unknown): RowValue {
  switch (typeof v) {
    case 'number':
    case 'bigint':
    case 'string':
    case 'boolean':
      return v;
    case 'object':
      if (v === null) return null;
      if (v instanceof Date) return v;
      if (isObject(v) && (v.absent === 'unreadable' || v.absent === 'not_available')) {
        return new AbsentValue(v.absent, v.reason === undefined ? undefined : cleanText(v.reason));
      }
  }
  throw new PackProtocolError(`a cell that is not a value (${typeof v})`);
}

/** One row from the child: exactly `width` cells, each decoded. */
export function decodeRow(row: unknown[], width: number): RowValue[] {
  if (row.length !== width) throw new PackProtocolError(`a row of ${row.length} cells, expected ${width}`);
  return row.map(decodeCell);
}
