/**
 * Captures of a QEMU that vmi did not start (RAM private to QEMU, not a shared file),
 * with the guest's RAM read inside QEMU's own process memory (/proc/PID/mem at the host
 * address QEMU gives for its RAM block, src/memory/process-memory.ts) instead of being
 * rebuilt from a full migration stream written while the guest is paused.
 *
 * Sequence (measured on a 256 MiB lab-kernel guest under TCG: a full stream while paused
 * held the guest 2.8 s; a background snapshot started on a paused guest 2.0 s, as QEMU
 * pre-faults all of RAM before it saves the devices; this route ~0.1 s plus the RAM read):
 *  1. While the guest runs, an ordinary precopy migration (x-ignore-shared on, so the RAM
 *     list carries region addresses as a lab capture's does) streams into a unix socket
 *     that vmi serves; RamStreamFilter drops the pages of the guest's RAM block on the fly
 *     and writes the rest (device state, firmware and ROM blocks) as devstate.bin.
 *  2. When it converges QEMU stops the guest itself (or vmi stops it after `convergeMs`),
 *     sends the last dirty pages and the device state, and leaves the guest paused
 *     (`postmigrate`).
 *  3. Once the stream has ended, vmi reads the RAM block through /proc/PID/mem into a
 *     sparse staging file, then `cont`. Only pages whose last copy in the stream was not
 *     all zeros are read: the others are zero at the stop (below), and most of a young
 *     guest is (the kernel's pagemap cannot tell: the migration itself read-faulted every
 *     page in). The pause is QEMU's STOP event → its RESUME event.
 *
 * Consistency: QEMU saves the device state in migration_completion after
 * vm_stop_force_state(FINISH_MIGRATE) — vCPUs stopped, block I/O drained and flushed —
 * and the guest then stays stopped (postmigrate, checked before and after the read) until
 * vmi's `cont`: no vCPU and no DMA writes guest RAM in between, so the RAM read during
 * that pause is the RAM the device state was saved against. The stream's last copy of a
 * page is its content at the stop too (precopy resends every page dirtied after it was
 * sent; the final pass, after the stop, sends the rest), which is why its zero pages need
 * no read, and it is checked: the last copy of every 64th page must equal what was read,
 * and the stream must have carried every page of the block at least once.
 *
 * Nothing is paused before step 2: any failure up to there (the stream has a section this
 * filter does not know, the migration fails) cancels the migration and the caller falls
 * back to the full migration stream.
 */
import { createWriteStream } from 'node:fs';
import { closeSync, openSync, readFileSync, readSync, writeSync, ftruncateSync } from 'node:fs';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { probeProcessMemory, ProcessMemoryError, type QemuRamHost } from '../memory/process-memory.js';
import { RamLayout } from '../memory/ram-layout.js';
import type { MigrateInfo } from '../qemu/migration.js';
import { queryMigrateCapability, queryStatus } from '../qemu/machine-info.js';
import { mappingsCover, parseHostMaps, processStartTime } from '../qemu/qemu-process.js';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import type { GuestRamMap } from '../qemu/ram-map.js';
import { CaptureError, DEVSTATE_PART } from './manifest.js';
import { RamStreamFilter, STREAM_PAGE, type RamFilterResult } from './stream-filter.js';

/**
 * The RAM backend id of a replay clone (launchQemu's `memory-backend-file,id=m`; the
 * replay in targets/capture.ts maps ram.raw under it): devstate.bin names ram.raw's block
 * so, as a lab capture's does.
 */
export const REPLAY_RAM_BLOCK = 'm';

/**
 * QEMU's downtime-limit during the capture, ms (default 300): QEMU stops the guest once the
 * dirty pages left fit that long at the measured bandwidth, and sends them while the guest
 * is stopped, so a lower limit is a shorter final pass (a mostly idle guest still converges).
 */
const DOWNTIME_LIMIT_MS = 20;

/** Every n-th page of the block is compared between the stream and the read. */
const SAMPLE_EVERY = 64;
/** Granularity of the sparse staging file (the capture's digest works on 1 MiB chunks too). */
const CHUNK = 1024 * 1024;

