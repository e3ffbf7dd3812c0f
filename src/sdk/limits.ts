/**
 * Sizes that shape syscall batches, in one place. The shadow engine's batch buffer must
 * hold one batch: at most `maxCalls` calls, `maxInBytes` of input bytes and `maxOutBytes`
 * of output buffers. The SDK splits anything bigger into several `run()` calls, with
 * planChunks (below), which is also how the engine and the piggyback carrier measure.
 */
import type { Call } from './syscall-types.js';

export interface BatchLimits {
  /** Calls per `run()`. */
  maxCalls: number;
  /** Sum of the sizes of all 'out' buffers of one `run()`. */
  maxOutBytes: number;
  /** Sum of the sizes of all 'in' arguments (paths...) of one `run()`. */
  maxInBytes: number;
}

/**
 * The limits of one batch. The shadow engine takes its call-table size from here
 * (src/shadow/layout.ts, which refuses to load when the stub or the data area disagree).
 * Fewer, fuller batches matter: each guest entry costs a wake-up and a page walk.
 */
export const DEFAULT_BATCH_LIMITS: Readonly<BatchLimits> = Object.freeze({
  maxCalls: 2048,
  maxOutBytes: 3 << 20,
  maxInBytes: 512 << 10,
});

/**
 * Bounds on one plugin run, whatever the guest holds (a guest controls how big its
 * processes' environments, maps and files are). Exceeding one fails that plugin with a
 * LimitExceededError naming it; the other plugins of the run are not affected.
 */
export interface RunLimits {
  /** Output-buffer bytes all batches of one plugin run may ask of the guest (`--max-read`, MiB). */
  maxReadBytes: number;
  /** Rows one plugin may return. */
  maxRows: number;
  /** Wall time of one plugin run, ms (`--plugin-timeout`, s). */
  timeoutMs: number;
}

/**
 * A byte count as a limit message names it: whole MiB as such, one decimal above 1 MiB,
 * below 1 MiB in KiB or bytes (not "0.0 MiB"; the API takes limits in bytes).
 */
export function limitSize(n: number): string {
  if (n >= 1048576 || n === 0) return `${(n / 1048576).toFixed(n % 1048576 === 0 ? 0 : 1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} KiB`;
  return `${n} B`;
}

export const DEFAULT_RUN_LIMITS: Readonly<RunLimits> = Object.freeze({
  maxReadBytes: 256 << 20,
  maxRows: 5_000_000,
  timeoutMs: 300_000,
});

/** What a list of calls takes of a batch: calls, output bytes, input bytes. */
export interface BatchCost {
  calls: number;
  out: number;
  in: number;
}

/** The cost of `calls` in one batch (pure). */
export function batchCost(calls: readonly Call[]): BatchCost {
  const cost: BatchCost = { calls: calls.length, out: 0, in: 0 };
  for (const c of calls) {
    const one = callCost(c);
    cost.out += one.out;
    cost.in += one.in;
  }
  return cost;
}

/**
 * Output and input bytes of one call (pure). Indexed loop: the batch codec asks this of
 * every call of every batch, and for-of over a policy copy's frozen arguments allocated
 * an iterator each time.
 */
export function callCost(call: Call): { out: number; in: number } {
  const args = call.args;
  let out = 0;
  let inBytes = 0;
  for (let j = 0; j < args.length; j++) {
    const a = args[j];
    if (a.kind === 'out') {
      out += a.size;
      // An in-out buffer is also written with the inputs.
      if (a.init !== undefined) inBytes += a.size;
    } else if (a.kind === 'in') inBytes += a.data.length;
  }
  return { out, in: inBytes };
}

/** True when a batch of this cost stays within the limits (pure). */
export function fitsLimits(cost: BatchCost, limits: Readonly<BatchLimits>): boolean {
  return cost.calls <= limits.maxCalls && cost.out <= limits.maxOutBytes && cost.in <= limits.maxInBytes;
}

/** First read size of `readFiles` when the caller gives none. */
export const DEFAULT_READ_CHUNK = 4096;
/** Largest single read/pread64 the helpers issue. */
export const MAX_READ_CALL = 256 << 10;
/**
 * Files that overflowed their first read are read again from offset 0 with a bigger
 * buffer (one consistent snapshot, which matters for /proc files generated per read)
 * while they are smaller than this; beyond it they continue with pread64 at an offset.
 */
export const SNAPSHOT_REREAD_LIMIT = 64 << 10;
/** `readFiles` stops (and flags `truncated`) at this many bytes unless told otherwise. */
export const DEFAULT_MAX_FILE_SIZE = 64 << 20;

/** getdents64 buffer of `listDir` (holds ~1300 /proc entries). */
export const DEFAULT_DIR_BUFFER = 32 << 10;
/** getdents64 buffer per directory of `listDirs` (many small directories, e.g. /proc/PID/task). */
export const DEFAULT_MULTI_DIR_BUFFER = 2 << 10;
/**
 * Size of the second getdents64 of each round, which only has to tell "end of directory"
 * (returns 0) from "more": one record is at most 19 + 255 + 1 bytes, rounded to 8.
 */
export const DIR_EOF_PROBE = 280;

/** readlinkat buffer (PATH_MAX). */
export const READLINK_BUFFER = 4096;
/**
 * First readlinkat buffer of `readlinks`: a namespace link is 16-20 bytes, an fd target
 * or exe path rarely over 100; a link that fills it is read again with READLINK_BUFFER.
 */
export const READLINK_FIRST = 128;
/** First syslog read buffer; a bigger kernel log buffer costs one more batch. */
export const DEFAULT_SYSLOG_BUFFER = 256 << 10;

/** Splits entries into [start, end) ranges within the limits, cutting between groups when possible. */
export function planChunks(
  entries: readonly { group: number; outBytes: number; inBytes: number }[],
  limits: BatchLimits,
): Array<[number, number]> {
  const chunks: Array<[number, number]> = [];
  let start = 0;
  let cur: BatchCost = { calls: 0, out: 0, in: 0 };
  const fits = (c: BatchCost, add: BatchCost) =>
    fitsLimits({ calls: c.calls + add.calls, out: c.out + add.out, in: c.in + add.in }, limits);
  const flush = (end: number) => {
    if (end > start) chunks.push([start, end]);
    start = end;
    cur = { calls: 0, out: 0, in: 0 };
  };
  let i = 0;
  while (i < entries.length) {
    let j = i;
    const g: BatchCost = { calls: 0, out: 0, in: 0 };
    while (j < entries.length && entries[j].group === entries[i].group) {
      g.calls++;
      g.out += entries[j].outBytes;
      g.in += entries[j].inBytes;
      j++;
    }
    if (fits(cur, g)) {
      cur = { calls: cur.calls + g.calls, out: cur.out + g.out, in: cur.in + g.in };
    } else if (cur.calls > 0 && fits({ calls: 0, out: 0, in: 0 }, g)) {
      flush(i);
      cur = g;
    } else {
      // The group alone is too big: split it call by call; a single oversized call runs alone.
      for (let k = i; k < j; k++) {
        const c: BatchCost = { calls: 1, out: entries[k].outBytes, in: entries[k].inBytes };
        if (!fits(cur, c) && cur.calls > 0) flush(k);
        cur = { calls: cur.calls + 1, out: cur.out + c.out, in: cur.in + c.in };
      }
    }
    i = j;
  }
  flush(entries.length);
  return chunks;
}
