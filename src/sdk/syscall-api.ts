/**
 * The syscall API plugins use: a batch builder for anything, and helpers whose cost in
 * guest entries does not grow with the number of files (one batch for all files, plus
 * one follow-up batch for the few that did not fit their first buffer).
 */
import {
  AT_FDCWD,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  STATX_BASIC_STATS,
  SYSLOG_ACTION_READ_ALL,
  SYSLOG_ACTION_SIZE_BUFFER,
} from '../abi/linux/flags.js';
import {
  decodeDirents64,
  decodeStatx,
  decodeSysinfo,
  decodeUtsname,
  StructDecodeError,
  type Statx,
  type Sysinfo,
  type Utsname,
} from '../abi/linux/structs.js';
import { BatchBuilder, type CallRef, type SyscallResult } from './batch.js';
import { LimitExceededError, SyscallError } from './errors.js';
import {
  DEFAULT_BATCH_LIMITS,
  DEFAULT_RUN_LIMITS,
  DEFAULT_DIR_BUFFER,
  DEFAULT_MAX_FILE_SIZE,
  DEFAULT_MULTI_DIR_BUFFER,
  DEFAULT_READ_CHUNK,
  DEFAULT_SYSLOG_BUFFER,
  DIR_EOF_PROBE,
  limitSize,
  MAX_READ_CALL,
  READLINK_BUFFER,
  READLINK_FIRST,
  SNAPSHOT_REREAD_LIMIT,
  type BatchLimits,
} from './limits.js';
import { bytesToText } from '../util/byte-text.js';
import type { SyscallExecutor } from './syscall-types.js';

/** A file to read, with its first-read size (a good guess avoids the follow-up batch). */
export interface FileReadRequest {
  path: string;
  chunkSize?: number;
}

/** Options of readFiles/readFile. */
export interface ReadFilesOptions {
  /** First read size for paths given without one. Default 4096. */
  chunkSize?: number;
  /** Stop reading a file at this many bytes and set `truncated`. Default 64 MiB. */
  maxSize?: number;
}

/** One file of readFiles: its data, or the error that kept it from being read. */
export interface FileReadResult {
  path: string;
  /** The content, when the file could be opened and read. */
  data?: Uint8Array;
  /** Why not. ENOENT for a file (or process) that does not exist. */
  error?: SyscallError | StructDecodeError;
  /** True when `maxSize` cut the file short. */
  truncated?: boolean;
}

/** One directory entry of listDir/listDirs. */
export interface DirEntry {
  name: string;
  /** DT_* value (DT_UNKNOWN when the filesystem does not say). */
  type: number;
  ino: bigint;
}

/** One directory of listDirs: its entries, or the error. */
export interface DirListResult {
  path: string;
  /** Entries without `.` and `..`, in the order the kernel returned them. */
  entries?: DirEntry[];
  error?: SyscallError | StructDecodeError;
}

/** Options of listDir/listDirs. */
export interface ListDirOptions {
  /** getdents64 buffer size. */
  bufferSize?: number;
}

/** One link of readlinks: its target, or the error. */
export interface ReadlinkResult {
  path: string;
  target?: string;
  error?: SyscallError;
}

/** One path of statx: its decoded struct statx, or the error. */
export interface StatxResult {
  path: string;
  stat?: Statx;
  error?: SyscallError | StructDecodeError;
}

/** Options of statx. */
export interface StatxOptions {
  /** AT_* flags, e.g. AT_SYMLINK_NOFOLLOW. Default 0 (follow symlinks). */
  flags?: number;
  /** STATX_* fields wanted. Default STATX_BASIC_STATS. */
  mask?: number;
}

/** Options of a SyscallApi (limits, abort signal). */
export interface SyscallApiOptions {
  limits?: Partial<BatchLimits>;
  /** Output-buffer bytes all batches together may ask of the guest (default DEFAULT_RUN_LIMITS.maxReadBytes). */
  maxReadBytes?: number;
  /** Checked before every guest entry; an aborted signal rejects with its reason. */
  signal?: AbortSignal;
  /**
   * Whether the executor chains batches: runs one while the next is written (the doorbell
   * transport, src/shadow/batch-pipe.ts). Default true. readProcesses then cuts slices of
   * half a batch, so that two fit beside each other; without chaining (the trap
   * transport: one VM stop per batch) it cuts whole batches.
   */
  chains?: boolean;
}

