/**
 * The tracing files that name kernel hooks (pure parsers, hostile input):
 *
 * - tracefs `enabled_functions` and `touched_functions` (kernel/trace/ftrace.c, t_show with
 *   FTRACE_ITER_ENABLED / FTRACE_ITER_TOUCHED): one line per function with ftrace callbacks
 *   attached (touched: attached at some time since boot, 6.4+):
 *       %ps (count) R I D [O M]\ttramp: %pS (%pS) ->%pS\n\tdirect-->%pS
 *   The function is `name` or `name [module]` (%ps); R = saves regs, I = may modify the IP
 *   (a hook that diverts the function), D = a direct call (BPF trampolines). `tramp:` names
 *   the callback's trampoline and the ops' function (%pS: `sym+0xoff/0xsize [module]`, or
 *   a bare address when nothing symbolises it); `ops:` (6.6+, CALL_OPS) the same for the
 *   ops; ` ->` what the trampoline calls; `direct-->` the direct call's target.
 * - debugfs `kprobes/list` (kernel/kprobes.c, report_probe):
 *       %px  k|r  sym+0xoff  [module of the probed address] [GONE][DISABLED][OPTIMIZED][FTRACE]
 *   The address is all zeros to a reader without kallsyms rights.
 * - tracefs `kprobe_events` (kernel/trace/trace_kprobe.c, probes_seq_show):
 *       p|r[:MAXACTIVE]:GROUP/EVENT SYM[+OFF]|MEMADDR [FETCHARGS]
 */
import { parseLines, ProcParseError, toText, type ParsedLines, type ProcInput } from './common.js';

/** A `%pS`/`%ps` rendering: symbol, offset, size and module, or a bare address. */
export interface PrintedSymbol {
  /** The text as the kernel printed it. */
  text: string;
  name?: string;
  offset?: bigint;
  module?: string;
  /** When the kernel printed a bare address (nothing symbolised it). */
  address?: bigint;
}

const SYM_RE = /^([\w.$]{1,256})(?:\+0x([0-9a-f]{1,16})(?:\/0x[0-9a-f]{1,16})?)?(?: \[([\w.-]{1,64})\])?$/;
const ADDR_RE = /^(?:0x)?([0-9a-f]{16})$/;

/** Parses one %pS / %ps rendering; unknown shapes keep only `text`. */
export function parsePrintedSymbol(text: string): PrintedSymbol {
  const t = text.trim();
  const a = ADDR_RE.exec(t);
  if (a) return { text: t, address: BigInt(`0x${a[1]}`) };
  const m = SYM_RE.exec(t);
  if (!m) return { text: t };
  return {
    text: t,
    name: m[1],
    ...(m[2] !== undefined ? { offset: BigInt(`0x${m[2]}`) } : {}),
    ...(m[3] !== undefined ? { module: m[3] } : {}),
  };
}

/** One callback of an ftrace line: a trampoline (or ops) and the function it runs. */
export interface FtraceCallback {
  kind: 'tramp' | 'ops';
  /** The trampoline (tramp:) or the ftrace_ops structure (ops:). */
  holder: PrintedSymbol;
  /** ops->func: the callback function (what attributes the hook to its owner). */
  func: PrintedSymbol;
  /** ` ->` after it: what the trampoline calls. */
  calls?: PrintedSymbol;
}

/** One line (with its continuation) of enabled_functions / touched_functions. */
export interface FtraceRecord {
  /** The function with callbacks attached. */
  function: string;
  /** Its module, when %ps named one. */
  module?: string;
  /** Number of ftrace_ops attached. */
  count: number;
  /** Flag letters as printed: R, I, D, O, M. */
  flags: string[];
  callbacks: FtraceCallback[];
  /** ` ->` without a trampoline (the shared list function, or a direct/ops caller). */
  calls?: PrintedSymbol;
  /** `direct-->`: a direct call's target. */
  direct?: PrintedSymbol;
}

const HEAD_RE = /^([\w.$]{1,256})(?: \[([\w.-]{1,64})\])? \((\d{1,9})\)((?: +[A-Z])*) *$/;
const CALLBACK_RE = /^(tramp|ops): (.+?) \((.+?)\)(?: ->(.+))?$/;

/**
 * enabled_functions or touched_functions → records. Bad lines become errors; the
 * `#### all functions enabled ####` banner and blank lines are skipped.
 */
