import { errnoMessage, errnoName, ENOENT, ESRCH } from '../abi/linux/errno.js';

/**
 * A redirected syscall that returned -errno. The message is one line:
 * `openat /proc/9/stat: ENOENT` (no path part when the call has none).
 */
export class SyscallError extends Error {
  override name = 'SyscallError';
  /** Errno name, e.g. `ENOENT`. */
  readonly code: string;
  constructor(
    /** Syscall name, e.g. `openat`. */
    readonly syscall: string,
    /** Positive errno number. */
    readonly errno: number,
    /** The path the call was about, when known. */
    readonly path?: string,
  ) {
    const code = errnoName(errno);
    super(`${syscall}${path !== undefined ? ' ' + path : ''}: ${code}`);
    this.code = code;
  }

  /** Human text of the errno (`No such file or directory`). */
  get description(): string {
    return errnoMessage(this.errno);
  }
}

/**
 * True when the error means the process or file went away between listing and reading
 * (ENOENT, or ESRCH from a task that exited while its /proc file was open). Plugins skip
 * such processes silently: they did not exist at the moment the row would describe.
 */
export function isVanished(err: unknown): boolean {
  return err instanceof SyscallError && (err.errno === ENOENT || err.errno === ESRCH);
}

/** The executor broke its contract (wrong number of results or out buffers). */
export class BatchProtocolError extends Error {
  override name = 'BatchProtocolError';
}

/**
 * A plugin run hit one of the bounds on what a guest can make vmi hold or do (bytes read
 * from the guest, rows, time; see RunLimits). The message names the limit and the flag
 * that raises it.
 */
export class LimitExceededError extends Error {
  override name = 'LimitExceededError';
  constructor(
    /** Which limit: 'read' (bytes from the guest), 'rows' or 'time'. */
    readonly limit: 'read' | 'rows' | 'time',
    message: string,
  ) {
    super(message);
  }
}
