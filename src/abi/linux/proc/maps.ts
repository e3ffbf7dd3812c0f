/**
 * /proc/PID/maps: the memory mappings of a process (fs/proc/task_mmu.c show_map_vma()):
 *
 *     7f951a98c000-7f951a98d000 r--s 00000000 00:18 2          /mnt/evidence/case-notes.txt
 *     start        end          perm pgoff    dev   inode      path (padded to column 73)
 *
 * Addresses, the page offset and major:minor are hex; the inode is decimal. The path is
 * the rest of the line: a file path (newlines in it escaped as `\012`, a ` (deleted)`
 * suffix for an unlinked file), `[heap]`, `[stack]`, `[vdso]`, `[anon:name]`, or nothing.
 */
import { excerpt, ProcParseError, toText, type ParsedLines, type ProcInput } from './common.js';

export interface MapEntry {
  start: bigint;
  end: bigint;
  /** `rwxp` / `r--s`: read, write, execute, private or shared. */
  flags: string;
  pgoff: bigint;
  major: number;
  minor: number;
  inode: bigint;
  path: string;
}

const MAP_RE =
  /^([0-9a-f]{1,16})-([0-9a-f]{1,16}) ([r-][w-][x-][ps]) ([0-9a-f]{1,16}) ([0-9a-f]{1,8}):([0-9a-f]{1,8}) (\d{1,20})(?: +(.*))?$/;

/** Parses maps line by line; a bad line becomes an error, never an exception. */
export function parseMaps(input: ProcInput, file = 'maps'): ParsedLines<MapEntry> {
  const entries: MapEntry[] = [];
  const errors: ProcParseError[] = [];
  toText(input)
    .split('\n')
    .forEach((line, i) => {
      if (line === '') return;
      const m = MAP_RE.exec(line);
      if (!m) {
        errors.push(new ProcParseError(`${file}:${i + 1}`, `not a maps line: ${excerpt(line)}`));
        return;
      }
      entries.push({
        start: BigInt('0x' + m[1]),
        end: BigInt('0x' + m[2]),
        flags: m[3],
        pgoff: BigInt('0x' + m[4]),
        major: parseInt(m[5], 16),
        minor: parseInt(m[6], 16),
        inode: BigInt(m[7]),
        path: m[8] ?? '',
      });
    });
  return { entries, errors };
}
