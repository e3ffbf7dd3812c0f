/**
 * The read-only syscall policy. Introspection must not change the guest it looks at, so
 * every plugin's calls pass through a {@link PolicyExecutor}: calls on the read-only
 * allowlist go on to the guest; anything else makes the whole `run()` fail with a
 * {@link PolicyViolationError} before a single call of it reaches the guest.
 *
 * A plugin that must change the guest declares it (`needs` in its definition, see
 * {@link PluginNeeds}) and only runs when the user passes `--allow-write`; even then
 * it may make only the calls it declared.
 */
import {
  O_APPEND,
  O_CREAT,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  SYSLOG_ACTION_READ_ALL,
  SYSLOG_ACTION_SIZE_BUFFER,
} from '../abi/linux/flags.js';
import {
  AF_INET,
  AF_NETLINK,
  MSG_DONTWAIT,
  NETLINK_SOCK_DIAG,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  SOCK_DGRAM,
  SOCK_DIAG_BY_FAMILY,
  SOCK_RAW,
} from '../abi/linux/sock-diag.js';
import { allSyscalls } from '../abi/linux/syscalls.js';
import {
  IPPROTO_RAW,
  IPT_SO_GET_ENTRIES,
  IPT_SO_GET_INFO,
  NETLINK_NETFILTER,
  NFNL_SUBSYS_NFTABLES,
  NFT_READ_ONLY_MSGS,
  SOL_IP,
} from '../abi/linux/nfnetlink.js';
import { BPF_READ_ONLY_COMMANDS } from '../abi/linux/bpf.js';
import { bytesToText } from '../util/byte-text.js';
import type { Call, CallArg, CallResult, SyscallExecutor } from './syscall-types.js';

/** `__O_TMPFILE` (O_TMPFILE is this plus O_DIRECTORY): creates an unnamed file. */
export const O_TMPFILE_BIT = 0o20000000;

/** Open flags that write, create or truncate: an open with any of them is not read-only. */
export const WRITE_OPEN_FLAGS = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE_BIT;

/**
 * Syscalls that only read guest state (or the shadow's own state), allowed for every
 * plugin. `open`/`openat` are allowed only without {@link WRITE_OPEN_FLAGS}; `syslog`
 * only with the non-destructive actions READ_ALL (3) and SIZE_BUFFER (10): READ (2)
 * consumes the log and CLEAR (5) empties it.
 */
export const READ_ONLY_SYSCALLS: ReadonlySet<string> = new Set([
  // files and directories (the descriptors are the shadow's own)
  'open',
  'openat',
  'read',
  'pread64',
  'readv',
  'preadv',
  'preadv2',
  'close',
  'lseek',
  'getdents',
  'getdents64',
  'readlink',
  'readlinkat',
  'stat',
  'fstat',
  'lstat',
  'newfstatat',
  'statx',
  'statfs',
  'fstatfs',
  'access',
  'faccessat',
  'faccessat2',
  'getxattr',
  'lgetxattr',
  'fgetxattr',
  'listxattr',
  'llistxattr',
  'flistxattr',
  'getcwd',
  // system information
  'uname',
  'sysinfo',
  'syslog',
  'clock_gettime',
  'clock_getres',
  'gettimeofday',
  'time',
  // the shadow's identity
  'getpid',
  'getppid',
  'gettid',
  'getuid',
  'geteuid',
  'getgid',
  'getegid',
  'getresuid',
  'getresgid',
  'getgroups',
  'getpgid',
  'getpgrp',
  'getsid',
  'capget',
  // another process's memory, read only
  'process_vm_readv',
  // names of the shadow's own sockets
  'getsockname',
  'getpeername',
]);