/** Guest entries and calls made so far through one SyscallApi. */
export interface SyscallStats {
  runs: number;
  calls: number;
  outBytes: number;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

function positiveInt(n: number | undefined, fallback: number, what: string): number {
  if (n === undefined) return fallback;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new RangeError(`${what} must be a positive integer, got ${n}`);
  return n;
}

/**
 * Per-process /proc files that hand their whole content to one read() big enough for it,
 * so a short read is their end: fs/proc/base.c's ONE() entries (stat, statm, status,
 * wchan, stack, syscall, personality, limits, cgroup, io… through single_open, whose
 * buffer grows until the one record fits), cmdline and environ (their read loops until
 * the count is met), comm, auxv. Every other file — above all multi-record seq_files such
 * as maps, mountinfo, net/tcp or kallsyms, which return one page per read — is read until
 * a read returns 0.
 */
const WHOLE_IN_ONE_READ =
  /^\/proc\/(?:\d+|self|thread-self)(?:\/task\/\d+)?\/(?:cmdline|environ|stat|statm|status|comm|wchan|stack|syscall|personality|limits|cgroup|io|auxv|sessionid|loginuid|oom_score|oom_score_adj|schedstat|timerslack_ns)$/;

/** True for a file that one big-enough read returns whole (WHOLE_IN_ONE_READ). */
export function wholeInOneRead(path: string): boolean {
  return WHOLE_IN_ONE_READ.test(path);
}

/** The guest's syscalls as plugins see them (`ctx.sys`): batch() for anything, and batched helpers (readFiles, listDirs, readlinks, statx, uname, sysinfo, syslogRead) that cost a constant number of guest entries. */
export class SyscallApi {
  readonly limits: Readonly<BatchLimits>;
  /** Whether the executor chains batches (SyscallApiOptions.chains). */
  readonly chains: boolean;
  readonly stats: SyscallStats = { runs: 0, calls: 0, outBytes: 0 };
  // Real private fields: `ctx.sys` gives a plugin no path to the executor behind it.
  readonly #executor: SyscallExecutor;
  readonly #signal?: AbortSignal;
  readonly #maxReadBytes: number;

  constructor(executor: SyscallExecutor, options: SyscallApiOptions = {}) {
    this.#maxReadBytes = positiveInt(options.maxReadBytes, DEFAULT_RUN_LIMITS.maxReadBytes, 'maxReadBytes');
    this.limits = Object.freeze({ ...DEFAULT_BATCH_LIMITS, ...options.limits });
    this.chains = options.chains !== false;
    this.#executor = executor;
    this.#signal = options.signal;
    Object.freeze(this);
  }

