/**
 * The wire-level shape of redirected system calls, shared by the SDK (which records
 * calls) and the shadow engine (which encodes them into a batch the in-guest stub runs).
 * Plugins normally use the higher-level helpers of the SDK instead of these types.
 */

/** One argument of a redirected syscall. */
export type CallArg =
  /** A plain integer passed in the register as is. */
  | { kind: 'int'; value: bigint }
  /** Bytes copied into the batch buffer; the register gets their guest address (e.g. a path). */
  | { kind: 'in'; data: Uint8Array }
  /**
   * An output buffer of `size` bytes in the batch buffer; the register gets its guest
   * address. `keep` says how many bytes come back: 'ret' = the call's return value (read,
   * getdents64, readlinkat), 'all' = the whole buffer (statx, uname, sysinfo).
   *
   * An in-out buffer (a struct the kernel reads and writes back: bpf(2)'s `union bpf_attr`,
   * getsockopt's optval) has `init`: its first bytes before the call (the rest zero).
   * `pointers` are offsets of little-endian u64 fields inside `init` that hold an offset
   * into this same buffer; the encoder replaces each by that byte's guest address (a
   * struct that points at a second part of itself, e.g. bpf_attr.info → the info struct
   * placed after it). A pointer field or target outside the buffer is refused.
   */
  | {
      kind: 'out';
      size: number;
      keep: 'ret' | 'all';
      init?: Uint8Array;
      pointers?: readonly number[];
    }
  /** The return value of an earlier call of the same submission (e.g. the fd from openat). */
  | { kind: 'result'; index: number };

/** One redirected syscall: its number and arguments. */
export interface Call {
  /** x86-64 syscall number. */
  nr: number;
  /** Up to six arguments, in register order rdi, rsi, rdx, r10, r8, r9. */
  args: CallArg[];
}

/** What the guest returned for one Call. */
export interface CallResult {
  /** Raw return value as the kernel returned it (negative = -errno). */
  ret: bigint;
  /** Output bytes, one per 'out' argument, in argument order. */
  out: Uint8Array[];
}

/**
 * Something that runs a list of calls inside the guest and returns one result per call,
 * in order. A failing call does not stop the rest: its ret is -errno. A call whose
 * 'result' argument refers to a failed call still runs (the kernel sees the negative
 * value, e.g. as a bad fd) so that the shape of the batch never depends on guest state.
 */
export interface SyscallExecutor {
  run(calls: readonly Call[]): Promise<CallResult[]>;
}