/**
 * The sock_diag dump, allowed on its own terms (sockxview's second view of the sockets):
 * `socket(AF_NETLINK, SOCK_RAW|SOCK_DGRAM [|SOCK_CLOEXEC|SOCK_NONBLOCK], NETLINK_SOCK_DIAG)`;
 * `sendto` of exactly one SOCK_DIAG_BY_FAMILY message with NLM_F_REQUEST|NLM_F_DUMP to the
 * kernel (no address); `recvfrom` with no flag but MSG_DONTWAIT and no address. sendto and
 * recvfrom must name, as their fd, the result of such a socket() call of the same batch:
 * never an fd number, which could be a socket the shadow inherited from its victim (a
 * recvfrom there would consume the victim's data, a sendto would send on its behalf).
 * Why this is read-only: the socket is the shadow's own and is closed in the batch; a
 * dump only reads the kernel's socket tables (what `ss` does); SOCK_DESTROY (21), the one
 * sock_diag message that changes anything, and every other type are refused.
 *
 * The same terms carry the netfilter plugin's queries: on a `NETLINK_NETFILTER` socket,
 * `sendto` of exactly one nf_tables GET request (NFT_READ_ONLY_MSGS: GETTABLE, GETCHAIN,
 * GETRULE, GETSET, GETGEN; the *_RESET variants zero counters and are refused), what
 * `nft list ruleset` sends; and `getsockopt(SOL_IP, IPT_SO_GET_INFO | IPT_SO_GET_ENTRIES)`
 * on a `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)` of the same batch, what `iptables-legacy
 * -L` calls: both only copy the rules out.
 */
export const SOCK_DIAG_SYSCALLS: ReadonlySet<string> = new Set([
  'socket',
  'sendto',
  'recvfrom',
  'getsockopt',
]);

/**
 * bpf(2), allowed only with the commands that read (BPF_READ_ONLY_COMMANDS of
 * src/abi/linux/bpf.ts: {PROG,MAP,LINK}_GET_NEXT_ID, {PROG,MAP,LINK}_GET_FD_BY_ID and
 * OBJ_GET_INFO_BY_FD), as `bpftool prog/map/link show` uses them (the ebpf plugin). Why
 * this is read-only: NEXT_ID walks the id tables; GET_FD_BY_ID gives the shadow its own fd
 * (a reference, dropped by its close); GET_INFO_BY_FD copies the object's info out. Every
 * command that loads, attaches, detaches, updates, deletes or pins is refused.
 */
export const BPF_READ_ONLY_CMDS: ReadonlySet<number> = new Set(BPF_READ_ONLY_COMMANDS);

/**
 * A detached, read-only mount of tracefs or debugfs (the tracing plugin reads
 * enabled_functions and kprobes/list through it when the guest has none mounted), in
 * exactly this shape, all in one batch:
 *     fsopen("tracefs" | "debugfs", 0 | FSOPEN_CLOEXEC)
 *     fsconfig(<that fsopen>, FSCONFIG_CMD_CREATE, NULL, NULL, 0)
 *     fsmount(<that fsopen>, 0 | FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY [| NOSUID | NODEV | NOEXEC | NOATIME | NODIRATIME])
 * and read with openat on the fsmount's fd. Why this leaves the guest as it was: the mount
 * is attached to no mount namespace (fs/namespace.c: fsmount makes an anonymous one) and
 * vanishes with its last fd; no fsconfig option is set, so no superblock flag (a shared
 * superblock's `ro` would change it for every mount) or option is passed; RDONLY is a flag
 * of this mount only. move_mount, mount, open_tree, fspick and mount_setattr stay refused,
 * so it is never attached anywhere. (On kernels whose tracefs reconfigures an existing
 * superblock on a new mount, fs/tracefs/inode.c, default options are re-applied: the
 * tracing plugin uses a mount the guest already has instead.)
 */
export const DETACHED_MOUNT_SYSCALLS: ReadonlySet<string> = new Set(['fsopen', 'fsconfig', 'fsmount']);
/** Filesystems a detached mount may be made of. */
export const DETACHED_MOUNT_FILESYSTEMS: ReadonlySet<string> = new Set(['tracefs', 'debugfs']);
/** include/uapi/linux/mount.h */
const FSOPEN_CLOEXEC = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;
const MOUNT_ATTR_RDONLY = 0x1;
/** RDONLY | NOSUID | NODEV | NOEXEC | NOATIME | NODIRATIME: attributes that only restrict. */
const MOUNT_ATTR_RESTRICTING = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x80;

