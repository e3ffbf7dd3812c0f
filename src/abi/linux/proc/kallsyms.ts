/**
 * /proc/kallsyms: one symbol per line, as kernel/kallsyms.c s_show() prints it:
 *
 *     ffffffff81000000 T _stext
 *     ffffffffc0201000 t dummy_setup\t[dummy]
 *
 * address (16 hex digits; all zeros to readers kallsyms_show_value() refuses), type
 * letter, name, and for module symbols a tab and `[module]`. Pseudo-modules name code the
 * kernel put in the module area itself: `[__builtin__ftrace]` (ftrace trampolines),
 * `[__builtin__kprobes]` (kprobe instruction slots), `[bpf]` (JIT-compiled BPF). The
 * symbols of a module's freed init functions stay listed under its name through ftrace's
 * mod map (kernel/trace/ftrace.c ftrace_mod_get_kallsym).
 */
import { excerpt, ProcParseError, toText, type ProcInput } from './common.js';
import { bytesToText } from '../../../util/byte-text.js';

export interface KernelSymbol {
  address: bigint;
  /** nm-style type letter: T/t text, D/d data, B/b bss, R/r read-only... */
  type: string;
  name: string;
  /** The module (or pseudo-module) in brackets; '' for the core kernel. */
  module: string;
}

/** One /proc/kallsyms line (the name p17a's plugins use). */
export type KallsymsEntry = KernelSymbol;

export interface ParsedKallsyms {
  symbols: KernelSymbol[];
  errors: ProcParseError[];
  /** Every address printed was 0: the reader may not see kernel addresses. */
  hidden: boolean;
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

/** Most bad lines reported one by one (the rest are counted in the last error). */
const MAX_ERRORS = 20;
const LINE_RE = /^([0-9a-f]{8,16}) ([A-Za-z?]) ([^\s[\]]{1,512})(?:\t\[([\w.-]{1,64})\])?$/;

/** Parses /proc/kallsyms; bad lines become errors (at most MAX_ERRORS), never exceptions. */
export function parseKallsyms(input: ProcInput, file = '/proc/kallsyms'): ParsedKallsyms {
  const text = typeof input === 'string' ? input : bytesToText(input);
  const symbols: KernelSymbol[] = [];
  const errors: ProcParseError[] = [];
  let bad = 0;
  let nonzero = false;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') continue;
    const m = LINE_RE.exec(line);
    if (!m) {
      if (++bad <= MAX_ERRORS)
        errors.push(new ProcParseError(`${file}:${i + 1}`, `bad symbol line ${excerpt(line)}`));
      continue;
    }
    const address = BigInt(`0x${m[1]}`);
    if (address !== 0n) nonzero = true;
    symbols.push({ address, type: m[2]!, name: m[3]!, module: m[4] ?? '' });
  }
  if (bad > MAX_ERRORS) errors.push(new ProcParseError(file, `${bad - MAX_ERRORS} more bad lines`));
  return { symbols, errors, hidden: symbols.length > 0 && !nonzero };
}

/** Pseudo-modules of kernel-made code in the module area (not loadable modules). */
export function isPseudoModule(module: string): boolean {
  return module.startsWith('__builtin__') || module === 'bpf';
}

/**
 * Address → symbol lookups over a parsed symbol list: the symbol at or below the address
 * (like %pS). Built once; lookups are binary searches.
 */
export class SymbolIndex {
  private readonly sorted: KernelSymbol[];
  constructor(symbols: readonly KernelSymbol[]) {
    this.sorted = symbols
      .filter((s) => s.address !== 0n)
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }

  /** The closest symbol at or below `address`, and the offset into it; undefined below the first. */
  lookup(address: bigint): { symbol: KernelSymbol; offset: bigint } | undefined {
    let lo = 0;
    let hi = this.sorted.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid]!.address <= address) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return undefined;
    const symbol = this.sorted[found]!;
    return { symbol, offset: address - symbol.address };
  }

  /** Symbols with address in [start, end). */
  within(start: bigint, end: bigint): KernelSymbol[] {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid]!.address < start) lo = mid + 1;
      else hi = mid;
    }
    const out: KernelSymbol[] = [];
    for (let i = lo; i < this.sorted.length && this.sorted[i]!.address < end; i++) out.push(this.sorted[i]!);
    return out;
  }
}

/** `name+0x1f/[module]` as the kernel's %pS prints it (without the size). */
export function formatSymbol(hit: { symbol: KernelSymbol; offset: bigint } | undefined): string {
  if (!hit) return '';
  const off = hit.offset === 0n ? '' : `+0x${hit.offset.toString(16)}`;
  return `${hit.symbol.name}${off}${hit.symbol.module ? ` [${hit.symbol.module}]` : ''}`;
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
  private readonly byKey = new Map<string, KernelSymbol | null>();
  /** True when the addresses are real (the reader may see kernel pointers). */
  readonly addressesVisible: boolean;

  constructor(entries: readonly KernelSymbol[]) {
    let nonzero = false;
    for (const e of entries) {
      if (e.address !== 0n) nonzero = true;
      const key = `${e.name}\0${e.module}`;
      this.byKey.set(key, this.byKey.has(key) ? null : e);
    }
    this.addressesVisible = nonzero;
  }

  /** The one symbol of that name (in that module; the kernel image when undefined or ''). */
  lookup(name: string, module?: string): KernelSymbol | undefined {
    return this.byKey.get(`${name}\0${module ?? ''}`) ?? undefined;
  }
}