  /**
   * Output-buffer bytes this run may still ask of the guest (the `--max-read` budget minus
   * what earlier batches asked): a scanning plugin stops at it instead of failing.
   */
  get readBytesLeft(): number {
    return Math.max(0, this.#maxReadBytes - this.stats.outBytes);
  }

  /** A new, empty batch. Nothing runs until its `submit()`. */
  batch(): BatchBuilder {
    return new BatchBuilder(
      this.#executor,
      this.limits,
      (calls, outBytes) => {
        // Checked before the batch goes out: nothing of it is read, nothing is held.
        if (this.stats.outBytes + outBytes > this.#maxReadBytes) {
          throw new LimitExceededError(
            'read',
            `read limit: this plugin run would read more than ${limitSize(this.#maxReadBytes)} from the guest ` +
              `(${limitSize(this.stats.outBytes)} read so far, the next batch asks ${limitSize(outBytes)}; raise it with --max-read MiB)`,
          );
        }
        this.stats.runs++;
        this.stats.calls += calls;
        this.stats.outBytes += outBytes;
      },
      this.#signal,
    );
  }

  // ------------------------------------------------------------------ files

  /**
   * Reads whole files: per file, openat, reads, a one-byte EOF probe and close, every file
   * in one batch. A file is whole only when a read returns 0: a /proc seq_file (maps,
   * mountinfo, net/tcp, kallsyms…) returns at most one page per read() however much is
   * asked (fs/seq_file.c seq_read_iter), so a short read is not the end. A file the probe
   * finds longer is read again in a follow-up batch with more and bigger reads, from
   * offset 0 while it is small (one open: /proc files stay one consistent snapshot), then
   * continuing after an lseek to where it stopped; repeated until EOF. Results are in
   * input order; failures are per file and never stop the others. Costs one batch for
   * files up to one read (4 KiB), two up to ~16 KiB, about ⌈log4(size/4 KiB)⌉ + 1 beyond.
   */
  async readFiles(
    paths: readonly (string | FileReadRequest)[],
    options: ReadFilesOptions = {},
  ): Promise<FileReadResult[]> {
    return this.#readFiles(paths, options);
  }

  /**
   * {@link readlinks} and {@link readFiles} together: the links go in the first batch of
   * the files (one guest entry less than the two calls one after the other); a link that
   * fills its first buffer is read again as readlinks does.
   */
  async readLinksAndFiles(
    links: readonly string[],
    files: readonly (string | FileReadRequest)[],
    options: ReadFilesOptions = {},
  ): Promise<{ links: ReadlinkResult[]; files: FileReadResult[] }> {
    let refs: CallRef[] = [];
    const read = await this.#readFiles(files, options, (b) => {
      refs = links.map((p) => b.group(() => b.readlinkat(AT_FDCWD, p, READLINK_FIRST)));
    });
    return { links: await this.#longLinks(links, refs), files: read };
  }

  async #readFiles(
    paths: readonly (string | FileReadRequest)[],
    options: ReadFilesOptions,
    /** Adds calls to the first batch, before the files (see readLinksAndFiles). */
    first?: (b: BatchBuilder) => void,
  ): Promise<FileReadResult[]> {
    const defaultChunk = Math.min(
      positiveInt(options.chunkSize, DEFAULT_READ_CHUNK, 'chunkSize'),
      MAX_READ_CALL,
    );
    const maxSize = positiveInt(options.maxSize, DEFAULT_MAX_FILE_SIZE, 'maxSize');
    // Bytes one file may ask for in one pass (a group is never split across batches).
    const passBytes = Math.max(DEFAULT_READ_CHUNK, Math.min(this.limits.maxOutBytes >> 1, 1 << 20));
    interface State {
      result: FileReadResult;
      chunks: Uint8Array[];
      total: number;
      /** Size of each read of the next pass. */
      size: number;
      /** Reads in the next pass (before the EOF probe). */
      count: number;
      /** Read from offset 0 again (replace) or continue at `total` (append). */
      restart: boolean;
      /** One read returns the whole file when it is big enough (no EOF probe; see wholeInOneRead). */
      whole: boolean;
    }
    const states: State[] = paths.map((p) => {
      const req = typeof p === 'string' ? { path: p } : p;
      const chunk = Math.min(positiveInt(req.chunkSize, defaultChunk, 'chunkSize'), MAX_READ_CALL, maxSize);
      const whole = wholeInOneRead(req.path);
      return {
        result: { path: req.path },
        chunks: [],
        total: 0,
        size: chunk,
        count: 1,
        restart: true,
        whole,
      };
    });
    let pending = states;
    let firstPass = first;
    while (pending.length > 0 || firstPass) {
      const b = this.batch();
      firstPass?.(b);
      firstPass = undefined;
      const reads = pending.map((s) =>
        b.group(() => {
          const fd = b.openat(AT_FDCWD, s.result.path, O_RDONLY | O_CLOEXEC);
          const seek = s.restart ? undefined : b.lseek(fd, s.total);
          const rs: CallRef[] = [];
          for (let i = 0; i < s.count; i++) rs.push(b.read(fd, s.size));
          // One byte more tells "end of file" (0) from "more" without fetching the more;
          // files the kernel hands over whole to one big-enough read need none.
          if (!s.whole) rs.push(b.read(fd, 1));
          b.close(fd);
          return { fd, seek, rs };
        }),
      );
      await b.submit();
      const again: State[] = [];
      pending.forEach((s, i) => {
        const { fd, seek, rs } = reads[i]!;
        const err =
          fd.result().error ?? seek?.result().error ?? rs.find((r) => r.result().error)?.result().error;
        if (err) {
          // A file that vanished after a first successful read is reported like one that was never there.
          s.result.error = err;
          s.result.data = undefined;
          return;
        }
        const got = rs.map((r) => r.result().data);
        if (s.restart) {
          s.chunks = [];
          s.total = 0;
        }
        let eof = false;
        let fullReads = 0;
        for (const data of got) {
          if (data.length === 0) {
            eof = true;
            break;
          }
          s.chunks.push(data);
          s.total += data.length;
          if (data.length === s.size) fullReads++;
          else if (s.whole) {
            eof = true;
            break;
          }
        }
        if (eof) {
          s.result.data = concat(s.chunks);
          return;
        }
        if (s.total >= maxSize) {
          s.result.truncated = true;
          s.result.data = concat(s.chunks).subarray(0, maxSize);
          return;
        }
        // Longer than this pass: reads that came back full (a regular file) grow in size,
        // short ones (a seq_file's page at a time) in number; ~4× the bytes per pass.
        const want = Math.min(Math.max(s.total * 4, s.size * s.count * 4), passBytes, maxSize);
        if (fullReads === s.count) s.size = Math.min(Math.max(s.size * 4, s.size), MAX_READ_CALL, want);
        s.count = Math.max(1, Math.min(Math.ceil(want / s.size), this.limits.maxCalls - 5));
        s.restart = s.total * 4 <= SNAPSHOT_REREAD_LIMIT;
        again.push(s);
      });
      pending = again;
    }
    return states.map((s) => s.result);
  }