/** syslog(2) actions that neither consume nor change the kernel log. */
export const READ_ONLY_SYSLOG_ACTIONS: ReadonlySet<number> = new Set([
  SYSLOG_ACTION_READ_ALL,
  SYSLOG_ACTION_SIZE_BUFFER,
]);

/**
 * What a plugin needs beyond the read-only policy. A plugin that declares anything here
 * changes the guest: it runs only when the user passes `--allow-write`, and then only the
 * declared extras are allowed.
 *
 *     needs: { syscalls: ['unlink'], writeFiles: true }
 */
export interface PluginNeeds {
  /** Syscalls outside {@link READ_ONLY_SYSCALLS} the plugin makes (`'unlink'`, `'kill'`). */
  syscalls?: readonly string[];
  /** open/openat with write, create or truncate flags ({@link WRITE_OPEN_FLAGS}). */
  writeFiles?: boolean;
}

/** True when the declared needs go beyond read-only (the plugin needs `--allow-write`). */
export function needsWrite(needs: PluginNeeds | undefined): boolean {
  return Boolean(needs && (needs.writeFiles || (needs.syscalls && needs.syscalls.length > 0)));
}

/** One-line summary of declared needs: `unlink, kill, open for writing`. */
export function describeNeeds(needs: PluginNeeds | undefined): string {
  const parts = [...(needs?.syscalls ?? [])];
  if (needs?.writeFiles) parts.push('open for writing');
  return parts.join(', ');
}

/**
 * A call the policy refused. Thrown by {@link PolicyExecutor.run} before anything of the
 * refused run reaches the guest; also thrown by {@link assertWriteAllowed} for a plugin
 * that declares write needs when `--allow-write` was not given.
 */
export class PolicyViolationError extends Error {
  override name = 'PolicyViolationError';
  constructor(
    /** The plugin that made the call. */
    readonly plugin: string,
    /** Syscall name (`openat`, `unlink`, or `syscall_999` for a number the profile does not name). */
    readonly syscall: string,
    message: string,
    /** For open/openat: the flags, decoded (`O_WRONLY|O_CREAT`). */
    readonly flags?: string,
  ) {
    super(message);
  }
}

const FLAG_NAMES: Array<[number, string]> = [
  [O_CREAT, 'O_CREAT'],
  [O_TRUNC, 'O_TRUNC'],
  [O_APPEND, 'O_APPEND'],
  [O_TMPFILE_BIT, 'O_TMPFILE'],
];

/** The write-related part of open flags as text: `O_WRONLY|O_CREAT|O_TRUNC` (`O_RDONLY` if none). */
export function describeOpenFlags(flags: number): string {
  const parts: string[] = [];
  const mode = flags & 3;
  parts.push(
    mode === O_WRONLY ? 'O_WRONLY' : mode === O_RDWR ? 'O_RDWR' : mode === 3 ? 'O_ACCMODE' : 'O_RDONLY',
  );
  for (const [bit, name] of FLAG_NAMES) if (flags & bit) parts.push(name);
  return parts.join('|');
}

// The check below runs in the same process as plugin code, which can replace built-ins
// (Set.prototype.has, Array.prototype.includes, BigInt.asUintN, ...). Everything the
// decision depends on is therefore captured when this module loads, before any pack is
// imported, and looked up in null-prototype tables: patching a prototype or a global
// afterwards cannot turn a refusal into a pass.
const freeze = Object.freeze;
const defineProperty = Object.defineProperty;

const isArray = Array.isArray;
const isView = ArrayBuffer.isView;
const toBigInt = BigInt;
const asUintN = BigInt.asUintN;
const toNumber = Number;
const U8 = Uint8Array;
const arrayFrom = Array.from;
const ArrayCtor = Array;
const reflectApply = Reflect.apply;

/**
 * `[f(0), …, f(n − 1)]`: Array.from over a null-prototype array-like defines each element
 * as an own data property and looks up no iterator, so nothing a plugin put on
 * Array.prototype or Object.prototype runs or decides the length (see snapshotCalls).
 */
function arrayOf<T>(n: number, f: (i: number) => T): T[] {
  const items = Object.create(null) as { length: number };
  items.length = n;
  return reflectApply(arrayFrom, ArrayCtor, [items, (_: unknown, i: number) => f(i)]) as T[];
}

