/**
 * /proc/iomem and /proc/ioports (kernel/resource.c r_show): a tree of resources, each
 * `START-END : NAME` indented by two spaces per level below the root. Readers without
 * CAP_SYS_ADMIN see every address as 0.
 */
import { toText, type ProcInput } from './common.js';

export interface IoResource {
  start: bigint;
  end: bigint;
  name: string;
  /** 0 for a top-level resource. */
  depth: number;
}

const LINE = /^( *)([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16}) : (.*)$/;

/** Parses /proc/iomem; lines that do not fit go to `bad` (1-based line numbers). */
export function parseIomem(input: ProcInput): { entries: IoResource[]; bad: number[] } {
  const text = toText(input);
  const entries: IoResource[] = [];
  const bad: number[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.length === 0) return;
    const m = LINE.exec(line);
    if (!m || m[1].length % 2 !== 0) {
      bad.push(i + 1);
      return;
    }
    entries.push({
      start: BigInt(`0x${m[2]}`),
      end: BigInt(`0x${m[3]}`),
      name: m[4],
      depth: m[1].length / 2,
    });
  });
  return { entries, bad };
}