  /**
   * Reads one file to its end the way `cat` does: read() until it returns 0. For large
   * seq_file files (/proc/kallsyms, 4 MB on Debian 6.1), whose read() returns at most one
   * seq buffer (a page) however much is asked: readFiles takes a short read for the end.
   * Each round is one batch of as many `readSize` reads as the batch limits hold on one
   * descriptor (~750 with 4 KiB reads), so 4 MB cost 2 rounds; then one close.
   * `dirfd`: a directory fd of the shadow (e.g. a detached mount's fd) that a relative
   * `path` is opened under (openat), instead of the shadow's cwd.
   * @throws SyscallError when the file cannot be opened or read; LimitExceededError past `maxSize`
   */
  async readToEnd(
    path: string,
    options: { readSize?: number; maxSize?: number; dirfd?: number } = {},
  ): Promise<Uint8Array> {
    const readSize = Math.min(positiveInt(options.readSize, 4096, 'readSize'), MAX_READ_CALL);
    const maxSize = positiveInt(options.maxSize, DEFAULT_MAX_FILE_SIZE, 'maxSize');
    const perRound = Math.max(
      1,
      Math.min(this.limits.maxCalls - 2, Math.floor(this.limits.maxOutBytes / readSize)),
    );
    const chunks: Uint8Array[] = [];
    let total = 0;
    let fd: number | undefined;
    try {
      for (;;) {
        const b = this.batch();
        const open =
          fd === undefined ? b.openat(options.dirfd ?? AT_FDCWD, path, O_RDONLY | O_CLOEXEC) : undefined;
        const reads = Array.from({ length: perRound }, () => b.read(open ?? fd!, readSize));
        await b.submit();
        if (open) {
          const e = open.result().error;
          if (e) throw e;
          fd = Number(open.result().ret);
        }
        let eof = false;
        for (const r of reads) {
          const res = r.result();
          if (res.error) throw res.error;
          if (res.data.length === 0) {
            eof = true;
            break;
          }
          chunks.push(res.data);
          total += res.data.length;
          if (total > maxSize)
            throw new LimitExceededError('read', `${path} is larger than ${maxSize} bytes`);
        }
        if (eof) break;
      }
    } finally {
      if (fd !== undefined) {
        const b = this.batch();
        b.close(fd);
        await b.submit().catch(() => undefined);
      }
    }
    return concat(chunks);
  }