function nullTable<K extends string | number>(
  keys: Iterable<readonly [K, string | true]>,
): Record<K, string | true> {
  const t = Object.create(null) as Record<K, string | true>;
  for (const [k, v] of keys) t[k] = v;
  return freeze(t);
}
const NAME_BY_NR = nullTable(
  [...allSyscalls()].reverse().map(([name, nr]) => [nr, name] as const),
) as Readonly<Record<number, string>>;
const READ_ONLY_TABLE = nullTable([...READ_ONLY_SYSCALLS].map((n) => [n, true] as const));
const SOCK_DIAG_TABLE = nullTable([...SOCK_DIAG_SYSCALLS].map((n) => [n, true] as const));
const SYSLOG_TABLE = nullTable([...READ_ONLY_SYSLOG_ACTIONS].map((a) => [a, true] as const));
const NFT_GET_TABLE = nullTable(NFT_READ_ONLY_MSGS.map((m) => [m, true] as const));
const BPF_TABLE = nullTable([...BPF_READ_ONLY_CMDS].map((c) => [c, true] as const));
const MOUNT_TABLE = nullTable([...DETACHED_MOUNT_SYSCALLS].map((n) => [n, true] as const));
const MOUNT_FS_TABLE = nullTable([...DETACHED_MOUNT_FILESYSTEMS].map((n) => [n, true] as const));

function nameOf(nr: number): string {
  const n = NAME_BY_NR[nr];
  return typeof n === 'string' ? n : `syscall_${nr}`;
}

function granted(grant: PluginNeeds | undefined, name: string): boolean {
  const list = grant?.syscalls;
  if (!list) return false;
  for (let i = 0; i < list.length; i++) if (list[i] === name) return true;
  return false;
}

/** Argument i, only if the call has it (an index past the end would reach Array.prototype). */
function argAt(call: Call, i: number): CallArg | undefined {
  return i < call.args.length ? call.args[i] : undefined;
}

function intArg(a: CallArg | undefined): bigint | undefined {
  return a?.kind === 'int' ? a.value : undefined;
}

function pathArg(a: CallArg | undefined): string | undefined {
  if (a?.kind !== 'in') return undefined;
  const end = a.data.indexOf(0);
  return bytesToText(end >= 0 ? a.data.subarray(0, end) : a.data);
}

/** SOCK_CLOEXEC | SOCK_NONBLOCK: flags a socket() type may carry. */
const SOCK_TYPE_FLAGS = 0o2000000 | 0o4000;

/**
 * The netlink protocol of socket(AF_NETLINK, SOCK_RAW|SOCK_DGRAM [+flags], P) when P is
 * NETLINK_SOCK_DIAG or NETLINK_NETFILTER; undefined for any other call.
 */
function netlinkSocketProto(call: Call | undefined): number | undefined {
  if (!call || nameOf(call.nr) !== 'socket') return undefined;
  const domain = intArg(argAt(call, 0));
  const type = intArg(argAt(call, 1));
  const proto = intArg(argAt(call, 2));
  if (domain !== toBigInt(AF_NETLINK) || type === undefined) return undefined;
  if (proto !== toBigInt(NETLINK_SOCK_DIAG) && proto !== toBigInt(NETLINK_NETFILTER)) return undefined;
  const t = toNumber(asUintN(32, type));
  const base = t & ~SOCK_TYPE_FLAGS;
  return base === SOCK_RAW || base === SOCK_DGRAM ? toNumber(proto) : undefined;
}

/** True for socket(AF_INET, SOCK_RAW [+flags], IPPROTO_RAW): iptables' getsockopt socket. */
function isIptSocket(call: Call | undefined): boolean {
  if (!call || nameOf(call.nr) !== 'socket') return false;
  const type = intArg(argAt(call, 1));
  return (
    intArg(argAt(call, 0)) === toBigInt(AF_INET) &&
    type !== undefined &&
    (toNumber(asUintN(32, type)) & ~SOCK_TYPE_FLAGS) === SOCK_RAW &&
    intArg(argAt(call, 2)) === toBigInt(IPPROTO_RAW)
  );
}

