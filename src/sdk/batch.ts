/**
 * The low-level batch builder: record calls, submit them as one guest entry (or as few
 * as the batch limits allow), then read each call's result.
 *
 *   const b = sys.batch();
 *   const fd = b.openat(AT_FDCWD, '/proc/1/stat', O_RDONLY);
 *   const r = b.read(fd, 4096);
 *   b.close(fd);
 *   await b.submit();
 *   r.result(); // { ret, errno?, data, ... }
 */
import { syscallName, sysno, type SyscallName } from '../abi/linux/syscalls.js';
import { SEEK_SET } from '../abi/linux/flags.js';
import { STATX_SIZE, SYSINFO_SIZE, UTSNAME_SIZE } from '../abi/linux/structs.js';
import { BatchProtocolError, SyscallError } from './errors.js';
import { DEFAULT_BATCH_LIMITS, planChunks, type BatchLimits } from './limits.js';
import { bytesToText, textToBytes } from '../util/byte-text.js';
import type { Call, CallArg, CallResult, SyscallExecutor } from './syscall-types.js';

/** The result of one recorded call, available after `submit()`. */
export interface SyscallResult {
  /** Raw return value (negative = -errno). */
  ret: bigint;
  /** Positive errno when the call failed. */
  errno?: number;
  /** The first output buffer (what read/getdents64/readlinkat returned), empty if none. */
  data: Uint8Array;
  /** Every output buffer, in argument order. */
  outs: Uint8Array[];
  /** The failure as a typed error (syscall name, errno, path). */
  error?: SyscallError;
}

/** An input argument: bytes copied into the batch buffer (e.g. a struct). */
export interface InArg {
  in: Uint8Array;
}
/** An output buffer argument (see CallArg 'out'); with `init`, an in-out buffer. */
export interface OutArg {
  out: number;
  keep?: 'ret' | 'all';
  /** First bytes of the buffer before the call (an in-out struct); the rest is zero. */
  init?: Uint8Array;
  /** Offsets of u64 fields of `init` holding an offset into this buffer, made guest addresses. */
  pointers?: readonly number[];
}
/** Anything a recorded call accepts as an argument. */
export type ArgSpec = number | bigint | CallRef | InArg | OutArg;
/** A file descriptor: a literal number or the result of an earlier openat. */
export type FdArg = number | bigint | CallRef;
/**
 * A path: byte text (src/util/byte-text.ts: UTF-8, with `\xNN` for any other byte and
 * `\x5c` for a backslash, so a path read from the guest goes back byte for byte) or raw
 * bytes; the NUL terminator is added.
 */
export type PathArg = string | Uint8Array;

/** Wraps bytes as an input argument. */
export function inBytes(data: Uint8Array): InArg {
  return { in: data };
}
/** An output buffer of `size` bytes; `keep` = 'ret' (return value bytes) or 'all'. */
export function outBuffer(size: number, keep: 'ret' | 'all' = 'ret'): OutArg {
  return { out: size, keep };
}

/**
 * An in-out buffer of `size` bytes that starts as `init` (zero-padded) and comes back
 * whole after the call: a struct the kernel reads and writes (bpf_attr, getsockopt's
 * optval). `pointers`: offsets of u64 fields of `init` that hold an offset into this
 * buffer and become its guest address (see CallArg 'out').
 */
export function inOutBuffer(size: number, init: Uint8Array, pointers: readonly number[] = []): OutArg {
  if (init.length > size) throw new RangeError(`in-out buffer: ${init.length} bytes of init in ${size}`);
  return { out: size, keep: 'all', init, pointers };
}

