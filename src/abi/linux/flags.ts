/**
 * x86-64 Linux flag and constant values used with redirected syscalls (from the kernel
 * UAPI headers: asm-generic/fcntl.h, linux/fcntl.h, linux/stat.h, dirent.h, syslog.h).
 */

// open(2) / openat(2) flags (octal, as in asm-generic/fcntl.h).
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
/** The kernel forces this on for 64-bit callers; harmless to pass. */
export const O_LARGEFILE = 0o100000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_NOATIME = 0o1000000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;

// Signals (asm/signal.h, x86-64).
export const SIGKILL = 9;

// *at() directory fd and flags (linux/fcntl.h).
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_SYMLINK_FOLLOW = 0x400;
export const AT_NO_AUTOMOUNT = 0x800;
export const AT_EMPTY_PATH = 0x1000;
export const AT_STATX_SYNC_AS_STAT = 0x0000;
export const AT_STATX_FORCE_SYNC = 0x2000;
export const AT_STATX_DONT_SYNC = 0x4000;

// statx(2) mask bits (linux/stat.h).
export const STATX_TYPE = 0x1;
export const STATX_MODE = 0x2;
export const STATX_NLINK = 0x4;
export const STATX_UID = 0x8;
export const STATX_GID = 0x10;
export const STATX_ATIME = 0x20;
export const STATX_MTIME = 0x40;
export const STATX_CTIME = 0x80;
export const STATX_INO = 0x100;
export const STATX_SIZE = 0x200;
export const STATX_BLOCKS = 0x400;
/** Everything stat(2) returns. */
export const STATX_BASIC_STATS = 0x7ff;
export const STATX_BTIME = 0x800;
/** Kernel 5.8+. */
export const STATX_MNT_ID = 0x1000;
/** Kernel 6.1+. */
export const STATX_DIOALIGN = 0x2000;

// File type bits of st_mode / stx_mode.
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

// linux_dirent64.d_type values.
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;
export const DT_WHT = 14;

// lseek(2) whence.
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

// syslog(2) actions (linux/syslog.h).
export const SYSLOG_ACTION_READ_ALL = 3;
export const SYSLOG_ACTION_SIZE_BUFFER = 10;

// prctl(2) options used by the shadow.
export const PR_SET_NAME = 15;
export const PR_GET_NAME = 16;
export const PR_SET_TIMERSLACK = 29;

// clock ids.
export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;
export const CLOCK_BOOTTIME = 7;

/** Longest path the kernel accepts (including the NUL). */
export const PATH_MAX = 4096;

/**
 * USER_HZ: the unit of the tick counts in /proc (stat starttime, utime...). It is fixed
 * at 100 by the x86-64 ABI whatever the kernel's CONFIG_HZ (sysconf(_SC_CLK_TCK) = 100).
 */
export const USER_HZ = 100;

/** `'dir'`, `'reg'`, ... for a d_type value (`'unknown'` when the filesystem does not say). */
export function dtypeName(dtype: number): string {
  switch (dtype) {
    case DT_FIFO:
      return 'fifo';
    case DT_CHR:
      return 'chr';
    case DT_DIR:
      return 'dir';
    case DT_BLK:
      return 'blk';
    case DT_REG:
      return 'reg';
    case DT_LNK:
      return 'lnk';
    case DT_SOCK:
      return 'sock';
    case DT_WHT:
      return 'wht';
    default:
      return 'unknown';
  }
}