/** The socket() call of the same batch the fd argument names, if any. */
function socketOf(call: Call, batch: readonly Call[] | undefined): Call | undefined {
  const a = argAt(call, 0);
  if (!batch || a?.kind !== 'result') return undefined;
  const i = toNumber(a.index);
  return i >= 0 && i < batch.length ? batch[i] : undefined;
}

/** Exactly one allowed request (read byte by byte: no DataView a plugin could patch). */
function isAllowedRequest(proto: number, a: CallArg | undefined, len: bigint | undefined): boolean {
  if (a?.kind !== 'in' || len === undefined) return false;
  const d = a.data;
  const n = d.length;
  if (n < 16 || toBigInt(n) !== len) return false;
  const u16 = (o: number) => d[o] | (d[o + 1] << 8);
  const u32 = (o: number) => (u16(o) + u16(o + 2) * 65536) >>> 0;
  if (u32(0) !== n) return false;
  if (proto === NETLINK_NETFILTER) {
    const type = u16(4);
    return (
      type >> 8 === NFNL_SUBSYS_NFTABLES &&
      NFT_GET_TABLE[type & 0xff] === true &&
      (u16(6) & NLM_F_REQUEST) !== 0
    );
  }
  const want = NLM_F_REQUEST | NLM_F_DUMP;
  return u16(4) === SOCK_DIAG_BY_FAMILY && (u16(6) & want) === want;
}

/** Why a socket/sendto/recvfrom/getsockopt call is not an allowed query, or undefined when it is. */
function sockDiagRefusal(name: string, call: Call, batch: readonly Call[] | undefined): string | undefined {
  const zero = (i: number) => intArg(argAt(call, i)) === 0n;
  if (name === 'socket')
    return netlinkSocketProto(call) !== undefined || isIptSocket(call)
      ? undefined
      : 'to call socket other than (AF_NETLINK, NETLINK_SOCK_DIAG or NETLINK_NETFILTER) or (AF_INET, SOCK_RAW, IPPROTO_RAW)';
  const sock = socketOf(call, batch);
  if (name === 'getsockopt') {
    const opt = intArg(argAt(call, 2));
    const ok =
      isIptSocket(sock) &&
      intArg(argAt(call, 1)) === toBigInt(SOL_IP) &&
      (opt === toBigInt(IPT_SO_GET_INFO) || opt === toBigInt(IPT_SO_GET_ENTRIES));
    return ok
      ? undefined
      : 'to call getsockopt but IPT_SO_GET_INFO/IPT_SO_GET_ENTRIES on an (AF_INET, SOCK_RAW, IPPROTO_RAW) socket opened in the same batch';
  }
  const proto = netlinkSocketProto(sock);
  if (proto === undefined)
    return `to call ${name} on anything but a NETLINK_NETFILTER or NETLINK_SOCK_DIAG socket opened in the same batch`;
  if (name === 'sendto') {
    const ok =
      isAllowedRequest(proto, argAt(call, 1), intArg(argAt(call, 2))) && zero(3) && zero(4) && zero(5);
    return ok
      ? undefined
      : 'to call sendto with anything but one SOCK_DIAG_BY_FAMILY dump request or one nf_tables GET request';
  }
  const f = intArg(argAt(call, 3));
  const ok = argAt(call, 1)?.kind === 'out' && f !== undefined && (f & ~toBigInt(MSG_DONTWAIT)) === 0n;
  return ok && zero(4) && zero(5)
    ? undefined
    : 'to call recvfrom with flags other than MSG_DONTWAIT or an address';
}

/** True for fsopen("tracefs"|"debugfs", 0|FSOPEN_CLOEXEC). */
function isAllowedFsopen(call: Call | undefined): boolean {
  if (!call || nameOf(call.nr) !== 'fsopen' || call.args.length > 2) return false;
  const a = argAt(call, 0);
  if (a?.kind !== 'in') return false;
  // Exactly one NUL, at the end: the kernel reads the name up to the first NUL.
  const d = a.data;
  const end = d.indexOf(0);
  if (end !== d.length - 1) return false;
  const fs = pathArg(a);
  const flags = intArg(argAt(call, 1));
  return (
    fs !== undefined && MOUNT_FS_TABLE[fs] === true && (flags === 0n || flags === toBigInt(FSOPEN_CLOEXEC))
  );
}

