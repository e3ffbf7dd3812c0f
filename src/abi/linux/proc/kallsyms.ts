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
import { excerpt, ProcParseError, type ProcInput } from './common.js';
import { bytesToText } from '../../../util/byte-text.js';

export interface KernelSymbol {
  address: bigint;
  /** nm-style type letter: T/t text, D/d data, B/b bss, R/r read-only... */
  type: string;
  name: string;
  /** The module (or pseudo-module) in brackets; '' for the core kernel. */
  module: string;
}

export interface ParsedKallsyms {
  symbols: KernelSymbol[];
  errors: ProcParseError[];
  /** Every address printed was 0: the reader may not see kernel addresses. */
  hidden: boolean;
}

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
