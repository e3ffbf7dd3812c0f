/**
 * /proc/PID/stat and /proc/PID/task/TID/stat (fs/proc/array.c do_task_stat): one line,
 * `pid (comm) state ppid ...`. comm is the task name and may contain spaces, parentheses
 * and any byte but NUL, so it is delimited by the first '(' and the LAST ')': no field
 * after comm contains a ')'.
 */
import {
  excerpt,
  parseBigIntStrict,
  parseIntStrict,
  ProcParseError,
  toText,
  type ProcInput,
} from './common.js';

export interface PidStat {
  pid: number;
  /** Task name (at most 15 bytes for ordinary tasks; longer for some kernel workers). */
  comm: string;
  /** State letter: R, S, D, T, t, X, Z, P, I... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  ttyNr: number;
  tpgid: number;
  flags: number;
  minflt: number;
  cminflt: number;
  majflt: number;
  cmajflt: number;
  /** CPU times in clock ticks (USER_HZ = 100 on x86-64). */
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
  priority: number;
  nice: number;
  numThreads: number;
  /** Start time after boot, in clock ticks. */
  starttime: number;
  /** Virtual memory size in bytes. */
  vsize: bigint;
  /** Resident set size in pages. */
  rss: number;
  /** Fields after rss (rsslim, startcode, ..., processor, ...), unparsed, as the kernel wrote them. */
  rest: string[];
}

/** Fields after comm that must be present: state (3) through rss (24). */
const REQUIRED_AFTER_COMM = 22;

export function parsePidStat(input: ProcInput, file = 'stat'): PidStat {
  const text = toText(input);
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0) throw new ProcParseError(file, `no '(' opening comm in ${excerpt(text)}`);
  if (close < open) throw new ProcParseError(file, `no ')' closing comm in ${excerpt(text)}`);
  const pid = parseIntStrict(text.slice(0, open).trim(), file, 'pid');
  const comm = text.slice(open + 1, close);
  const after = text.slice(close + 1).trim();
  const f = after.length > 0 ? after.split(/\s+/) : [];
  if (f.length < REQUIRED_AFTER_COMM) {
    throw new ProcParseError(file, `only ${f.length} fields after comm, need ${REQUIRED_AFTER_COMM}`);
  }
  const state = f[0];
  if (state.length !== 1) throw new ProcParseError(file, `bad state ${excerpt(state)}`);
  const int = (i: number, what: string) => parseIntStrict(f[i], file, what);
  return {
    pid,
    comm,
    state,
    ppid: int(1, 'ppid'),
    pgrp: int(2, 'pgrp'),
    session: int(3, 'session'),
    ttyNr: int(4, 'tty_nr'),
    tpgid: int(5, 'tpgid'),
    flags: int(6, 'flags'),
    minflt: int(7, 'minflt'),
    cminflt: int(8, 'cminflt'),
    majflt: int(9, 'majflt'),
    cmajflt: int(10, 'cmajflt'),
    utime: int(11, 'utime'),
    stime: int(12, 'stime'),
    cutime: int(13, 'cutime'),
    cstime: int(14, 'cstime'),
    priority: int(15, 'priority'),
    nice: int(16, 'nice'),
    numThreads: int(17, 'num_threads'),
    starttime: int(19, 'starttime'),
    vsize: parseBigIntStrict(f[20], file, 'vsize'),
    rss: int(21, 'rss'),
    rest: f.slice(REQUIRED_AFTER_COMM),
  };
}