/** Where the RAM block is in QEMU, found and checked before anything is paused. */
export interface ProcessRam {
  host: QemuRamHost;
  block: string;
  /** Bytes of the block (= ram.raw's size). */
  blockBytes: number;
  /** Host address of the block's first byte in QEMU. */
  base: number;
}

export type ProcessRamProbe = { ram: ProcessRam } | { refused: string };

/**
 * Runs of set entries in `mask[from, from + count)` (pure): [first page, page count] pairs
 * relative to `from`, in order, adjacent pages merged.
 */
export function pageRuns(mask: Uint8Array, from: number, count: number): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < count; i++) {
    if (!mask[from + i]) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/**
 * Finds the guest's one RAM block inside QEMU (probeProcessMemory: QEMU's pid from the
 * QMP socket, the block's host address from gpa2hva, bytes compared with QEMU's `xp`).
 * Read-only; nothing is paused.
 * @returns the block, or why QEMU's memory cannot be used (one line, for the fall-back)
 */
export async function probeProcessRam(
  q: QmpClient,
  qmpSocket: string,
  ramMap: GuestRamMap,
  memBytes: number,
  proc = '/proc',
): Promise<ProcessRamProbe> {
  const blocks = [...new Set(ramMap.ranges.map((r) => r.block))];
  if (blocks.length !== 1) return { refused: `the guest's RAM is in ${blocks.length} blocks` };
  const block = blocks[0];
  if (!(await queryMigrateCapability(q, 'x-ignore-shared')))
    return { refused: 'this QEMU has no x-ignore-shared migration capability' };
  let host: QemuRamHost;
  try {
    host = await probeProcessMemory(q, qmpSocket, new RamLayout(ramMap.ranges));
  } catch (e) {
    if (e instanceof ProcessMemoryError) return { refused: e.message };
    throw e;
  }
  const base = host.blockBases[block];
  if (base === undefined || base % STREAM_PAGE !== 0)
    return { refused: `no page-aligned host address for RAM block ${block}` };
  try {
    // The whole block must be mapped, not only the ranges the guest sees.
    if (!mappingsCover(parseHostMaps(readFileSync(`${proc}/${host.pid}/maps`, 'utf8')), base, memBytes))
      return { refused: `RAM block ${block} (${memBytes} bytes) is not mapped in QEMU (pid ${host.pid})` };
  } catch (e) {
    return { refused: `cannot read QEMU's mappings (pid ${host.pid}): ${(e as Error).message}` };
  }
  return { ram: { host, block, blockBytes: memBytes, base } };
}

export interface BlockReadResult {
  /** Bytes of non-zero 1 MiB chunks written to the staging file. */
  written: number;
  /** Bytes read from QEMU's memory. */
  read: number;
}

/**
 * Copies the RAM block out of QEMU's memory into a new sparse file `out` (0600, created
 * exclusively; offset = offset in the block). Only pages set in `want` (one entry per
 * 4 KiB page) are read, the others are left zero; all-zero 1 MiB chunks stay holes.
 * Synchronous: it runs while the guest is paused and nothing else should.
 * @throws CaptureError when QEMU is gone or its memory cannot be read
 */
export function readBlockSparse(
  ram: ProcessRam,
  out: string,
  want: Uint8Array,
  proc = '/proc',
): BlockReadResult {
  const { pid, startTime } = ram.host;
  if (want.length !== ram.blockBytes / STREAM_PAGE)
    throw new RangeError(`page mask of ${want.length} pages for a ${ram.blockBytes}-byte block`);
  let now: number;
  try {
    now = processStartTime(pid, proc);
  } catch {
    throw new CaptureError(`QEMU (pid ${pid}) is gone`);
  }
  if (now !== startTime) throw new CaptureError(`QEMU (pid ${pid}) is gone (its pid was reused)`);
  const opened: number[] = [];
  const openOr = (path: string, flags: string, mode?: number): number => {
    try {
      const fd = openSync(path, flags, mode);
      opened.push(fd);
      return fd;
    } catch (e) {
      throw new CaptureError(`${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  try {
    const mem = openOr(`${proc}/${pid}/mem`, 'r');
    const dst = openOr(out, 'wx', 0o600);
    const buf = Buffer.alloc(CHUNK);
    let written = 0;
    let read = 0;
    for (let off = 0; off < ram.blockBytes; off += CHUNK) {
      const len = Math.min(CHUNK, ram.blockBytes - off);
      const runs = pageRuns(want, off / STREAM_PAGE, len / STREAM_PAGE);
      if (runs.length === 0) continue;
      buf.fill(0);
      for (const [first, count] of runs) {
        const at = first * STREAM_PAGE;
        const n = count * STREAM_PAGE;
        for (let done = 0; done < n;) {
          const host = ram.base + off + at + done;
          const got = readSync(mem, buf, at + done, n - done, host);
          if (got === 0) throw new CaptureError(`short read of QEMU's memory at 0x${host.toString(16)}`);
          done += got;
        }
        read += n;
      }
      if (isZeroBuf(buf, len)) continue;
      for (let done = 0; done < len;) done += writeSync(dst, buf, done, len - done, off + done);
      written += len;
    }
    ftruncateSync(dst, ram.blockBytes);
    return { written, read };
  } finally {
    for (const fd of opened) closeSync(fd);
  }
}