/** Why an fsopen/fsconfig/fsmount call is not the allowed detached-mount shape, or undefined. */
function detachedMountRefusal(
  name: string,
  call: Call,
  batch: readonly Call[] | undefined,
): string | undefined {
  const shape =
    'a detached read-only tracefs/debugfs mount (fsopen of tracefs|debugfs; fsconfig CMD_CREATE only; fsmount with MOUNT_ATTR_RDONLY; both on that fsopen of the same batch)';
  if (name === 'fsopen') return isAllowedFsopen(call) ? undefined : `to call fsopen other than ${shape}`;
  if (!isAllowedFsopen(socketOf(call, batch))) return `to call ${name} other than ${shape}`;
  const zero = (i: number) => intArg(argAt(call, i)) === 0n;
  if (name === 'fsconfig') {
    const ok = intArg(argAt(call, 1)) === toBigInt(FSCONFIG_CMD_CREATE) && zero(2) && zero(3) && zero(4);
    return ok && call.args.length === 5 ? undefined : `to call fsconfig other than ${shape}`;
  }
  const flags = intArg(argAt(call, 1));
  const attr = intArg(argAt(call, 2));
  const ok =
    call.args.length === 3 &&
    (flags === 0n || flags === toBigInt(FSMOUNT_CLOEXEC)) &&
    attr !== undefined &&
    (attr & toBigInt(MOUNT_ATTR_RDONLY)) !== 0n &&
    (attr & ~toBigInt(MOUNT_ATTR_RESTRICTING)) === 0n;
  return ok ? undefined : `to call fsmount other than ${shape}`;
}

/** Options of a {@link PolicyExecutor}. */
export interface PolicyOptions {
  /** The plugin whose calls this executor carries (named in errors). */
  plugin: string;
  /** Extras granted on top of the read-only policy (the plugin's declared needs, when `--allow-write` was given). */
  grant?: PluginNeeds;
}

/** The refusal of a call (see checkCall). */
function refusal(opts: PolicyOptions, name: string, detail: string, flags?: string): PolicyViolationError {
  return new PolicyViolationError(
    opts.plugin,
    name,
    `plugin '${opts.plugin}' is not allowed ${detail}: vmi plugins are read-only unless the plugin declares \`needs\` and --allow-write is given`,
    flags,
  );
}

/** ` "PATH"` of an open's path argument, for a refusal's message ('' when not a path). */
function pathSuffix(call: Call, pathIdx: number): string {
  const path = pathArg(argAt(call, pathIdx));
  return path === undefined ? '' : ` ${JSON.stringify(path)}`;
}

/**
 * Checks one call against the policy. Returns undefined when allowed, else the refusal
 * as a {@link PolicyViolationError} (not thrown). `batch` is the whole submission the
 * call belongs to: sock_diag's sendto/recvfrom are allowed only on a socket of it.
 */
