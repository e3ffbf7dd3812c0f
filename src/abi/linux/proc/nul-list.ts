/**
 * /proc/PID/cmdline and /proc/PID/environ: NUL-separated strings. A process may rewrite
 * its argv area (setproctitle), so the last string may lack its NUL and the strings may
 * be anything; these parsers accept all input and never throw.
 */
import { toText, type ProcInput } from './common.js';

/** Splits NUL-separated strings; a trailing NUL does not add an empty string. `[]` for empty input. */
export function parseNulList(input: ProcInput): string[] {
  const text = toText(input);
  if (text.length === 0) return [];
  const parts = text.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** argv of a process; `[]` for kernel threads (their cmdline is empty). */
export function parseCmdline(input: ProcInput): string[] {
  return parseNulList(input);
}

export interface EnvVar {
  key: string;
  /** Everything after the first '='; '' for an entry with no '=' (kept, not dropped). */
  value: string;
}

/** The environment a process started with (later setenv() calls are not visible here). */
export function parseEnviron(input: ProcInput): EnvVar[] {
  return parseNulList(input)
    .filter((s) => s.length > 0)
    .map((s) => {
      const eq = s.indexOf('=');
      return eq < 0 ? { key: s, value: '' } : { key: s.slice(0, eq), value: s.slice(eq + 1) };
    });
}
