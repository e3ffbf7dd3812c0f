/**
 * Reading processes' memory through the guest kernel: `/proc/PID/mem` opened read-only by
 * the shadow (root) and read with pread64 at an offset equal to the virtual address
 * (fs/proc/base.c mem_rw → access_remote_vm: the kernel copies the target's pages, faulting
 * nothing in for writing). A page the kernel cannot read (a file mapping past its end,
 * VM_IO/VM_PFNMAP such as [vvar]) ends the read short, or fails it with EIO when it is the
 * first page. Nothing here writes: openat(O_RDONLY), pread64 and close are on the
 * read-only allowlist (src/sdk/policy.ts).
 *
 * Two shapes of reading, both bounded by the run's read budget (`--max-read`) and the
 * batch limits:
 * - {@link readMemory}: many small reads (an ELF header at each mapping start, 64 bytes of
 *   a suspicious region, a string a pointer names), one batch for all of them;
 * - {@link scanMemory}: whole regions, chunked into batches of at most `maxOutBytes`,
 *   yielded chunk by chunk (with a lookahead so matches across a chunk boundary are seen)
 *   and never held all at once; a cap on the bytes a run scans, the regions left out
 *   when it is reached are reported, never silently dropped.
 */
import { AT_FDCWD, O_CLOEXEC, O_RDONLY } from '../abi/linux/flags.js';
import { parseMaps, type MapEntry } from '../abi/linux/proc/index.js';
import type { CallRef } from './batch.js';
import { isVanished, type SyscallError } from './errors.js';
import { MAX_READ_CALL } from './limits.js';
import type { PluginContext } from './plugin.js';
import { ProcFs } from './procfs.js';
import { bytesToText } from '../util/byte-text.js';

export type { MapEntry } from '../abi/linux/proc/index.js';

/** Size of one pread64 of a scan: a read the kernel cannot finish loses at most this much. */
export const SCAN_READ_SIZE = 64 << 10;
/** Bytes a scan reads beyond each chunk so that a match across the boundary is whole. */
export const DEFAULT_SCAN_LOOKAHEAD = 4096;
/** Default cap on the bytes one scanning plugin run reads (`--max-scan`, MiB). */
export const DEFAULT_MAX_SCAN_MIB = 128;

/**
 * The `--max-scan MiB` option of the scanning plugins: the bytes of process memory one run
 * may read. When a run reaches it, the regions left are named in a warning (the table's
 * `vmi.errors` and stderr): the table is never silently short.
 */
export const MAX_SCAN_OPTION = {
  type: 'integer',
  default: DEFAULT_MAX_SCAN_MIB,
  description: `MiB of process memory one run may scan (default ${DEFAULT_MAX_SCAN_MIB}; also bounded by --max-read)`,
} as const;

/** The `--max-matches` option of the scanning plugins: rows one run returns at most. */
export const MAX_MATCHES_OPTION = {
  type: 'integer',
  default: 100_000,
  description: 'Matches reported at most (default 100000); the scan stops there with a warning',
} as const;

/** Bytes of a `--max-scan MiB` value; a RangeError for anything but 1..1048576. */
export function maxScanBytes(mib: number): number {
  if (!Number.isSafeInteger(mib) || mib < 1 || mib > 1 << 20)
    throw new RangeError(`--max-scan must be 1..1048576 MiB, got ${mib}`);
  return mib * 1048576;
}

/** `48 31 c0 …`: bytes as lowercase hex, space separated. */
export function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/** Mappings the kernel never lets /proc/PID/mem read: device memory and the legacy page above the user range. */
const NEVER_READABLE = new Set(['[vvar]', '[vvar_vclock]', '[vsyscall]']);

/** A process's mappings, as /proc/PID/maps lists them, and its name. */
export interface ProcessMaps {
  pid: number;
  /** comm, without the newline. */
  comm: string;
  maps: MapEntry[];
}

