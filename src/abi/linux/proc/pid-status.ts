/**
 * /proc/PID/status (fs/proc/array.c): `Key:\tvalue` lines. The set of keys grows with
 * kernel versions, so every line is kept; the few keys tools rely on are also parsed.
 */
import { excerpt, parseIntStrict, ProcParseError, toText, type ProcInput } from './common.js';

/** Real, effective, saved-set and filesystem ids, in the kernel's order. */
export interface IdSet {
  real: number;
  effective: number;
  saved: number;
  fs: number;
}

export interface PidStatus {
  /** Every `Key: value` line, value trimmed, in file order. */
  fields: ReadonlyMap<string, string>;
  /** Name with the kernel's escapes (`\n`, `\\`) undone, as byte text. */
  name?: string;
  /** The state letter of `State:\tS (sleeping)`. */
  state?: string;
  tgid?: number;
  pid?: number;
  ppid?: number;
  threads?: number;
  uid?: IdSet;
  gid?: IdSet;
  /**
   * `NSpid:`: the task's PID in each PID namespace it lives in, from the reader's
   * namespace (first) down to its own (last) (Linux 4.1+; kernel/pid.c levels).
   */
  nspid?: number[];
}

const DIGITS = /^\d+$/;

function parseIds(value: string, file: string, key: string): IdSet {
  const p = value.split(/\s+/);
  if (p.length !== 4) throw new ProcParseError(file, `${key} needs 4 ids, got ${excerpt(value)}`);
  // Plain decimal ids take the short path; anything else gets parseIntStrict's error.
  const [real, effective, saved, fs] = p.map((s, i) =>
    s.length > 0 && s.length <= 10 && DIGITS.test(s) ? Number(s) : parseIntStrict(s, file, `${key}[${i}]`),
  );
  return { real, effective, saved, fs };
}

/**
 * Undoes the kernel's `\n` and `\\` in Name (proc_task_name). In byte text the kernel's
 * backslash reads `\x5c`, and a backslash of the name stays `\x5c`.
 */
function unescapeName(s: string): string {
  return s.replace(/\\x5c(n|\\x5c)/g, (_m, c: string) => (c === 'n' ? '\n' : '\\x5c'));
}

/** The keys parsed into typed fields; every other line is only in `fields`. */
const KNOWN_KEYS = new Set(['Name', 'State', 'Tgid', 'Pid', 'PPid', 'Threads', 'Uid', 'Gid', 'NSpid']);
const LONGEST_KNOWN = 7;

/**
 * Checks that every line is `Key: value` and hands `pick` each line's bounds (key from
 * `start` to `colon`, value from `colon + 1` to `end`). indexOf rather than split and no
 * string per line unless `pick` makes one: status is read for every process of a pslist,
 * and a split-based parse was a third of its host time.
 */
function scanLines(
  text: string,
  file: string,
  pick: (start: number, colon: number, end: number) => void,
): void {
  let start = 0;
  let line = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    line++;
    const colon = text.indexOf(':', start);
    if (colon <= start || colon >= end) {
      throw new ProcParseError(file, `line ${line} is not 'Key: value': ${excerpt(text.slice(start, end))}`);
    }
    pick(start, colon, end);
    start = end + 1;
  }
  if (line === 0) throw new ProcParseError(file, 'empty');
}

/**
 * Parses status. Throws ProcParseError when a line has no ':' (other than a trailing
 * partial line), when no line parses, or when a known key (Uid, Gid, Pid...) is malformed.
 * Missing keys are left undefined: callers decide whether they need them. `fields` (all
 * lines) is built on first use.
 */
export function parsePidStatus(input: ProcInput, file = 'status'): PidStatus {
  const text = toText(input);
  const known = new Map<string, string>();
  scanLines(text, file, (start, colon, end) => {
    if (colon - start > LONGEST_KNOWN) return;
    const key = text.slice(start, colon);
    if (KNOWN_KEYS.has(key) && !known.has(key)) known.set(key, text.slice(colon + 1, end).trim());
  });
  const intField = (key: string) => {
    const v = known.get(key);
    return v === undefined ? undefined : parseIntStrict(v, file, key);
  };
  const uid = known.get('Uid');
  const gid = known.get('Gid');
  const state = known.get('State');
  const name = known.get('Name');
  const nspid = known.get('NSpid');
  let fields: Map<string, string> | undefined;
  return {
    get fields(): ReadonlyMap<string, string> {
      if (!fields) {
        const all = new Map<string, string>();
        scanLines(text, file, (start, colon, end) => {
          const key = text.slice(start, colon);
          if (!all.has(key)) all.set(key, text.slice(colon + 1, end).trim());
        });
        fields = all;
      }
      return fields;
    },
    name: name === undefined ? undefined : unescapeName(name),
    state: state === undefined || state.length === 0 ? undefined : state[0],
    tgid: intField('Tgid'),
    pid: intField('Pid'),
    ppid: intField('PPid'),
    threads: intField('Threads'),
    uid: uid === undefined ? undefined : parseIds(uid, file, 'Uid'),
    gid: gid === undefined ? undefined : parseIds(gid, file, 'Gid'),
    nspid:
      nspid === undefined
        ? undefined
        : nspid.split(/\s+/).map((v, i) => parseIntStrict(v, file, `NSpid[${i}]`)),
  };
}