export function checkCall(
  call: Call,
  opts: PolicyOptions,
  batch?: readonly Call[],
): PolicyViolationError | undefined {
  const name = nameOf(call.nr);
  if (granted(opts.grant, name)) return undefined;
  if (name === 'bpf') {
    const cmd = intArg(argAt(call, 0));
    if (cmd !== undefined && cmd >= 0n && cmd < 64n && BPF_TABLE[toNumber(cmd)] === true) return undefined;
    return refusal(
      opts,
      name,
      `to call bpf with command ${cmd ?? '?'} (only the read-only queries: GET_NEXT_ID, GET_FD_BY_ID, OBJ_GET_INFO_BY_FD)`,
    );
  }
  if (SOCK_DIAG_TABLE[name] === true) {
    const why = sockDiagRefusal(name, call, batch);
    return why === undefined ? undefined : refusal(opts, name, why);
  }
  if (MOUNT_TABLE[name] === true) {
    const why = detachedMountRefusal(name, call, batch);
    return why === undefined ? undefined : refusal(opts, name, why);
  }
  if (READ_ONLY_TABLE[name] !== true) return refusal(opts, name, `to call ${name}`);
  if (name === 'open' || name === 'openat') {
    // No destructuring here: it would go through Array.prototype[Symbol.iterator].
    const pathIdx = name === 'open' ? 0 : 1;
    const flagIdx = name === 'open' ? 1 : 2;
    const flags = intArg(argAt(call, flagIdx));
    // The path is decoded only for a refusal's message: most opens pass.
    if (flags === undefined)
      return refusal(
        opts,
        name,
        `to call ${name}${pathSuffix(call, pathIdx)} with flags not known in advance`,
      );
    const f = toNumber(asUintN(32, flags));
    if (f & WRITE_OPEN_FLAGS && !opts.grant?.writeFiles) {
      const text = describeOpenFlags(f);
      return refusal(opts, name, `to call ${name}${pathSuffix(call, pathIdx)} with ${text}`, text);
    }
  }
  if (name === 'syslog') {
    const action = intArg(argAt(call, 0));
    if (action === undefined || SYSLOG_TABLE[toNumber(action)] !== true) {
      return refusal(
        opts,
        name,
        `to call syslog with action ${action ?? '?'} (only 3 READ_ALL and 10 SIZE_BUFFER read without changing the log)`,
      );
    }
  }
  return undefined;
}

/**
 * True when the read-only policy allows the call with no grants: running it twice leaves
 * the guest as running it once. The shadow engine may run a batch of such calls again on
 * a new shadow when the old one died in the middle of it.
 */
export function isReadOnlyCall(call: Call): boolean {
  return checkCall(call, { plugin: '' }) === undefined;
}

/**
 * A private copy of calls: fresh objects and byte arrays that nobody else holds, so what
 * was checked is exactly what runs (a caller cannot change an argument between the
 * check and the encoding). Non-plain shapes are refused by the check that follows.
 *
 * Built only with array literals and Array.from over a null-prototype array-like (both
 * define their elements as own data properties): no setter or iterator a plugin put on
 * Array.prototype or Object.prototype sees or shapes the copy. ~0.35 µs per call; the
 * element-by-element defineProperty this replaced cost ~2.6 µs, ~3 ms of host time per
 * pslist of 117 processes (the listing's and the first slice's on the critical path).
 */
export function snapshotCalls(calls: readonly Call[]): Call[] {
  if (!isArray(calls)) throw new TypeError('calls must be an array');
  return freeze(arrayOf(calls.length, (i) => copyCall(calls[i], i))) as Call[];
}

function copyCall(c: Call, i: number): Call {
  const src = c.args;
  if (!isArray(src) || src.length > 6) throw new TypeError('a call takes an array of at most 6 arguments');
  const a = (j: number): CallArg => copyArg(src[j], i, j);
  let args: CallArg[];
  switch (src.length) {
    case 0:
      args = [];
      break;
    case 1:
      args = [a(0)];
      break;
    case 2:
      args = [a(0), a(1)];
      break;
    case 3:
      args = [a(0), a(1), a(2)];
      break;
    case 4:
      args = [a(0), a(1), a(2), a(3)];
      break;
    case 5:
      args = [a(0), a(1), a(2), a(3), a(4)];
      break;
    default:
      args = [a(0), a(1), a(2), a(3), a(4), a(5)];
  }
  return freeze({ nr: toNumber(c.nr), args: freeze(args) as CallArg[] });
}

function copyArg(a: CallArg, i: number, j: number): CallArg {
  if (a.kind === 'int') return freeze({ kind: 'int', value: toBigInt(a.value) });
  if (a.kind === 'in' && isView(a.data)) return freeze({ kind: 'in', data: new U8(a.data) });
  if (a.kind === 'out' && a.init === undefined && a.pointers === undefined)
    return freeze({ kind: 'out', size: toNumber(a.size), keep: a.keep === 'all' ? 'all' : 'ret' });
  if (a.kind === 'out' && isView(a.init)) {
    const src = a.pointers;
    let ptrs: number[] = [];
    if (src !== undefined) {
      if (!isArray(src) || src.length > 64) throw new TypeError(`bad pointers of argument ${j} of call ${i}`);
      ptrs = arrayOf(src.length, (k) => toNumber(src[k]));
    }
    return freeze({
      kind: 'out',
      size: toNumber(a.size),
      keep: a.keep === 'all' ? 'all' : 'ret',
      init: new U8(a.init),
      pointers: freeze(ptrs),
    });
  }
  if (a.kind === 'result') return freeze({ kind: 'result', index: toNumber(a.index) });
  throw new TypeError(`bad argument ${j} of call ${i}`);
}

