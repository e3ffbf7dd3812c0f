/**
 * /proc/kallsyms (kernel/kallsyms.c s_show): `ADDRESS TYPE NAME[\t[MODULE]]` lines. The
 * address is printed as zeros to readers kptr_restrict hides kernel pointers from (a
 * root reader with CAP_SYSLOG and kptr_restrict < 2 sees real ones). The type is nm's
 * letter (T/t text, D/d data, B/b bss, R/r read-only, W/w weak, A absolute...); lower
 * case is a local symbol.
 */
import { toText, type ProcInput } from './common.js';

export interface KallsymsEntry {
  address: bigint;
  type: string;
  name: string;
  /** The module in brackets after a tab; undefined for the kernel image. */
  module?: string;
}

/** What nm's type letters mean, by lower-case letter. */
export const KALLSYMS_TYPES: Readonly<Record<string, string>> = Object.freeze({
  a: 'absolute',
  b: 'bss (uninitialised data)',
  d: 'initialised data',
  r: 'read-only data',
  t: 'text (code)',
  v: 'weak object',
  w: 'weak symbol',
  u: 'unique global',
  n: 'debugging',
  '?': 'unknown',
});

const LINE = /^([0-9a-fA-F]{1,16}) (\S) (\S+)(?:\t\[(\S+)\])?$/;

/** Parses /proc/kallsyms; a line that does not fit is returned in `bad` (1-based numbers). */
export function parseKallsyms(input: ProcInput): { entries: KallsymsEntry[]; bad: number[] } {
  const text = toText(input);
  const entries: KallsymsEntry[] = [];
  const bad: number[] = [];
  let start = 0;
  let n = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    n++;
    const line = text.slice(start, end);
    start = end + 1;
    if (line.length === 0) continue;
    const m = LINE.exec(line);
    if (!m) {
      bad.push(n);
      continue;
    }
    entries.push({ address: BigInt(`0x${m[1]}`), type: m[2], name: m[3], module: m[4] });
  }
  return { entries, bad };
}

/** One frame of /proc/PID/stack (fs/proc/base.c proc_pid_stack: `[<0>] %pB`). */
export interface StackFrame {
  /** The address printed between `[<` and `>]`: 0 on every kernel since 4.17 (hidden). */
  printed: bigint;
  /** Symbol, with offset and size into it, when the kernel could name the address. */
  symbol?: string;
  offset?: bigint;
  size?: bigint;
  module?: string;
  /** The text after the brackets, as printed. */
  text: string;
}

const FRAME = /^\[<([0-9a-fA-F]{1,16})>\] (.*)$/;
const SYM = /^([^\s+]+)\+0x([0-9a-fA-F]{1,16})\/0x([0-9a-fA-F]{1,16})(?: \[(\S+)\])?$/;

/** Parses /proc/PID/stack, innermost frame first; unparsable lines go to `bad`. */
export function parseStack(input: ProcInput): { frames: StackFrame[]; bad: number[] } {
  const frames: StackFrame[] = [];
  const bad: number[] = [];
  toText(input)
    .split('\n')
    .forEach((line, i) => {
      if (line.length === 0) return;
      const m = FRAME.exec(line);
      if (!m) {
        bad.push(i + 1);
        return;
      }
      const s = SYM.exec(m[2]);
      frames.push({
        printed: BigInt(`0x${m[1]}`),
        text: m[2],
        ...(s ? { symbol: s[1], offset: BigInt(`0x${s[2]}`), size: BigInt(`0x${s[3]}`), module: s[4] } : {}),
      });
    });
  return { frames, bad };
}

/**
 * Symbol lookup by name (and module): the address of each kallsyms name, undefined for a
 * name several symbols share (static functions of the same name in several files) or
 * for hidden (zero) addresses.
 */
export class KallsymsIndex {
  private readonly byKey = new Map<string, KallsymsEntry | null>();
  /** True when the addresses are real (the reader may see kernel pointers). */
  readonly addressesVisible: boolean;

  constructor(entries: readonly KallsymsEntry[]) {
    let nonzero = false;
    for (const e of entries) {
      if (e.address !== 0n) nonzero = true;
      const key = `${e.name}\0${e.module ?? ''}`;
      this.byKey.set(key, this.byKey.has(key) ? null : e);
    }
    this.addressesVisible = nonzero;
  }

  /** The one symbol of that name (in that module, or the kernel image when undefined). */
  lookup(name: string, module?: string): KallsymsEntry | undefined {
    return this.byKey.get(`${name}\0${module ?? ''}`) ?? undefined;
  }
}
