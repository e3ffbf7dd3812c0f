/**
 * bash: the command history still in the memory of each bash process (Volatility's
 * linux.bash), found without symbols the way Volatility does, by the shape of GNU
 * readline's history entries (lib/readline/history.h):
 *
 *     typedef struct _hist_entry { char *line; char *timestamp; histdata_t data; } HIST_ENTRY;
 *
 * add_history() gives every entry a malloc'ed timestamp string: `#<epoch seconds>` once
 * HISTTIMEFORMAT is set (bash then sets history_comment_char to '#', variables.c
 * sv_histtimefmt), else the same digits behind a NUL. So: (1) read the process's heap and
 * anonymous writable mappings through /proc/PID/mem; (2) find the timestamp strings
 * (`#` + digits + NUL anywhere; NUL + 9-11 digits + NUL at a 16-byte malloc boundary);
 * (3) find the 8-byte words pointing at one of them: each is a HIST_ENTRY's `timestamp`
 * field, the word before it its `line`; (4) keep the entries whose line points into a
 * readable mapping of the process at a NUL-terminated text string. Entries freed but not
 * yet overwritten are found too, as with Volatility.
 *
 * Processes scanned: comm bash, sh or dash (Volatility's list) or beginning with `bash`
 * (bash-static). A busybox `sh` keeps its history in another shape and yields no rows.
 * CommandTime is the timestamp's epoch seconds; TimeSource says whether HISTTIMEFORMAT's
 * `#` was there.
 *
 * Bounded by `--max-scan` MiB per run (default 128, within `--max-read`); a scan cut short
 * is named in a warning.
 *
 * Cost: 1 batch for the listing (none with --pid), 1 for comm and maps, ⌈heap bytes /
 * 3 MiB⌉ for the heaps, 1 for the lines that point outside what was read.
 */
import {
  bytesToText,
  definePlugin,
  describeScanGaps,
  isAnonymousMapping,
  MAX_SCAN_OPTION,
  maxScanBytes,
  PID_OPTION,
  readMemory,
  readProcessMaps,
  scanMemory,
  type MapEntry,
  type Row,
  type ScanTarget,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  {
    name: 'CommandTime',
    type: 'timestamp_ms',
    description: 'When bash added the line to its history (the entry timestamp, whole seconds)',
  },
  { name: 'Command', type: 'utf8', description: 'The history line, as byte text' },
  { name: 'HIST_ENTRY', type: 'hex64', description: 'Address of the history entry in the process' },
  {
    name: 'TimeSource',
    type: 'utf8',
    description: "'#' when HISTTIMEFORMAT made bash write '#<epoch>', 'nul' for the digits behind a NUL",
  },
] as const;

/** Longest history line returned (longer ones are cut there). */
const MAX_LINE = 64 << 10;
/** Bytes read at a line pointer outside the scanned memory. */
const LINE_READ = 4096;
/** Timestamps accepted: 2000-01-01 … 2100-01-01 (a random digit string is not a time). */
const MIN_EPOCH = 946684800;
const MAX_EPOCH = 4102444800;

const SHELL_COMMS = new Set(['bash', 'sh', 'dash']);

/** True for the processes bash scans (Volatility's comm list, plus bash-static's comm). */
export function isShellComm(comm: string): boolean {
  return SHELL_COMMS.has(comm) || comm.startsWith('bash');
}

/** The heap and anonymous writable memory of a process: where malloc puts history entries. */
export function isHeapLike(m: MapEntry): boolean {
  if (m.flags[0] !== 'r' || m.flags[1] !== 'w') return false;
  return m.path === '[heap]' || (isAnonymousMapping(m) && (m.path === '' || m.path.startsWith('[anon:')));
}

interface Held {
  start: bigint;
  data: Uint8Array;
}

