/**
 * x86-64 syscall numbers, loaded from profiles/x86_64-syscalls.json (generated from the
 * kernel UAPI header asm/unistd_64.h). The x86-64 numbering is part of the kernel ABI and
 * never changes, so one table serves every guest kernel.
 */
import { isRecord, loadProfileJson, ProfileError } from './profile-loader.js';

/**
 * Syscalls the SDK and built-in plugins refer to by name. `sysno()` accepts only these, so
 * a typo is a compile error; every one of them is checked against the profile on load.
 * Use `sysnoOf()` for any other name.
 */
export const KNOWN_SYSCALLS = [
  'read',
  'write',
  'open',
  'close',
  'stat',
  'fstat',
  'lstat',
  'lseek',
  'mmap',
  'mprotect',
  'munmap',
  'pread64',
  'pwrite64',
  'readv',
  'access',
  'dup',
  'dup2',
  'getpid',
  'getppid',
  'gettid',
  'getuid',
  'geteuid',
  'getgid',
  'getegid',
  'getpgid',
  'getsid',
  'uname',
  'sysinfo',
  'syslog',
  'getdents64',
  'openat',
  'newfstatat',
  'readlink',
  'readlinkat',
  'faccessat',
  'statx',
  'getxattr',
  'process_vm_readv',
  'clone',
  'fork',
  'vfork',
  'execve',
  'wait4',
  'exit',
  'exit_group',
  'kill',
  'tgkill',
  'unlink',
  'unlinkat',
  'mkdirat',
  'prctl',
  'rt_sigprocmask',
  'rt_sigreturn',
  'nanosleep',
  'clock_gettime',
  'clock_nanosleep',
  'close_range',
  'chdir',
  'fchdir',
  'mlock',
  'munlock',
  'setsid',
  'rseq',
  'ioctl',
  'fcntl',
  'socket',
  'sendto',
  'recvfrom',
  'getsockname',
  'getpeername',
  'getrandom',
  'bpf',
  'getsockopt',
  'fsopen',
  'fsconfig',
  'fsmount',
] as const;

export type SyscallName = (typeof KNOWN_SYSCALLS)[number];

interface SyscallTable {
  byName: ReadonlyMap<string, number>;
  byNumber: ReadonlyMap<number, string>;
}

let table: SyscallTable | undefined;

function load(): SyscallTable {
  if (table) return table;
  const json = loadProfileJson('x86_64-syscalls.json');
  const raw = isRecord(json) ? json.syscalls : undefined;
  if (!isRecord(raw)) throw new ProfileError('x86_64-syscalls.json: missing "syscalls" object');
  const byName = new Map<string, number>();
  const byNumber = new Map<number, string>();
  for (const [name, nr] of Object.entries(raw)) {
    if (typeof nr !== 'number' || !Number.isInteger(nr) || nr < 0) {
      throw new ProfileError(`x86_64-syscalls.json: bad number for ${name}: ${String(nr)}`);
    }
    byName.set(name, nr);
    if (!byNumber.has(nr)) byNumber.set(nr, name);
  }
  for (const name of KNOWN_SYSCALLS) {
    if (!byName.has(name)) throw new ProfileError(`x86_64-syscalls.json: no entry for ${name}`);
  }
  table = { byName, byNumber };
  return table;
}

/** The x86-64 number of a syscall the SDK knows by name. */
export function sysno(name: SyscallName): number {
  return load().byName.get(name)!;
}

/** The x86-64 number of any syscall in the profile, or undefined for an unknown name. */
export function sysnoOf(name: string): number | undefined {
  return load().byName.get(name);
}

/** The name of syscall `nr`, or `syscall_<nr>` when the profile does not know it. */
export function syscallName(nr: number): string {
  return load().byNumber.get(nr) ?? `syscall_${nr}`;
}

/** Every syscall of the profile, name → number. */
export function allSyscalls(): ReadonlyMap<string, number> {
  return load().byName;
}
