import { DEFAULT_BATCH_LIMITS } from '../sdk/limits.js';
import { STUB_CONSTANTS as K, STUB_SYMBOLS } from './stub/stub-code.js';

/**
 * Layout of the scratch region that the shadow lives in (one MAP_SHARED anonymous
 * mapping). Offsets are relative to its base:
 *
 *   0x00000  code page (the stub; written once through the gdbstub before it runs)
 *   0x01000  control page (doorbell, done, state, pid, marker, ...: the words that move)
 *   0x02000  victim stack during bootstrap   (top 0x04000)
 *   0x04000  intermediate child's stack      (top 0x06000)
 *   0x06000  shadow stack                    (top 0x08000)
 *   0x08000  call entries: MAX_CALLS x 64 bytes (nr, 6 args, result-reference mask)
 *   0x28000  results: MAX_CALLS x 8 bytes
 *   0x30000  data: paths in, buffers out
 */
export const LAYOUT = {
  control: K.CTL,
  victimStackTop: 0x4000,
  entries: K.ENTRIES,
  entrySize: K.ENTRY_SIZE,
  /** Calls per batch: the SDK's batch limit (the stub is assembled with the same number). */
  maxCalls: DEFAULT_BATCH_LIMITS.maxCalls,
  results: K.RESULTS,
  data: 0x30000,
  /** Whole region: 4 MiB, so a pslist of thousands of processes fits in few batches. */
  size: 0x40_0000,
} as const;

// The batch limits are the SDK's (src/sdk/limits.ts); the stub and the data area must hold them.
if (K.MAX_CALLS !== LAYOUT.maxCalls)
  throw new Error(`the shadow stub was assembled for ${K.MAX_CALLS} calls per batch, not ${LAYOUT.maxCalls}`);
{
  const { maxOutBytes, maxInBytes, maxCalls } = DEFAULT_BATCH_LIMITS;
  // Every buffer is 8-byte aligned in the data area: room for that padding per call.
  if (maxOutBytes + maxInBytes + 2 * 8 * maxCalls > LAYOUT.size - LAYOUT.data)
    throw new Error('the batch limits do not fit the shadow data area');
}

/** Offsets of the control words within the control page. */
export const CONTROL = {
  marker: K.C_MARKER,
  doorbell: K.C_DOORBELL,
  done: K.C_DONE,
  state: K.C_STATE,
  pid: K.C_PID,
  command: K.C_COMMAND,
  spin: K.C_SPIN,
  bootResult: K.C_BOOT,
  size: K.C_SIZE,
  heartbeat: K.C_HEARTBEAT,
  timespec: K.C_TIMESPEC,
  sigset: K.C_SIGSET,
  name: K.C_NAME,
  root: K.C_ROOT,
  batches: K.C_BATCHES,
  setup: K.C_SETUP,
  pollfd: K.C_POLLFD,
  wakeFd: K.C_WAKE_FD,
  idleLoops: K.C_IDLE_LOOPS,
  wakePath: K.C_WAKE_PATH,
  idleTs: K.C_IDLE_TS,
  wakes: K.C_WAKES,
  /** Two batch slots of {first entry, count}, 16 bytes each: batch number N uses slot N & 1. */
  slots: K.C_SLOTS,
} as const;

export const SHADOW_STATE = {
  ready: K.STATE_READY,
  busy: K.STATE_BUSY,
  exiting: K.STATE_EXITING,
  sleeping: K.STATE_SLEEPING,
} as const;

/** Bits of the control page's setup word: what the shadow could not set up. */
export const SETUP_FAILED = { closeRange: 1, mlock: 2, wakeLine: 4 } as const;
export const SHADOW_COMMAND = { exit: K.CMD_EXIT } as const;

/** Entry points of the stub, relative to the region base. */
export const ENTRY = {
  bootstrap: STUB_SYMBOLS.bootstrap,
  bootstrapDone: STUB_SYMBOLS.bootstrap_done,
  shadowLoop: STUB_SYMBOLS.shadow_loop,
  batchEnd: STUB_SYMBOLS.batch_end,
  exitPoint: STUB_SYMBOLS.exit_point,
  codeEnd: STUB_SYMBOLS.stub_end,
} as const;

/** The name the shadow gives itself (comm), so that `ps` in the guest shows it honestly. */
export const SHADOW_COMM = 'vmi-shadow';
