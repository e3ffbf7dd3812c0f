/**
 * /proc/PID/cgroup (kernel/cgroup/cgroup.c, proc_cgroup_show): one line per hierarchy,
 * `hierarchy-ID:controller-list:cgroup-path`. On cgroup v2 the unified hierarchy is the
 * line `0::PATH`; cgroup v1 hierarchies have their own lines. Paths are relative to the
 * reader's cgroup namespace: a task outside it shows as `/../..`.
 */
import { excerpt, ProcParseError, toText, type ProcInput } from './common.js';

export interface CgroupLine {
  hierarchy: number;
  /** Controllers bound to the hierarchy (`cpu,cpuacct`); empty for v2 and named v1 hierarchies. */
  controllers: string;
  path: string;
}

export interface PidCgroup {
  lines: CgroupLine[];
  /** The path in the unified (v2) hierarchy, when there is one (`0::/system.slice/x.service`). */
  unified?: string;
}

const LINE_RE = /^(\d{1,10}):([^:]*):(.*)$/;

/**
 * Parses the file. A path may contain ':' (only the first two separate fields) and never
 * a newline (cgroup names cannot hold one). Throws ProcParseError on a line that is not
 * `ID:controllers:path` or on an empty file.
 */
export function parsePidCgroup(input: ProcInput, file = 'cgroup'): PidCgroup {
  const text = toText(input);
  const lines: CgroupLine[] = [];
  for (const raw of text.split('\n')) {
    if (raw.length === 0) continue;
    const m = LINE_RE.exec(raw);
    if (!m || !m[3].startsWith('/'))
      throw new ProcParseError(file, `not 'ID:controllers:/path': ${excerpt(raw)}`);
    lines.push({ hierarchy: Number(m[1]), controllers: m[2], path: m[3] });
  }
  if (lines.length === 0) throw new ProcParseError(file, 'empty');
  const v2 = lines.find((l) => l.hierarchy === 0 && l.controllers === '');
  return { lines, ...(v2 ? { unified: v2.path } : {}) };
}