/** What the heap scan found: a candidate HIST_ENTRY. */
export interface HistCandidate {
  entry: bigint;
  line: bigint;
  seconds: number;
  source: '#' | 'nul';
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

/**
 * Timestamp strings in `held` (address → epoch seconds and kind): `#` + 1..20 digits + NUL,
 * or at a 16-byte boundary NUL + 9..11 digits + NUL. Pure.
 */
export function findTimestamps(held: readonly Held[]): Map<number, { seconds: number; source: '#' | 'nul' }> {
  const out = new Map<number, { seconds: number; source: '#' | 'nul' }>();
  for (const h of held) {
    const d = h.data;
    const base = Number(h.start);
    for (let i = d.indexOf(0x23); i >= 0 && i < d.length; i = d.indexOf(0x23, i + 1)) {
      let j = i + 1;
      while (j < d.length && j - i <= 20 && isDigit(d[j])) j++;
      if (j === i + 1 || j >= d.length || d[j] !== 0) continue;
      const seconds = Number(String.fromCharCode(...d.subarray(i + 1, j)));
      if (seconds >= MIN_EPOCH && seconds <= MAX_EPOCH) out.set(base + i, { seconds, source: '#' });
    }
    // Without HISTTIMEFORMAT: the string starts with NUL, at a malloc boundary.
    for (let i = (16 - (base % 16)) % 16; i + 11 < d.length; i += 16) {
      if (d[i] !== 0 || !isDigit(d[i + 1])) continue;
      let j = i + 1;
      while (j < d.length && j - i <= 11 && isDigit(d[j])) j++;
      if (j - i - 1 < 9 || j >= d.length || d[j] !== 0) continue;
      const seconds = Number(String.fromCharCode(...d.subarray(i + 1, j)));
      if (seconds >= MIN_EPOCH && seconds <= MAX_EPOCH && !out.has(base + i))
        out.set(base + i, { seconds, source: 'nul' });
    }
  }
  return out;
}

/**
 * HIST_ENTRY candidates: 8-byte aligned words equal to a timestamp address, with a
 * non-null line pointer in the word before. Pure.
 */
export function findEntries(
  held: readonly Held[],
  stamps: ReadonlyMap<number, { seconds: number; source: '#' | 'nul' }>,
): HistCandidate[] {
  const out: HistCandidate[] = [];
  for (const h of held) {
    const d = h.data;
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const base = Number(h.start);
    for (let o = ((8 - (base % 8)) % 8) + 8; o + 8 <= d.length; o += 8) {
      const hi = dv.getUint32(o + 4, true);
      if (hi > 0x7fff) continue; // user addresses are below 2^47
      const v = hi * 0x100000000 + dv.getUint32(o, true);
      if (v < 0x10000) continue; // below vm.mmap_min_addr: never a pointer
      const ts = stamps.get(v);
      if (!ts) continue;
      const line = dv.getBigUint64(o - 8, true);
      if (line === 0n) continue;
      out.push({ entry: BigInt(base + o - 8), line, seconds: ts.seconds, source: ts.source });
    }
  }
  return out;
}

/** The NUL-terminated string at `addr` from held memory, or undefined when not held whole. */
function heldString(held: readonly Held[], addr: bigint): Uint8Array | undefined {
  for (const h of held) {
    const off = addr - h.start;
    if (off < 0n || off >= BigInt(h.data.length)) continue;
    const rest = h.data.subarray(Number(off), Number(off) + MAX_LINE);
    const nul = rest.indexOf(0);
    return nul >= 0 ? rest.subarray(0, nul) : undefined;
  }
  return undefined;
}

/** A history line: non-empty text without control bytes but tab and newline. */
export function plausibleLine(b: Uint8Array): boolean {
  if (b.length === 0) return false;
  for (const c of b) if ((c < 0x20 && c !== 0x09 && c !== 0x0a) || c === 0x7f) return false;
  return true;
}

export const bash = definePlugin({
  name: 'bash',
  volatilityName: 'linux.bash',
  description: 'Recovers the bash command history from the memory of bash processes',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION, 'max-scan': MAX_SCAN_OPTION },
  async run(ctx) {
    const maxScanMiB = ctx.options['max-scan'];
    const maxBytes = maxScanBytes(maxScanMiB);
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const procs = (await readProcessMaps(ctx, pids)).filter((p) => isShellComm(p.comm));
    const targets: ScanTarget[] = [];
    for (const p of procs)
      for (const region of p.maps) if (isHeapLike(region)) targets.push({ pid: p.pid, comm: p.comm, region });
    ctx.progress(`scanning the heaps of ${procs.length} shell processes`);
    const held = new Map<number, Held[]>();
    const it = scanMemory(ctx, targets, { maxBytes, lookahead: 0, label: 'bash heap scan' });
    for (;;) {
      const next = await it.next();
      if (next.done) {
        for (const line of describeScanGaps(next.value, maxScanMiB)) ctx.warn(line);
        break;
      }
      const c = next.value;
      const list = held.get(c.target.pid) ?? [];
      list.push({ start: c.address, data: c.data.subarray(0, c.reportable) });
      held.set(c.target.pid, list);
    }
    interface Found extends HistCandidate {
      pid: number;
      comm: string;
      text?: Uint8Array;
    }
    const found: Found[] = [];
    for (const p of procs) {
      const mem = held.get(p.pid) ?? [];
      const readable = p.maps.filter((m) => m.flags[0] === 'r');
      const seen = new Set<bigint>();
      for (const c of findEntries(mem, findTimestamps(mem))) {
        if (seen.has(c.entry) || !readable.some((m) => c.line >= m.start && c.line < m.end)) continue;
        seen.add(c.entry);
        found.push({ ...c, pid: p.pid, comm: p.comm, text: heldString(mem, c.line) });
      }
    }
    // Lines outside the scanned memory (or cut by its end): one more batch.
    const missing = found.filter((f) => f.text === undefined);
    const reads = await readMemory(
      ctx,
      missing.map((f) => ({ pid: f.pid, address: f.line, size: LINE_READ })),
    );
    reads.forEach((r, i) => {
      const nul = r.data.indexOf(0);
      if (nul >= 0) missing[i].text = r.data.subarray(0, nul);
    });
    const rows: (Row<typeof columns> & { sortKey: [number, number, bigint] })[] = [];
    for (const f of found) {
      if (!f.text || !plausibleLine(f.text)) continue;
      rows.push({
        PID: f.pid,
        Process: f.comm,
        CommandTime: new Date(f.seconds * 1000),
        Command: bytesToText(f.text),
        HIST_ENTRY: f.entry,
        TimeSource: f.source,
        sortKey: [f.pid, f.seconds, f.entry],
      });
    }
    rows.sort((a, b) => {
      const [pa, sa, ea] = a.sortKey;
      const [pb, sb, eb] = b.sortKey;
      return pa - pb || sa - sb || (ea < eb ? -1 : ea > eb ? 1 : 0);
    });
    return rows.map(({ sortKey: _k, ...row }) => row);
  },
});
