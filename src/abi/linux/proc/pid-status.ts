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
  /** Name with the kernel's escapes (`\n`, `\\`) undone. */
  name?: string;
  /** The state letter of `State:\tS (sleeping)`. */
  state?: string;
  tgid?: number;
  pid?: number;
  ppid?: number;
  threads?: number;
  uid?: IdSet;
  gid?: IdSet;
}

function parseIds(value: string, file: string, key: string): IdSet {
  const p = value.split(/\s+/);
  if (p.length !== 4) throw new ProcParseError(file, `${key} needs 4 ids, got ${excerpt(value)}`);
  const [real, effective, saved, fs] = p.map((s, i) => parseIntStrict(s, file, `${key}[${i}]`));
  return { real, effective, saved, fs };
}

function unescapeName(s: string): string {
  return s.replace(/\\(n|\\)/g, (_m, c: string) => (c === 'n' ? '\n' : '\\'));
}

/**
 * Parses status. Throws ProcParseError when a line has no ':' (other than a trailing
 * partial line), when no line parses, or when a known key (Uid, Gid, Pid...) is malformed.
 * Missing keys are left undefined: callers decide whether they need them.
 */
export function parsePidStatus(input: ProcInput, file = 'status'): PidStatus {
  const text = toText(input);
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const fields = new Map<string, string>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    if (colon <= 0) {
      throw new ProcParseError(file, `line ${i + 1} is not 'Key: value': ${excerpt(line)}`);
    }
    const key = line.slice(0, colon);
    if (!fields.has(key)) fields.set(key, line.slice(colon + 1).trim());
  }
  if (fields.size === 0) throw new ProcParseError(file, 'empty');
  const intField = (key: string) => {
    const v = fields.get(key);
    return v === undefined ? undefined : parseIntStrict(v, file, key);
  };
  const uid = fields.get('Uid');
  const gid = fields.get('Gid');
  const state = fields.get('State');
  const name = fields.get('Name');
  return {
    fields,
    name: name === undefined ? undefined : unescapeName(name),
    state: state === undefined || state.length === 0 ? undefined : state[0],
    tgid: intField('Tgid'),
    pid: intField('Pid'),
    ppid: intField('PPid'),
    threads: intField('Threads'),
    uid: uid === undefined ? undefined : parseIds(uid, file, 'Uid'),
    gid: gid === undefined ? undefined : parseIds(gid, file, 'Gid'),
  };
}