/**
 * comm and maps of each process: 1 batch (+ a follow-up for maps over 16 KiB). Processes
 * gone meanwhile are left out; other failures are warnings. Kernel threads come back with
 * no mappings.
 */
export async function readProcessMaps(ctx: PluginContext, pids: readonly number[]): Promise<ProcessMaps[]> {
  const files = await ctx.sys.readFiles(
    pids.flatMap((pid) => [
      { path: ProcFs.path(pid, 'comm'), chunkSize: 64 },
      { path: ProcFs.path(pid, 'maps'), chunkSize: ProcFs.chunkFor('maps') },
    ]),
  );
  const out: ProcessMaps[] = [];
  pids.forEach((pid, i) => {
    const comm = files[2 * i];
    const maps = files[2 * i + 1];
    if (isVanished(comm.error) || isVanished(maps.error)) return;
    if (maps.error) {
      ctx.warn(`pid ${pid}: ${maps.path}: ${maps.error.message}`);
      return;
    }
    const parsed = parseMaps(maps.data!, maps.path);
    for (const e of parsed.errors) ctx.warn(e.message);
    out.push({
      pid,
      comm: comm.error ? '' : bytesToText(comm.data!).replace(/\n$/, ''),
      maps: parsed.entries,
    });
  });
  return out;
}

/**
 * The regions a scan of these processes reads: every mapping `keep` accepts (default: every
 * readable one, as Volatility's VMA scans), process by process in PID order. `pids` empty:
 * every process (1 batch for the listing); then 1 batch for comm and maps.
 */
export async function scanTargets(
  ctx: PluginContext,
  pids: readonly number[] | undefined,
  keep: (m: MapEntry) => boolean = isReadableMapping,
): Promise<ScanTarget[]> {
  const procs = await readProcessMaps(ctx, await ctx.proc.selectPids(pids));
  const out: ScanTarget[] = [];
  for (const p of procs)
    for (const region of p.maps)
      if (isReadableMapping(region) && keep(region)) out.push({ pid: p.pid, comm: p.comm, region });
  return out;
}

/** True when /proc/PID/mem can be asked for this mapping at all (readable, not [vvar]/[vsyscall]). */
export function isReadableMapping(m: MapEntry): boolean {
  return m.flags[0] === 'r' && !NEVER_READABLE.has(m.path) && m.end > m.start && m.end <= 1n << 63n;
}

/** Anonymous memory: no file behind it (the heap, the stack, anonymous mmaps, `[anon:name]`). */
export function isAnonymousMapping(m: MapEntry): boolean {
  return m.inode === 0n && m.major === 0 && m.minor === 0;
}

/** One small read of {@link readMemory}. */
export interface MemoryRequest {
  pid: number;
  address: bigint;
  /** Bytes, at most MAX_READ_CALL. */
  size: number;
}

/** The result of one {@link MemoryRequest}: the bytes the kernel returned (possibly fewer), or why none. */
export interface MemoryRead extends MemoryRequest {
  data: Uint8Array;
  error?: SyscallError;
}

/**
 * Reads every request: per process openat /proc/PID/mem, one pread64 per request, close,
 * all in as few batches as the limits allow (one for up to ~2000 requests of 3 MiB in
 * all). Results are in request order; a failed open or read is that request's error.
 */
