/**
 * malfind: process memory that may hold injected code (Volatility's linux.malware.malfind):
 * mappings that are writable and executable (`rwx`), and executable mappings with no file
 * behind them (anonymous `r-x`), with their first bytes as hex and as x86-64 disassembly
 * (iced-x86, a decoder compiled to WebAssembly). The [vdso] is left out, as Volatility does.
 *
 * Differences from Volatility: the protection comes from /proc/PID/maps (the VMA's
 * vm_flags as the guest kernel prints them) and the bytes from /proc/PID/mem; Volatility's
 * third criterion (a dirty page in a file-backed executable mapping, read from the page
 * tables) and its `--dump-regions` are not offered (no File output column).
 *
 * Cost: 1 batch for the process listing (none with --pid), 1 for comm and maps (+ a
 * follow-up for maps over 16 KiB), 1 for the first bytes of every suspicious region: 3.
 */
import {
  definePlugin,
  hexBytes,
  isAnonymousMapping,
  isReadableMapping,
  PID_OPTION,
  readMemory,
  readProcessMaps,
  type MapEntry,
  type Row,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  { name: 'Start', type: 'hex64', description: 'First address of the region' },
  { name: 'End', type: 'hex64', description: 'Address just past the region' },
  {
    name: 'Path',
    type: 'utf8',
    description: 'Mapped file, [heap], [stack], [anon:name]…; empty if anonymous',
  },
  { name: 'Protection', type: 'utf8', description: 'r/w/x permissions of the mapping (from /proc/PID/maps)' },
  {
    name: 'Hexdump',
    type: 'utf8',
    description: 'The first --hexdump-size bytes of the region, hex, space separated',
  },
  {
    name: 'Disasm',
    type: 'utf8',
    description: 'Those bytes as x86-64 instructions (Intel syntax), `ADDRESS: instruction` joined by "; "',
  },
] as const;

/** Largest --hexdump-size. */
export const MAX_HEXDUMP_SIZE = 4096;

/** Why a mapping is suspicious (Volatility's MaliciousFlags RWX and RX), or undefined. */
export function suspicion(m: MapEntry): 'RWX' | 'RX' | undefined {
  if (m.path === '[vdso]' || m.flags[2] !== 'x') return undefined;
  if (m.flags.startsWith('rwx')) return 'RWX';
  if (m.flags.startsWith('r-x') && isAnonymousMapping(m)) return 'RX';
  // Writable and executable but not readable (-wx) is as suspicious as rwx.
  if (m.flags[1] === 'w') return 'RWX';
  return undefined;
}

type Iced = typeof import('iced-x86');
let icedModule: Promise<Iced> | undefined;

/**
 * iced-x86, loaded on first use: it compiles a WebAssembly module when imported, which
 * every other command would otherwise pay at start-up.
 */
export function loadDisassembler(): Promise<Iced> {
  icedModule ??= import('iced-x86').then((m) => ((m as { default?: Iced }).default ?? m) as Iced);
  return icedModule;
}

/**
 * x86-64 disassembly of `code` at `ip` (Intel syntax): `0x7f…: xor rax,rax; …`. A trailing
 * instruction cut off by the end of the bytes is shown as `(bad)`, as the decoder says.
 * `iced` is {@link loadDisassembler}'s module.
 */
export function disassemble(iced: Iced, code: Uint8Array, ip: bigint): string {
  const decoder = new iced.Decoder(64, code, iced.DecoderOptions.None);
  const formatter = new iced.Formatter(iced.FormatterSyntax.Intel);
  try {
    decoder.ip = ip;
    const parts: string[] = [];
    while (decoder.canDecode) {
      const ins = decoder.decode();
      try {
        parts.push(`0x${ins.ip.toString(16)}: ${formatter.format(ins)}`);
      } finally {
        ins.free();
      }
    }
    return parts.join('; ');
  } finally {
    formatter.free();
    decoder.free();
  }
}

export const malfind = definePlugin({
  name: 'malfind',
  volatilityName: 'linux.malware.malfind',
  description:
    'Lists process memory that may hold injected code (writable+executable or anonymous executable), with hex and disassembly',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    'hexdump-size': {
      type: 'integer',
      default: 64,
      description: `Bytes shown for each region (default 64, at most ${MAX_HEXDUMP_SIZE})`,
    },
  },
  async run(ctx) {
    const size = ctx.options['hexdump-size'];
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_HEXDUMP_SIZE)
      throw new RangeError(`malfind: --hexdump-size must be 1..${MAX_HEXDUMP_SIZE}, got ${size}`);
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const procs = await readProcessMaps(ctx, pids);
    const found: { pid: number; comm: string; map: MapEntry }[] = [];
    for (const p of procs)
      for (const map of p.maps) if (suspicion(map)) found.push({ pid: p.pid, comm: p.comm, map });
    ctx.progress(`${found.length} suspicious regions in ${procs.length} processes`);
    const iced = await loadDisassembler();
    const reads = await readMemory(
      ctx,
      found.map((f) => ({
        pid: f.pid,
        address: f.map.start,
        size: Number(BigInt(size) < f.map.end - f.map.start ? BigInt(size) : f.map.end - f.map.start),
      })),
    );
    return found.map((f, i): Row<typeof columns> => {
      const r = reads[i];
      const why =
        r.error?.message ?? (isReadableMapping(f.map) ? 'no bytes returned' : 'mapping not readable');
      const ok = r.data.length > 0;
      return {
        PID: f.pid,
        Process: f.comm,
        Start: f.map.start,
        End: f.map.end,
        Path: f.map.path,
        Protection: f.map.flags.slice(0, 3),
        Hexdump: ok ? hexBytes(r.data) : unreadable(why),
        Disasm: ok ? disassemble(iced, r.data, f.map.start) : unreadable(why),
      };
    });
  },
});