  /** The whole content of one file; throws SyscallError. */
  async readFile(path: string, options: ReadFilesOptions = {}): Promise<Uint8Array> {
    const [r] = await this.readFiles([path], options);
    if (r.error) throw r.error;
    return r.data!;
  }

  /** A file as byte text (src/util/byte-text.ts: exact bytes); throws SyscallError. */
  async readTextFile(path: string, options: ReadFilesOptions = {}): Promise<string> {
    return bytesToText(await this.readFile(path, options));
  }

  // ------------------------------------------------------------------ directories

  /**
   * Lists several directories at once. Each round is one batch: per directory openat,
   * (lseek to where the last round stopped), getdents64 with `bufferSize`, a small
   * getdents64 that tells end-of-directory apart, close. Directories that had more
   * entries go into the next round.
   */
  async listDirs(paths: readonly string[], options: ListDirOptions = {}): Promise<DirListResult[]> {
    const bufferSize = positiveInt(options.bufferSize, DEFAULT_MULTI_DIR_BUFFER, 'bufferSize');
    interface State {
      result: DirListResult;
      entries: DirEntry[];
      /** d_off cookie to resume from, after the first round. */
      resume?: bigint;
    }
    const states: State[] = paths.map((path) => ({ result: { path }, entries: [] }));
    let pending = states;
    while (pending.length > 0) {
      const b = this.batch();
      const calls = pending.map((s) =>
        b.group(() => {
          const fd = b.openat(AT_FDCWD, s.result.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
          const seek: CallRef | undefined = s.resume !== undefined ? b.lseek(fd, s.resume) : undefined;
          const g1 = b.getdents64(fd, Math.max(bufferSize, DIR_EOF_PROBE));
          const g2 = b.getdents64(fd, DIR_EOF_PROBE);
          b.close(fd);
          return { fd, seek, g1, g2 };
        }),
      );
      await b.submit();
      const again: State[] = [];
      pending.forEach((s, i) => {
        const { fd, seek, g1, g2 } = calls[i];
        const err = fd.result().error ?? seek?.result().error ?? g1.result().error;
        if (err) {
          s.result.error = err;
          return;
        }
        try {
          let last: bigint | undefined;
          const take = (data: Uint8Array) => {
            for (const d of decodeDirents64(data)) {
              last = d.off;
              if (d.name !== '.' && d.name !== '..')
                s.entries.push({ name: d.name, type: d.type, ino: d.ino });
            }
          };
          const r1 = g1.result();
          if (r1.data.length === 0) {
            s.result.entries = s.entries;
            return;
          }
          take(r1.data);
          const r2 = g2.result();
          if (r2.error) {
            s.result.error = r2.error;
            return;
          }
          if (r2.data.length === 0) {
            s.result.entries = s.entries;
            return;
          }
          take(r2.data);
          if (last === undefined || last === s.resume) {
            // The cookie did not move: resuming would repeat the same entries forever.
            s.result.error = new StructDecodeError(
              'linux_dirent64',
              `${s.result.path}: directory offset stuck`,
            );
            return;
          }
          s.resume = last;
          again.push(s);
        } catch (e) {
          if (!(e instanceof StructDecodeError)) throw e;
          s.result.error = new StructDecodeError('linux_dirent64', `${s.result.path}: ${e.message}`);
        }
      });
      pending = again;
    }
    return states.map((s) => s.result);
  }

  /** Entries of one directory (without `.` and `..`); throws SyscallError. */
  async listDir(path: string, options: ListDirOptions = {}): Promise<DirEntry[]> {
    const [r] = await this.listDirs([path], { bufferSize: options.bufferSize ?? DEFAULT_DIR_BUFFER });
    if (r.error) throw r.error;
    return r.entries!;
  }

  // ------------------------------------------------------------------ links and metadata

  /**
   * readlinkat of every path in one batch (e.g. /proc/PID/exe, /proc/PID/fd/N), with a
   * READLINK_FIRST-byte buffer each: namespace links (`pid:[4026531836]`), fd targets and
   * most paths fit it, and the host reads back (and the batch carries) 128 bytes per link
   * instead of PATH_MAX. readlinkat truncates silently, so a link that filled its buffer
   * is read again, in one follow-up batch for all such links, with READLINK_BUFFER (PATH_MAX).
   */
  async readlinks(paths: readonly string[]): Promise<ReadlinkResult[]> {
    const b = this.batch();
    const refs = paths.map((p) => b.readlinkat(AT_FDCWD, p, READLINK_FIRST));
    await b.submit();
    return this.#longLinks(paths, refs);
  }

  /** Results of readlinkat calls with READLINK_FIRST buffers, those that filled them read again. */
  async #longLinks(paths: readonly string[], refs: readonly CallRef[]): Promise<ReadlinkResult[]> {
    const first = refs.map((r) => r.result());
    const filled = (i: number) => !first[i].error && first[i].data.length >= READLINK_FIRST;
    const long = paths.filter((_, i) => filled(i));
    let again: SyscallResult[] = [];
    if (long.length > 0) {
      const b = this.batch();
      const more = long.map((p) => b.readlinkat(AT_FDCWD, p, READLINK_BUFFER));
      await b.submit();
      again = more.map((r) => r.result());
    }
    let k = 0;
    return paths.map((path, i) => {
      const r = filled(i) ? again[k++] : first[i];
      return r.error ? { path, error: r.error } : { path, target: bytesToText(r.data) };
    });
  }