export async function readMemory(
  ctx: PluginContext,
  requests: readonly MemoryRequest[],
): Promise<MemoryRead[]> {
  if (requests.length === 0) return [];
  const byPid = new Map<number, number[]>();
  requests.forEach((r, i) => {
    if (!Number.isSafeInteger(r.size) || r.size <= 0 || r.size > MAX_READ_CALL)
      throw new RangeError(`readMemory: bad size ${r.size}`);
    const list = byPid.get(r.pid) ?? [];
    list.push(i);
    byPid.set(r.pid, list);
  });
  const b = ctx.sys.batch();
  const refs: { fd: CallRef; read: CallRef }[] = new Array<{ fd: CallRef; read: CallRef }>(requests.length);
  for (const [pid, idx] of byPid) {
    b.group(() => {
      const fd = b.openat(AT_FDCWD, ProcFs.path(pid, 'mem'), O_RDONLY | O_CLOEXEC);
      for (const i of idx) refs[i] = { fd, read: b.pread64(fd, requests[i].size, requests[i].address) };
      b.close(fd);
    });
  }
  await b.submit();
  return requests.map((r, i) => {
    const { fd, read } = refs[i];
    const error = fd.result().error ?? read.result().error;
    return error ? { ...r, data: new Uint8Array(0), error } : { ...r, data: read.result().data };
  });
}

/** A region of one process to scan. */
export interface ScanTarget {
  pid: number;
  comm: string;
  region: MapEntry;
}

/**
 * One piece of a scan: `data` holds the bytes from `address` on; matches that start
 * before `address + reportable` belong to this chunk, the rest of `data` is the lookahead
 * the next chunk starts with.
 */
export interface ScanChunk {
  target: ScanTarget;
  address: bigint;
  data: Uint8Array;
  reportable: number;
}

/** Options of {@link scanMemory}. */
export interface ScanOptions {
  /** Bytes the whole scan may read (the cap); the SDK's read budget bounds it too. */
  maxBytes: number;
  /** Lookahead beyond each chunk, bytes. Default DEFAULT_SCAN_LOOKAHEAD. */
  lookahead?: number;
  /** What the progress lines call the scan (`regex scan`). */
  label?: string;
}

/** What a finished scan covered. */
export interface ScanSummary {
  /** Bytes of the regions asked for. */
  totalBytes: number;
  /** Bytes read (lookahead included once per chunk). */
  readBytes: number;
  /** Bytes the kernel refused (short or failed reads), by pid. */
  unreadable: Map<number, number>;
  /** True when the cap (or the read budget) stopped the scan before the end. */
  truncated: boolean;
  /** Regions not scanned or not to their end, when truncated. */
  left: { pid: number; start: bigint; end: bigint }[];
  /** Processes whose /proc/PID/mem could not be opened, with the error. */
  failed: Map<number, SyscallError>;
}

interface Cursor {
  target: ScanTarget;
  /** Next address to read. */
  next: bigint;
}

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/**
 * Reads the targets' regions in order, in batches of at most the batch limit, and yields
 * each readable run of bytes as a {@link ScanChunk} (returns the {@link ScanSummary}).
 * Per batch: for each process touched, openat /proc/PID/mem, pread64s of SCAN_READ_SIZE,
 * close. Cost: ⌈bytes / maxOutBytes⌉ batches (3 MiB each by default) plus one per region
 * boundary that falls in a batch's last slot. The caller holds one chunk at a time.
 */