const ZERO = Buffer.alloc(CHUNK);
function isZeroBuf(buf: Buffer, len: number): boolean {
  return buf.subarray(0, len).equals(ZERO.subarray(0, len));
}

export interface ProcessCaptureOptions {
  /** devstate.bin to create (the stream without the block's pages). */
  devPath: string;
  /** Sparse staging file for the RAM (created exclusively; the caller removes it). */
  stagingPath: string;
  /** The guest ran when the capture started: it is resumed (a paused guest stays paused). */
  resume: boolean;
  /** vmi stops the guest itself when QEMU has not converged by then (default 30 s + 20 s/GiB). */
  convergeMs?: number;
  progress?: (m: string) => void;
  /** Test hook: runs after the migration starts and before QEMU stops the guest. */
  beforeStop?: () => void | Promise<void>;
}

export interface ProcessCaptureResult {
  /** QEMU's STOP event → its RESUME event (QEMU's clock); 0 for a guest left paused. */
  pauseMs: number;
  /** Who stopped the guest: QEMU at convergence, or vmi after convergeMs. */
  stoppedBy: 'qemu' | 'vmi';
  /** migrate → stream complete. */
  migrateMs: number;
  /** The RAM read during the pause. */
  copyMs: number;
  read: BlockReadResult;
  stream: RamFilterResult;
}

