/**
 * /proc/PID/mountinfo: the mounts of the process's mount namespace, seen from its root
 * (fs/proc_namespace.c show_mountinfo()):
 *
 *     36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *     (1)(2)(3)   (4)   (5)         (6)       (7)     (8)(9)  (10)      (11)
 *
 * (7) is zero or more optional fields ended by the `-` separator. Paths and sources have
 * space, tab, newline and backslash written as octal escapes (`\040`).
 */
import { byteEscape } from '../../../util/byte-text.js';
import {
  excerpt,
  parseIntStrict,
  parseLines,
  ProcParseError,
  type ParsedLines,
  type ProcInput,
} from './common.js';

export interface MountInfo {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  /** The mount's root within its filesystem. */
  root: string;
  /** Relative to the reading process's root. */
  mountPoint: string;
  /** Per-mount options (rw, nosuid, relatime...). */
  mountOptions: string;
  /** Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`. */
  fields: string[];
  fsType: string;
  /** Filesystem-specific source, `none` when there is none. */
  source: string;
  /** Per-superblock options. */
  superOptions: string;
}

/**
 * Undoes the kernel's octal escapes (`\040` → space) in byte text, where the kernel's
 * backslash reads `\x5c` (`\x5c040`). The kernel escapes only space, tab, newline and
 * backslash (mangle()), so each becomes that ASCII character, a backslash `\x5c` again.
 */
export function unescapeMountField(s: string): string {
  return s.replace(/\\x5c([0-7]{3})/g, (m, oct: string) => {
    const n = parseInt(oct, 8);
    if (n > 0xff) return m;
    return n === 0x5c || n >= 0x80 ? byteEscape(n) : String.fromCharCode(n);
  });
}

const DEV_RE = /^(\d{1,10}):(\d{1,10})$/;

/** Parses mountinfo line by line; a bad line becomes an error, never an exception. */
export function parseMountInfo(input: ProcInput, file = 'mountinfo'): ParsedLines<MountInfo> {
  return parseLines(input, file, parseMountLine);
}

function parseMountLine(line: string, where: string): MountInfo {
  const f = line.split(' ').filter((x) => x !== '');
  const sep = f.indexOf('-', 6);
  if (f.length < 10 || sep < 0 || f.length - sep < 3) {
    throw new ProcParseError(where, `not a mountinfo line: ${excerpt(line)}`);
  }
  const dev = DEV_RE.exec(f[2]);
  if (!dev) throw new ProcParseError(where, `bad MAJOR:MINOR ${excerpt(f[2])}`);
  return {
    mountId: parseIntStrict(f[0], where, 'mount id'),
    parentId: parseIntStrict(f[1], where, 'parent id'),
    major: parseIntStrict(dev[1], where, 'major'),
    minor: parseIntStrict(dev[2], where, 'minor'),
    root: unescapeMountField(f[3]),
    mountPoint: unescapeMountField(f[4]),
    mountOptions: f[5],
    fields: f.slice(6, sep),
    fsType: unescapeMountField(f[sep + 1]),
    source: unescapeMountField(f[sep + 2]),
    superOptions: f.slice(sep + 3).join(' '),
  };
}