export async function* scanMemory(
  ctx: PluginContext,
  targets: readonly ScanTarget[],
  opts: ScanOptions,
): AsyncGenerator<ScanChunk, ScanSummary> {
  const lookahead = Math.max(0, opts.lookahead ?? DEFAULT_SCAN_LOOKAHEAD);
  const label = opts.label ?? 'scan';
  const totalBytes = targets.reduce((n, t) => n + Number(t.region.end - t.region.start), 0);
  const summary: ScanSummary = {
    totalBytes,
    readBytes: 0,
    unreadable: new Map(),
    truncated: false,
    left: [],
    failed: new Map(),
  };
  const budget = () => Math.min(opts.maxBytes - summary.readBytes, ctx.sys.readBytesLeft);
  const perBatch = ctx.sys.limits.maxOutBytes;
  const maxCalls = ctx.sys.limits.maxCalls;
  const queue: Cursor[] = targets.map((t) => ({ target: t, next: t.region.start }));
  let qi = 0;
  let lastProgress = 0;
  // Chunks of the batch just parsed, handed out before the next batch is planned.
  const pending: ScanChunk[] = [];
  const addUnreadable = (pid: number, n: number) =>
    summary.unreadable.set(pid, (summary.unreadable.get(pid) ?? 0) + n);
  while (qi < queue.length) {
    const room = Math.min(perBatch, budget());
    if (room < Math.min(SCAN_READ_SIZE, perBatch)) {
      summary.truncated = true;
      break;
    }
    // Plan one batch: segments [from, to) of consecutive cursors, each read in pieces.
    interface Segment {
      cur: Cursor;
      from: bigint;
      /** End of the reportable part. */
      to: bigint;
      /** End of the bytes read (to + lookahead, within the region). */
      readTo: bigint;
      pieces: { at: bigint; size: number; ref?: CallRef }[];
      fd?: CallRef;
    }
    const segments: Segment[] = [];
    let used = 0;
    let calls = 0;
    while (qi < queue.length && used < room && calls + 3 < maxCalls) {
      const cur = queue[qi];
      const end = cur.target.region.end;
      if (summary.failed.has(cur.target.pid) || cur.next >= end) {
        qi++;
        continue;
      }
      const space = room - used;
      const left = Number(end - cur.next);
      // Whole pages unless the region ends here, so chunks stay aligned as the region is.
      const fits = space - lookahead;
      const take = BigInt(Math.max(0, left <= fits ? left : fits - (fits % 4096)));
      if (take <= 0n) break;
      const to = cur.next + take;
      const readTo = to + BigInt(lookahead) < end ? to + BigInt(lookahead) : end;
      const pieces: Segment['pieces'] = [];
      for (let at = cur.next; at < readTo;) {
        const size = Number(readTo - at < BigInt(SCAN_READ_SIZE) ? readTo - at : BigInt(SCAN_READ_SIZE));
        pieces.push({ at, size });
        at += BigInt(size);
      }
      if (calls + pieces.length + 2 > maxCalls) break;
      calls += pieces.length + 2;
      used += Number(readTo - cur.next);
      segments.push({ cur, from: cur.next, to, readTo, pieces });
      cur.next = to;
      if (to >= end) qi++;
    }
    if (segments.length === 0) {
      summary.truncated = true;
      break;
    }
    const b = ctx.sys.batch();
    for (const s of segments) {
      b.group(() => {
        s.fd = b.openat(AT_FDCWD, ProcFs.path(s.cur.target.pid, 'mem'), O_RDONLY | O_CLOEXEC);
        for (const p of s.pieces) p.ref = b.pread64(s.fd, p.size, p.at);
        b.close(s.fd);
      });
    }
    await b.submit();
    summary.readBytes += used;
    for (const s of segments) {
      const pid = s.cur.target.pid;
      const openErr = s.fd!.result().error;
      if (openErr) {
        if (!isVanished(openErr)) ctx.warn(`pid ${pid}: /proc/${pid}/mem: ${openErr.message}`);
        summary.failed.set(pid, openErr);
        continue;
      }
      // Runs of consecutive complete pieces; a short or failed piece ends a run.
      let runStart: bigint | undefined;
      let parts: Uint8Array[] = [];
      const flush = () => {
        if (runStart === undefined) return;
        const data = concatBytes(parts);
        const reportEnd = s.to < runStart + BigInt(data.length) ? s.to : runStart + BigInt(data.length);
        const reportable = Number(reportEnd - runStart);
        if (reportable > 0) {
          pending.push({ target: s.cur.target, address: runStart, data, reportable });
        }
        runStart = undefined;
        parts = [];
      };
      for (const p of s.pieces) {
        const r = p.ref!.result();
        const got = r.error ? 0 : r.data.length;
        if (got > 0) {
          if (runStart === undefined) runStart = p.at;
          parts.push(r.data);
        }
        if (got < p.size) {
          // Only what lies in the reportable part counts as unread (the lookahead is read again).
          const lost = Math.max(
            0,
            Number((p.at + BigInt(p.size) < s.to ? p.at + BigInt(p.size) : s.to) - p.at) - got,
          );
          if (lost > 0) addUnreadable(pid, lost);
          flush();
        }
      }
      flush();
    }
    while (pending.length > 0) yield pending.shift()!;
    if (summary.readBytes - lastProgress >= 16 << 20) {
      lastProgress = summary.readBytes;
      ctx.progress(`${label}: ${mib(summary.readBytes)} of ${mib(totalBytes)} read`);
    }
  }
  if (summary.truncated) {
    for (let i = qi; i < queue.length; i++) {
      const c = queue[i];
      if (c.next < c.target.region.end)
        summary.left.push({ pid: c.target.pid, start: c.next, end: c.target.region.end });
    }
  }
  return summary;
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * One warning line for a scan that did not cover everything: the cap reached (with the
 * regions left, by process) and bytes the kernel refused. Empty when the scan was whole.
 */
export function describeScanGaps(summary: ScanSummary, capMiB: number): string[] {
  const lines: string[] = [];
  if (summary.truncated) {
    const byPid = new Map<number, number>();
    for (const l of summary.left) byPid.set(l.pid, (byPid.get(l.pid) ?? 0) + Number(l.end - l.start));
    const left = [...byPid].map(([pid, n]) => `${pid} (${mib(n)})`);
    lines.push(
      `scan truncated: read ${mib(summary.readBytes)} of ${mib(summary.totalBytes)} (cap ${capMiB} MiB, --max-scan MiB raises it; --max-read bounds it too); ` +
        `not scanned to the end: ${left.length} processes: ${left.slice(0, 20).join(', ')}${left.length > 20 ? ', …' : ''}`,
    );
  }
  if (summary.unreadable.size > 0) {
    const parts = [...summary.unreadable].map(([pid, n]) => `${pid} (${n} bytes)`);
    lines.push(
      `bytes the guest kernel would not read (file mappings past their end, device memory): ${parts.slice(0, 20).join(', ')}`,
    );
  }
  return lines;
}

/** Options of {@link scanForMatches}. */
export interface MatchScanOptions {
  /** `--max-scan`, MiB (the cap on bytes read; named in the truncation warning). */
  maxScanMiB: number;
  /** `--max-matches`: rows at most; reaching it stops the scan with a warning. */
  maxMatches: number;
  /** What the progress lines call the scan (`regex scan`). */
  label: string;
}

/**
 * The scan loop of the matching plugins (vmaregexscan, vmayarascan): runs
 * {@link scanMemory} over `targets` and collects what `matchesIn` finds in each chunk
 * (it must yield only matches that start before `chunk.reportable`, so a match in the
 * lookahead is reported once, by the next chunk). Stops at `maxMatches` rows; every gap
 * (cap reached, unreadable bytes, matches left) becomes a warning: the table is never
 * silently short.
 */
export async function scanForMatches<R>(
  ctx: PluginContext,
  targets: readonly ScanTarget[],
  opts: MatchScanOptions,
  matchesIn: (chunk: ScanChunk) => Iterable<R>,
): Promise<R[]> {
  const rows: R[] = [];
  const it = scanMemory(ctx, targets, { maxBytes: maxScanBytes(opts.maxScanMiB), label: opts.label });
  for (;;) {
    const next = await it.next();
    if (next.done) {
      for (const line of describeScanGaps(next.value, opts.maxScanMiB)) ctx.warn(line);
      return rows;
    }
    for (const row of matchesIn(next.value)) {
      if (rows.length >= opts.maxMatches) {
        ctx.warn(`stopped at ${opts.maxMatches} matches (--max-matches raises it): the scan did not finish`);
        await it.return(undefined as never);
        return rows;
      }
      rows.push(row);
    }
  }
}