/** Nothing was paused and nothing is left: the caller takes the full-stream path. */
export class ProcessCaptureFallback extends Error {
  override name = 'ProcessCaptureFallback';
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const eventMs = (e: QmpEvent): number | undefined => {
  const t = e.timestamp as { seconds?: unknown; microseconds?: unknown } | undefined;
  return typeof t?.seconds === 'number' && typeof t.microseconds === 'number'
    ? t.seconds * 1000 + t.microseconds / 1000
    : undefined;
};

/** A unix socket in a private directory that takes one connection: QEMU's migration target. */
async function migrationSink(
  filter: RamStreamFilter,
  devPath: string,
): Promise<{ uri: string; done: Promise<RamFilterResult>; close: () => Promise<void> }> {
  // Short path (sun_path is 108 bytes), 0700: only this user (and root) may connect.
  const dir = await mkdtemp(join(tmpdir(), 'vmi-capmig-'));
  const path = join(dir, 's');
  let sock: Socket | undefined;
  const server: Server = createServer();
  const done = new Promise<RamFilterResult>((resolve, reject) => {
    server.on('error', reject);
    server.once('connection', (s) => {
      sock = s;
      server.close();
      const strip = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          try {
            for (const b of filter.push(chunk)) this.push(b);
            cb();
          } catch (e) {
            cb(e as Error);
          }
        },
      });
      pipeline(s, strip, createWriteStream(devPath, { flags: 'wx', mode: 0o600 })).then(() => {
        try {
          resolve(filter.end());
        } catch (e) {
          reject(e as Error);
        }
      }, reject);
    });
  });
  done.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return {
    uri: `unix:${path}`,
    done,
    close: async () => {
      server.close();
      sock?.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Steps 1–3 of the header: devstate.bin and the staged RAM of one consistent instant.
 * @throws ProcessCaptureFallback before the guest was paused (the caller falls back);
 *   CaptureError after (the guest is resumed first when it ran)
 */
export async function captureFromProcess(
  q: QmpClient,
  ram: ProcessRam,
  opts: ProcessCaptureOptions,
): Promise<ProcessCaptureResult> {
  const progress = opts.progress ?? (() => {});
  const convergeMs = opts.convergeMs ?? 30_000 + Math.ceil((ram.blockBytes / 2 ** 30) * 20_000);
  const filter = new RamStreamFilter({
    block: ram.block,
    blockBytes: ram.blockBytes,
    ignoreShared: true,
    sampleEvery: SAMPLE_EVERY,
    renameTo: REPLAY_RAM_BLOCK,
  });
  const events: { event: string; at: number | undefined }[] = [];
  let listening = true;
  q.onEvent((e) => {
    if (listening && (e.event === 'STOP' || e.event === 'RESUME'))
      events.push({ event: e.event, at: eventMs(e) });
  });
  const prevIgnore = await queryMigrateCapability(q, 'x-ignore-shared');
  const prevBg = await queryMigrateCapability(q, 'background-snapshot');
  const params = await q
    .execute<{ 'downtime-limit'?: number }>('query-migrate-parameters')
    .catch(() => ({}) as { 'downtime-limit'?: number });
  const prevDowntime = params['downtime-limit'];
  const sink = await migrationSink(filter, opts.devPath);
  let paused = false;
  let resumed = false;
  const t0 = performance.now();
  try {
    await q.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'x-ignore-shared', state: true },
        ...(prevBg?.state ? [{ capability: 'background-snapshot', state: false }] : []),
      ],
    });
    if (prevDowntime !== undefined)
      await q.execute('migrate-set-parameters', { 'downtime-limit': DOWNTIME_LIMIT_MS });
    const before = events.length;
    try {
      await q.execute('migrate', { uri: sink.uri });
      await opts.beforeStop?.();
    } catch (e) {
      throw new ProcessCaptureFallback(`migration did not start: ${(e as Error).message}`);
    }
    // Steps 1-2: the guest runs while the stream goes by; wait for QEMU's stop.
    let stoppedBy: 'qemu' | 'vmi' = 'qemu';
    let tStopHost = 0;
    let info: MigrateInfo;
    for (;;) {
      const stopped = events.slice(before).some((e) => e.event === 'STOP') || !opts.resume;
      if (stopped && !paused) {
        paused = true;
        tStopHost = performance.now();
      }
      info = await q.execute<MigrateInfo>('query-migrate');
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled') {
        const why = `migration ${info.status}: ${info['error-desc'] ?? 'no detail'}`;
        // QEMU resumes a guest it stopped for a migration that then failed.
        if (!paused || (await queryStatus(q)).running) throw new ProcessCaptureFallback(why);
        throw new CaptureError(`${DEVSTATE_PART}: ${why}`);
      }
      if (!paused && performance.now() - t0 > convergeMs) {
        await q.execute('stop');
        stoppedBy = 'vmi';
        progress(`the migration did not converge in ${convergeMs} ms: stopped the guest`);
        continue;
      }
      await sleep(paused ? 1 : 20);
    }
    if (!paused) {
      paused = true;
      tStopHost = performance.now();
    }
    // Step 3: the guest is stopped (postmigrate) and stays so until our cont. The stream
    // is complete (QEMU wrote all of it before `completed`): which pages to read.
    const st = await queryStatus(q);
    if (st.running) throw new CaptureError('the guest runs again after the migration: RAM not read');
    const stream = await within(
      sink.done,
      60_000,
      `${DEVSTATE_PART}: the migration stream did not end within 60 s`,
    );
    const migrateMs = performance.now() - t0;
    const streamEndMs = performance.now() - tStopHost;
    const pages = ram.blockBytes / STREAM_PAGE;
    if (stream.covered !== pages)
      throw new CaptureError(
        `${DEVSTATE_PART}: the migration carried ${stream.covered} of ${pages} pages of RAM block ${ram.block}`,
      );
    const tc = performance.now();
    let read: BlockReadResult;
    try {
      read = readBlockSparse(ram, opts.stagingPath, stream.nonZero);
    } catch (e) {
      await unlink(opts.stagingPath).catch(() => undefined);
      throw e;
    }
    const copyMs = performance.now() - tc;
    const st2 = await queryStatus(q);
    if (st2.running) throw new CaptureError('the guest was resumed while its RAM was read');
    let pauseMs = 0;
    if (opts.resume) {
      await q.execute('cont');
      resumed = true;
      const tContHost = performance.now();
      await waitFor(() => events.slice(before).some((e) => e.event === 'RESUME'), 2000);
      const stop = events.slice(before).find((e) => e.event === 'STOP')?.at;
      const resume = events.slice(before).find((e) => e.event === 'RESUME')?.at;
      pauseMs = stop !== undefined && resume !== undefined ? resume - stop : tContHost - tStopHost;
    }
    await crossCheck(opts.stagingPath, stream);
    progress(
      `RAM read from QEMU's process memory (pid ${ram.host.pid}): ${(read.read / 2 ** 20).toFixed(1)} MiB read, ` +
        `${(read.written / 2 ** 20).toFixed(1)} MiB non-zero, ${stream.samples.size} pages cross-checked with the migration stream; ` +
        `stopped by ${stoppedBy}, stream complete ${streamEndMs.toFixed(0)} ms after the stop, read ${copyMs.toFixed(0)} ms`,
    );
    return { pauseMs, stoppedBy, migrateMs, copyMs, read, stream };
  } catch (e) {
    if (!paused) {
      await q.execute('migrate_cancel').catch(() => undefined);
      await waitFor(async () => {
        const s = (await q.execute<MigrateInfo>('query-migrate').catch(() => undefined))?.status;
        return s !== 'active' && s !== 'setup';
      }, 5000);
      await unlink(opts.devPath).catch(() => undefined);
      if (e instanceof ProcessCaptureFallback) throw e;
      throw new ProcessCaptureFallback((e as Error).message);
    }
    throw e;
  } finally {
    if (paused && opts.resume && !resumed) await q.execute('cont').catch(() => undefined);
    listening = false;
    await sink.close();
    if (prevDowntime !== undefined)
      await q.execute('migrate-set-parameters', { 'downtime-limit': prevDowntime }).catch(() => undefined);
    await q
      .execute('migrate-set-capabilities', {
        capabilities: [
          ...(prevIgnore && !prevIgnore.state ? [{ capability: 'x-ignore-shared', state: false }] : []),
          ...(prevBg?.state ? [{ capability: 'background-snapshot', state: true }] : []),
        ],
      })
      .catch(() => undefined);
  }
}

/** `p`, or a CaptureError after `ms` (the timer is cleared either way: it must not hold the CLI open). */
async function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CaptureError(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond()) && Date.now() < end) await sleep(1);
}

/**
 * The stream's last copy of each sampled page against the RAM read from QEMU's memory.
 * @throws CaptureError naming the first page that differs
 */
export async function crossCheck(stagingPath: string, stream: RamFilterResult): Promise<void> {
  const fh = await open(stagingPath, 'r');
  try {
    const page = Buffer.alloc(STREAM_PAGE);
    for (const [off, want] of stream.samples) {
      page.fill(0);
      await fh.read(page, 0, STREAM_PAGE, off);
      const same = want ? page.equals(want) : page.equals(ZERO.subarray(0, STREAM_PAGE));
      if (!same)
        throw new CaptureError(
          `the RAM read from QEMU's memory differs from the migration's at block offset 0x${off.toString(16)}: not one instant`,
        );
    }
  } finally {
    await fh.close();
  }
}