  /** statx of every path in one batch. */
  async statx(paths: readonly string[], options: StatxOptions = {}): Promise<StatxResult[]> {
    const b = this.batch();
    const refs = paths.map((p) =>
      b.statx(AT_FDCWD, p, options.flags ?? 0, options.mask ?? STATX_BASIC_STATS),
    );
    await b.submit();
    return paths.map((path, i) => {
      const r = refs[i].result();
      if (r.error) return { path, error: r.error };
      try {
        return { path, stat: decodeStatx(r.data) };
      } catch (e) {
        if (e instanceof StructDecodeError) return { path, error: e };
        throw e;
      }
    });
  }

  // ------------------------------------------------------------------ system

  /** uname(2) of the guest. */
  async uname(): Promise<Utsname> {
    const b = this.batch();
    const r = b.uname();
    await b.submit();
    return decodeUtsname(r.check().data);
  }

  /** sysinfo(2) of the guest. */
  async sysinfo(): Promise<Sysinfo> {
    const b = this.batch();
    const r = b.sysinfo();
    await b.submit();
    return decodeSysinfo(r.check().data);
  }

  /**
   * The kernel log buffer (syslog READ_ALL, what `dmesg` prints, with `<level>` prefixes).
   * One batch asks the buffer size and reads with a 256 KiB buffer; a bigger log costs
   * one more. Throws SyscallError (EPERM under kernel.dmesg_restrict without CAP_SYSLOG).
   */
  async syslogRead(): Promise<string> {
    const cap = this.limits.maxOutBytes;
    let size = Math.min(DEFAULT_SYSLOG_BUFFER, cap);
    for (;;) {
      const b = this.batch();
      const sizeRef = b.syslog(SYSLOG_ACTION_SIZE_BUFFER, 0);
      const read = b.syslog(SYSLOG_ACTION_READ_ALL, size);
      await b.submit();
      const want = sizeRef.result().errno === undefined ? Number(sizeRef.result().ret) : 0;
      const r = read.check();
      // The log is a ring: a buffer the size of the kernel's returns all of it.
      if (want <= size || r.data.length < size || size >= cap) return bytesToText(r.data);
      size = Math.min(want, cap);
    }
  }
}
Object.freeze(SyscallApi.prototype);