export function parseFtraceFunctions(
  input: ProcInput,
  file = 'enabled_functions',
): ParsedLines<FtraceRecord> {
  // Continuation lines (`\tdirect-->…`) belong to the line above.
  const joined = toText(input).replace(/\n\t(?=direct-->)/g, '\t');
  return parseLines(
    joined,
    file,
    (line, where) => {
      const parts = line.split('\t');
      // Without a trampoline, add_trampoline_func's ` ->%pS` follows the flags on the same segment.
      const arrow = parts[0]!.indexOf(' ->');
      if (arrow >= 0) {
        parts.splice(1, 0, parts[0]!.slice(arrow + 1));
        parts[0] = parts[0]!.slice(0, arrow);
      }
      const head = HEAD_RE.exec(parts[0]!);
      if (!head) throw new ProcParseError(where, `not a function line: ${JSON.stringify(line.slice(0, 80))}`);
      const rec: FtraceRecord = {
        function: head[1]!,
        ...(head[2] !== undefined ? { module: head[2] } : {}),
        count: Number(head[3]),
        flags: head[4]!.trim().split(/ +/).filter(Boolean),
        callbacks: [],
      };
      for (const raw of parts.slice(1)) {
        const p = raw.trim();
        if (p.startsWith('direct-->')) {
          rec.direct = parsePrintedSymbol(p.slice('direct-->'.length));
          continue;
        }
        if (p.startsWith('->')) {
          rec.calls = parsePrintedSymbol(p.slice(2));
          continue;
        }
        const m = CALLBACK_RE.exec(p);
        if (m) {
          rec.callbacks.push({
            kind: m[1] as 'tramp' | 'ops',
            holder: parsePrintedSymbol(m[2]!),
            func: parsePrintedSymbol(m[3]!),
            ...(m[4] !== undefined ? { calls: parsePrintedSymbol(m[4]) } : {}),
          });
          continue;
        }
        // `tramp: ERROR!` and shapes of kernels to come: kept as an unparsed callback.
        if (p.length > 0)
          rec.callbacks.push({
            kind: 'tramp',
            holder: { text: p.slice(0, 200) },
            func: { text: '' },
          });
      }
      return rec;
    },
    (line) => line.startsWith('####'),
  );
}

/** One registered kprobe of debugfs kprobes/list. */
export interface KprobeRecord {
  /** Probed address (0 when hidden from the reader). */
  address: bigint;
  kind: 'kprobe' | 'kretprobe';
  /** The probed place as printed (`sym+0xoff`, or %pS). */
  where: PrintedSymbol;
  /** Module of the probed address, when it is in one. */
  module?: string;
  /** GONE, DISABLED, OPTIMIZED, FTRACE. */
  flags: string[];
}

const KPROBE_RE = /^([0-9a-f]{8,16})\s+([kr])\s+(\S+)(.*)$/;

/** kprobes/list → records. */
export function parseKprobeList(input: ProcInput, file = 'kprobes/list'): ParsedLines<KprobeRecord> {
  return parseLines(toText(input), file, (line, where) => {
    const m = KPROBE_RE.exec(line.trim());
    if (!m) throw new ProcParseError(where, `not a kprobe line: ${JSON.stringify(line.slice(0, 80))}`);
    const tail = m[4]!.trim();
    const flags = [...tail.matchAll(/\[([A-Z]{1,16})\]/g)].map((f) => f[1]!);
    const mod = tail.replace(/\[[A-Z]{1,16}\]/g, '').trim();
    return {
      address: BigInt(`0x${m[1]}`),
      kind: m[2] === 'r' ? 'kretprobe' : 'kprobe',
      where: parsePrintedSymbol(m[3]!),
      ...(/^[\w.-]{1,64}$/.test(mod) ? { module: mod } : {}),
      flags,
    };
  });
}

/** One dynamic probe event of tracefs kprobe_events. */
export interface KprobeEvent {
  kind: 'kprobe' | 'kretprobe';
  /** GROUP/EVENT. */
  event: string;
  /** SYM[+OFF] or MOD:SYM or an address, as written. */
  target: string;
}

/** kprobe_events → records. */
export function parseKprobeEvents(input: ProcInput, file = 'kprobe_events'): ParsedLines<KprobeEvent> {
  return parseLines(toText(input), file, (line, where) => {
    const m = /^([pr])(?:\d{1,6})?:(\S{1,128}) (\S{1,256})/.exec(line);
    if (!m) throw new ProcParseError(where, `not a probe event: ${JSON.stringify(line.slice(0, 80))}`);
    return { kind: m[1] === 'r' ? 'kretprobe' : 'kprobe', event: m[2]!, target: m[3]! };
  });
}
