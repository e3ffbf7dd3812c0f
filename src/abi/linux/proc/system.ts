/** System-wide /proc files: /proc/stat and /proc/uptime. */
import { excerpt, parseIntStrict, ProcParseError, toText, type ProcInput } from './common.js';

export interface ProcStat {
  /** Boot time, seconds since the epoch (whole seconds, as the kernel prints it). */
  btime: number;
  /** Context switches since boot. */
  ctxt?: number;
  /** Forks since boot. */
  processes?: number;
  procsRunning?: number;
  procsBlocked?: number;
}

/** Parses /proc/stat; throws ProcParseError unless a valid `btime` line is present. */
export function parseProcStat(input: ProcInput, file = '/proc/stat'): ProcStat {
  const text = toText(input);
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (m && !values.has(m[1])) values.set(m[1], m[2].trim());
  }
  const opt = (key: string) => {
    const v = values.get(key);
    return v === undefined ? undefined : parseIntStrict(v, file, key);
  };
  const btime = values.get('btime');
  if (btime === undefined) throw new ProcParseError(file, 'no btime line');
  return {
    btime: parseIntStrict(btime, file, 'btime'),
    ctxt: opt('ctxt'),
    processes: opt('processes'),
    procsRunning: opt('procs_running'),
    procsBlocked: opt('procs_blocked'),
  };
}

export interface ProcUptime {
  /** Seconds since boot (centisecond resolution). */
  uptime: number;
  /** Summed idle time of all CPUs, seconds. */
  idle: number;
}

const SECONDS_RE = /^\d{1,15}(\.\d{1,9})?$/;

/** Parses /proc/uptime (`12345.67 23456.78`). */
export function parseUptime(input: ProcInput, file = '/proc/uptime'): ProcUptime {
  const text = toText(input).trim();
  const p = text.split(/\s+/);
  if (p.length !== 2) throw new ProcParseError(file, `expected 2 numbers, got ${excerpt(text)}`);
  for (const s of p) {
    if (!SECONDS_RE.test(s)) throw new ProcParseError(file, `not a number of seconds: ${excerpt(s)}`);
  }
  return { uptime: Number(p[0]), idle: Number(p[1]) };
}