// Copies a PolicyExecutor made and handed straight on (synchronously) to its inner
// executor: deep-frozen, their byte arrays fresh and held by no plugin. The engine's gate
// (src/runner/policy-gate.ts) checks these again without copying them a second time. The
// WeakSet methods are taken now, before any pack loads, and called unbound-proof.
const fresh = new WeakSet<object>();
const addFresh = Function.prototype.call.bind(WeakSet.prototype.add) as (
  s: WeakSet<object>,
  v: object,
) => void;
const hasFresh = Function.prototype.call.bind(WeakSet.prototype.has) as (
  s: WeakSet<object>,
  v: object,
) => boolean;

/**
 * `calls` itself when it is a copy a {@link PolicyExecutor} made (checked already and
 * out of every plugin's reach: nothing to copy again), else a new {@link snapshotCalls}.
 */
export function snapshotUnlessFresh(calls: readonly Call[]): readonly Call[] {
  return hasFresh(fresh, calls) ? calls : snapshotCalls(calls);
}

/** Throws the first refusal of `calls` under `opts`, if any. */
export function assertCallsAllowed(calls: readonly Call[], opts: PolicyOptions): void {
  for (let i = 0; i < calls.length; i++) {
    const v = checkCall(calls[i], opts, calls);
    if (v) throw v;
  }
}

/** A frozen copy of policy options (the grant's list copied too, without iterators). */
export function frozenPolicyOptions(opts: PolicyOptions): PolicyOptions {
  let grant: PluginNeeds | undefined;
  if (opts.grant) {
    const list = opts.grant.syscalls;
    const syscalls: string[] = [];
    if (list)
      for (let i = 0; i < list.length; i++)
        defineProperty(syscalls, i, { value: String(list[i]), enumerable: true });
    grant = freeze({ syscalls: freeze(syscalls), writeFiles: opts.grant.writeFiles === true });
  }
  return freeze({ plugin: String(opts.plugin), grant });
}

/**
 * A {@link SyscallExecutor} that enforces the read-only policy in front of another
 * executor (the shadow session, a capture replay, a fake). Every call of a `run()` is
 * checked first; one refused call rejects the whole run with a PolicyViolationError and
 * nothing of it reaches the inner executor.
 *
 * The inner executor is held in a real private field (`#inner`): no property, prototype
 * or reflection path leads from an instance to it. Instances and the prototype are
 * frozen. The calls are copied before the check and the copy is what runs.
 */
export class PolicyExecutor implements SyscallExecutor {
  readonly #inner: SyscallExecutor;
  readonly #opts: PolicyOptions;

  constructor(inner: SyscallExecutor, opts: PolicyOptions) {
    this.#inner = inner;
    this.#opts = frozenPolicyOptions(opts);
    Object.freeze(this);
  }

  /** The plugin this executor carries calls for. */
  get plugin(): string {
    return this.#opts.plugin;
  }

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    const copy = snapshotCalls(calls);
    assertCallsAllowed(copy, this.#opts);
    addFresh(fresh, copy);
    return this.#inner.run(copy);
  }
}
Object.freeze(PolicyExecutor.prototype);
Object.freeze(PolicyExecutor);

/**
 * Refuses, before anything is sent to the guest, a plugin that declares write needs
 * when the user did not pass `--allow-write`.
 */
export function assertWriteAllowed(plugin: { name: string; needs?: PluginNeeds }, allowWrite: boolean): void {
  if (allowWrite || !needsWrite(plugin.needs)) return;
  const what = describeNeeds(plugin.needs);
  throw new PolicyViolationError(
    plugin.name,
    plugin.needs?.syscalls?.[0] ?? 'openat',
    `plugin '${plugin.name}' changes the guest (it declares ${what}): pass --allow-write to run it`,
  );
}
