/**
 * The kernel log as syslog(SYSLOG_ACTION_READ_ALL) returns it (kernel/printk/printk.c
 * record_print_text()): one line per line of each record, every line with the record's
 * prefix
 *
 *     <6>[    0.000000] Linux version 6.1.0 ...
 *     <4>[    1.234567][    T1] text        (CONFIG_PRINTK_CALLER)
 *     <6>text                               (printk.time=0)
 *
 * `<N>` is facility << 3 | level. A line without the `<N>` prefix can only be a piece of
 * the line before it (a hostile or corrupted log): it is glued back to that line.
 */

export interface KmsgLine {
  /** Priority 0 (emerg) .. 7 (debug); undefined for a line with no prefix at all. */
  level?: number;
  facility?: number;
  /** Seconds since boot, when the kernel prints times. */
  timestamp?: number;
  /** `T1` (task id) or `C0` (CPU), with CONFIG_PRINTK_CALLER. */
  caller?: string;
  message: string;
}

/** syslog facility names, indexed by facility number. */
export const SYSLOG_FACILITIES: readonly string[] = [
  'kern',
  'user',
  'mail',
  'daemon',
  'auth',
  'syslog',
  'lpr',
  'news',
  'uucp',
  'cron',
  'authpriv',
  'ftp',
  '',
  '',
  '',
  '',
  'local0',
  'local1',
  'local2',
  'local3',
  'local4',
  'local5',
  'local6',
  'local7',
];

const LINE_RE = /^<(\d{1,5})>(?:\[ *(\d{1,12})\.(\d{6})\])?(?:\[ *([TC]\d{1,10})\])?/;

/** Parses the text of a syslog READ_ALL; never throws. */
export function parseKmsg(text: string): KmsgLine[] {
  const out: KmsgLine[] = [];
  const parts = text.split('\n');
  if (parts[parts.length - 1] === '') parts.pop();
  for (const line of parts) {
    const m = LINE_RE.exec(line);
    if (!m) {
      const prev = out[out.length - 1];
      if (prev) prev.message += '\n' + line;
      else out.push({ message: line });
      continue;
    }
    const prio = Number(m[1]);
    let rest = line.slice(m[0].length);
    // The kernel writes one space between the prefix and the text when it prints a time or caller.
    if ((m[2] !== undefined || m[4] !== undefined) && rest.startsWith(' ')) rest = rest.slice(1);
    out.push({
      level: prio & 7,
      facility: prio >> 3,
      ...(m[2] !== undefined ? { timestamp: Number(m[2]) + Number(m[3]) / 1e6 } : {}),
      ...(m[4] !== undefined ? { caller: m[4] } : {}),
      message: rest,
    });
  }
  return out;
}