/** A path as a NUL-terminated C string (a string is byte text: see PathArg). */
export function cPath(path: PathArg): Uint8Array {
  const bytes = typeof path === 'string' ? textToBytes(path) : path;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

const ERRNO_MAX = 4095n;

/** Errno of a raw return value, or undefined (the kernel uses -4095..-1 for errors). */
export function retErrno(ret: bigint): number | undefined {
  return ret < 0n && ret >= -ERRNO_MAX ? Number(-ret) : undefined;
}

interface Entry {
  call: Call;
  syscall: string;
  path?: string;
  group: number;
  outBytes: number;
  inBytes: number;
}

/** A handle on one recorded call: pass it as an argument (fd) or read its result. */
export class CallRef {
  /** @internal */
  constructor(
    private readonly owner: BatchBuilder,
    /** Position in its batch. */
    readonly index: number,
    readonly syscall: string,
    readonly path?: string,
  ) {}

  /** The call's result; throws if the batch has not been submitted. */
  result(): SyscallResult {
    return this.owner.resultOf(this.index);
  }

  /** True when the call returned a non-error value. */
  get ok(): boolean {
    return this.result().errno === undefined;
  }

  /** The result, or throws its SyscallError. */
  check(): SyscallResult {
    const r = this.result();
    if (r.error) throw r.error;
    return r;
  }

  /** @internal */
  belongsTo(b: BatchBuilder): boolean {
    return this.owner === b;
  }
}

/** Statistics callback: one call per executor `run()`. */
export type RunObserver = (calls: number, outBytes: number, inBytes: number) => void;

/** Records syscalls and submits them as few guest entries as the batch limits allow. Get one from `ctx.sys.batch()`. */
export class BatchBuilder {
  private readonly entries: Entry[] = [];
  private results: SyscallResult[] | undefined;
  private submitting = false;
  private nextGroup = 0;
  private currentGroup: number | undefined;

  // Real private fields: a plugin holding a batch has no path to the executor behind it.
  readonly #executor: SyscallExecutor;
  readonly #observe?: RunObserver;
  readonly #signal?: AbortSignal;
  private readonly limits: BatchLimits;

  /** @internal Created by SyscallApi.batch(). */
  constructor(
    executor: SyscallExecutor,
    limits: BatchLimits = DEFAULT_BATCH_LIMITS,
    observe?: RunObserver,
    signal?: AbortSignal,
  ) {
    this.#executor = executor;
    this.limits = limits;
    this.#observe = observe;
    this.#signal = signal;
  }

  /** Number of recorded calls. */
  get length(): number {
    return this.entries.length;
  }

  get submitted(): boolean {
    return this.results !== undefined;
  }

  /**
   * Records the calls made inside `fn` as one group: when the batch must be split, the
   * split falls between groups, so e.g. openat/read/close of one file run together.
   */
  group<T>(fn: () => T): T {
    if (this.currentGroup !== undefined) return fn();
    this.currentGroup = this.nextGroup++;
    try {
      return fn();
    } finally {
      this.currentGroup = undefined;
    }
  }

  /**
   * Records any syscall. `info.path` names the file in error messages.
   * Number and bigint arguments are passed as integers; CallRefs pass the earlier call's
   * return value (from this batch, or from an already submitted one).
   */
  call(name: SyscallName | number, args: readonly ArgSpec[], info: { path?: string } = {}): CallRef {
    if (this.results || this.submitting) throw new Error('batch already submitted');
    if (args.length > 6) throw new Error(`a syscall takes at most 6 arguments, got ${args.length}`);
    const nr = typeof name === 'number' ? name : sysno(name);
    const syscall = typeof name === 'number' ? syscallName(name) : name;
    let outBytes = 0;
    let inLen = 0;
    const callArgs: CallArg[] = args.map((a): CallArg => {
      if (typeof a === 'number') {
        if (!Number.isSafeInteger(a)) throw new Error(`${syscall}: argument ${a} is not an integer`);
        return { kind: 'int', value: BigInt(a) };
      }
      if (typeof a === 'bigint') return { kind: 'int', value: a };
      if (a instanceof CallRef) {
        if (a.belongsTo(this)) return { kind: 'result', index: a.index };
        return { kind: 'int', value: a.result().ret };
      }
      if ('in' in a) {
        inLen += a.in.length;
        return { kind: 'in', data: a.in };
      }
      if (!Number.isSafeInteger(a.out) || a.out < 0) throw new Error(`${syscall}: bad buffer size ${a.out}`);
      outBytes += a.out;
      if (a.init !== undefined) {
        inLen += a.out;
        return { kind: 'out', size: a.out, keep: a.keep ?? 'ret', init: a.init, pointers: a.pointers ?? [] };
      }
      return { kind: 'out', size: a.out, keep: a.keep ?? 'ret' };
    });
    const group = this.currentGroup ?? this.nextGroup++;
    const index = this.entries.length;
    this.entries.push({
      call: { nr, args: callArgs },
      syscall,
      path: info.path,
      group,
      outBytes,
      inBytes: inLen,
    });
    return new CallRef(this, index, syscall, info.path);
  }

  // ------------------------------------------------------------------ typed wrappers

  /** openat(dirfd, path, flags, mode); the result's ret is the new fd. Write flags are refused by the read-only policy. */
  openat(dirfd: FdArg, path: PathArg, flags: number, mode = 0): CallRef {
    return this.call('openat', [dirfd, inBytes(cPath(path)), flags, mode], { path: pathText(path) });
  }

  /** read(fd, count): data = the bytes read. */
  read(fd: FdArg, count: number): CallRef {
    return this.call('read', [fd, outBuffer(count), count], { path: refPath(fd) });
  }

  /** pread64(fd, count, offset): data = the bytes read at `offset`. */
  pread64(fd: FdArg, count: number, offset: number | bigint): CallRef {
    return this.call('pread64', [fd, outBuffer(count), count, offset], { path: refPath(fd) });
  }

  /** close(fd). */
  close(fd: FdArg): CallRef {
    return this.call('close', [fd], { path: refPath(fd) });
  }

  /** lseek(fd, offset, whence); ret = the new position. */
  lseek(fd: FdArg, offset: number | bigint, whence = SEEK_SET): CallRef {
    return this.call('lseek', [fd, offset, whence], { path: refPath(fd) });
  }

  /** getdents64(fd, count): data = linux_dirent64 records; decode with decodeDirents64. */
  getdents64(fd: FdArg, count: number): CallRef {
    return this.call('getdents64', [fd, outBuffer(count), count], { path: refPath(fd) });
  }

  /** The result's data is the link target without NUL (ret = its length). */
  readlinkat(dirfd: FdArg, path: PathArg, bufsize = 4096): CallRef {
    return this.call('readlinkat', [dirfd, inBytes(cPath(path)), outBuffer(bufsize), bufsize], {
      path: pathText(path),
    });
  }

  /** data = struct statx (256 bytes); decode with decodeStatx. */
  statx(dirfd: FdArg, path: PathArg, flags: number, mask: number): CallRef {
    return this.call('statx', [dirfd, inBytes(cPath(path)), flags, mask, outBuffer(STATX_SIZE, 'all')], {
      path: pathText(path),
    });
  }

  /** data = struct new_utsname (390 bytes); decode with decodeUtsname. */
  uname(): CallRef {
    return this.call('uname', [outBuffer(UTSNAME_SIZE, 'all')]);
  }

  /** data = struct sysinfo (112 bytes); decode with decodeSysinfo. */
  sysinfo(): CallRef {
    return this.call('sysinfo', [outBuffer(SYSINFO_SIZE, 'all')]);
  }

  /** syslog(action, buf, len); for actions that take no buffer pass `size` 0. */
  syslog(action: number, size: number): CallRef {
    return this.call('syslog', [action, size > 0 ? outBuffer(size) : 0, size]);
  }

  /** getpid() of the shadow process. */
  getpid(): CallRef {
    return this.call('getpid', []);
  }

  /** getuid() of the shadow process (0 when it runs as root). */
  getuid(): CallRef {
    return this.call('getuid', []);
  }

  /** geteuid() of the shadow process. */
  geteuid(): CallRef {
    return this.call('geteuid', []);
  }

  /** clock_gettime(clockid): data = struct timespec (16 bytes: i64 sec, i64 nsec). */
  clockGettime(clockid: number): CallRef {
    return this.call('clock_gettime', [clockid, outBuffer(16, 'all')]);
  }

  // ------------------------------------------------------------------ running

  /** @internal */
  resultOf(index: number): SyscallResult {
    if (!this.results) throw new Error('batch not submitted yet: call submit() first');
    return this.results[index];
  }

  /**
   * Runs every recorded call. One executor `run()` unless the batch exceeds the limits;
   * then it is split between groups, and results of earlier parts are passed on as
   * plain integers. A failing call never stops the others.
   */
  async submit(): Promise<void> {
    if (this.results || this.submitting) throw new Error('batch already submitted');
    this.submitting = true;
    const results: SyscallResult[] = new Array<SyscallResult>(this.entries.length);
    for (const [start, end] of planChunks(this.entries, this.limits)) {
      this.#signal?.throwIfAborted();
      const calls = this.entries.slice(start, end).map((e) => relocate(e.call, start, results));
      let outBytes = 0;
      let inLen = 0;
      for (let i = start; i < end; i++) {
        outBytes += this.entries[i].outBytes;
        inLen += this.entries[i].inBytes;
      }
      this.#observe?.(calls.length, outBytes, inLen);
      const raw = await this.#executor.run(calls);
      if (!Array.isArray(raw) || raw.length !== calls.length) {
        throw new BatchProtocolError(`executor returned ${raw?.length} results for ${calls.length} calls`);
      }
      for (let i = start; i < end; i++) results[i] = toResult(this.entries[i], raw[i - start]);
    }
    this.results = results;
    this.submitting = false;
  }
}

Object.freeze(BatchBuilder.prototype);
Object.freeze(CallRef.prototype);

function pathText(p: PathArg): string {
  return typeof p === 'string' ? p : bytesToText(p);
}

function refPath(fd: FdArg): string | undefined {
  return fd instanceof CallRef ? fd.path : undefined;
}

function relocate(call: Call, start: number, done: SyscallResult[]): Call {
  // The first part of a batch keeps its indices (and refers to no earlier part).
  if (start === 0 || !call.args.some((a) => a.kind === 'result')) return call;
  return {
    nr: call.nr,
    args: call.args.map((a) => {
      if (a.kind !== 'result') return a;
      if (a.index >= start) return { kind: 'result', index: a.index - start };
      return { kind: 'int', value: done[a.index].ret };
    }),
  };
}

function toResult(entry: Entry, raw: CallResult): SyscallResult {
  // Loops rather than filter/map: this runs for every call of every batch.
  const args = entry.call.args;
  let outCount = 0;
  for (let j = 0; j < args.length; j++) if (args[j].kind === 'out') outCount++;
  if (!raw || typeof raw.ret !== 'bigint' || !Array.isArray(raw.out) || raw.out.length !== outCount) {
    throw new BatchProtocolError(
      `executor result for ${entry.syscall} has ${raw?.out?.length} out buffers, expected ${outCount}`,
    );
  }
  const errno = retErrno(raw.ret);
  const outs: Uint8Array[] = new Array<Uint8Array>(outCount);
  for (let j = 0, k = 0; j < args.length; j++) {
    const spec = args[j];
    if (spec.kind !== 'out') continue;
    const o = raw.out[k];
    // Never trust a length beyond what was asked for or what the call says it wrote.
    let n = Math.min(o.length, spec.size);
    if (spec.keep === 'ret') n = errno !== undefined || raw.ret < 0n ? 0 : Math.min(n, Number(raw.ret));
    outs[k++] = n === o.length ? o : o.subarray(0, n);
  }
  return {
    ret: raw.ret,
    errno,
    data: outs[0] ?? new Uint8Array(0),
    outs,
    error: errno === undefined ? undefined : new SyscallError(entry.syscall, errno, entry.path),
  };
}
