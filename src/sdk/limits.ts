/**
 * Sizes that shape syscall batches, in one place. The shadow engine's batch buffer must
 * hold one batch: at most `maxCalls` calls, `maxInBytes` of input bytes and `maxOutBytes`
 * of output buffers. The SDK splits anything bigger into several `run()` calls.
 */

export interface BatchLimits {
  /** Calls per `run()`. */
  maxCalls: number;
  /** Sum of the sizes of all 'out' buffers of one `run()`. */
  maxOutBytes: number;
  /** Sum of the sizes of all 'in' arguments (paths...) of one `run()`. */
  maxInBytes: number;
}

/**
 * The limits the shadow engine's batch buffer is sized for (2048 call entries and a
 * 3.8 MiB data area: src/shadow/layout.ts; a unit test keeps the two in step). Fewer,
 * fuller batches matter: each guest entry costs a wake-up and a page walk.
 */
export const DEFAULT_BATCH_LIMITS: Readonly<BatchLimits> = Object.freeze({
  maxCalls: 2048,
  maxOutBytes: 3 << 20,
  maxInBytes: 512 << 10,
});

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
/** First syslog read buffer; a bigger kernel log buffer costs one more batch. */
export const DEFAULT_SYSLOG_BUFFER = 256 << 10;
