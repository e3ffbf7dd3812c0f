/*
 * psnative: the fair in-guest baseline for vmi's process plugins (statically linked).
 * It makes the same system calls as vmi pslist, natively inside the guest:
 *
 *   psnative [-n K] [--cmdline] [--gap-ms G]
 *       K times (each after G ms asleep with --gap-ms: a guest that was idle, as vmi finds
 *       it between two commands): getdents64 on /proc; open/read/close /proc/stat (btime); for every
 *       numeric entry readlink /proc/PID/ns/pid, then open/read/close /proc/PID/stat,
 *       /proc/PID/status, /proc/PID/cgroup and /proc/PID/cmdline with --cmdline (psaux's
 *       baseline): pslist's and psaux's namespace columns (PID_NS_ID, NSPID, CGROUP)
 *       need the link and the cgroup file, so the baseline reads them too. Same first-read
 *       sizes as vmi (stat 1024, status 2048, cmdline 4096, cgroup 1024, /proc/stat 8192,
 *       getdents64 32 KiB).
 *       Prints one line:
 *       psnative procs=P runs=K syscalls=S median_us=M min_us=m max_us=X
 *   psnative spawn N
 *       forks N children that pause() forever (stdio on /dev/null, SIGHUP ignored) and
 *       exits once all of them exist: N extra processes that share their pages COW.
 *   psnative exec [-n K] CMD ARGS...
 *       runs CMD K times (fork, execvp, wait; stdout and stderr to /dev/null) and prints
 *       psnative-exec runs=K median_us=M min_us=m max_us=X
 *       (busybox date has no %N, so this times busybox ps in the guest).
 * Wall times are CLOCK_MONOTONIC, in microseconds.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 1000
#define MAX_PIDS 65536

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

static char dirbuf[32 << 10];
static char statbuf[1024], statusbuf[2048], cmdbuf[4096], cgroupbuf[1024], linkbuf[64], procstatbuf[8192];
static int pids[MAX_PIDS];
static long sink; /* keeps the light parsing from being optimized away */
static long syscalls;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static ssize_t read_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  syscalls++;
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size);
  close(fd);
  syscalls += 2;
  return n;
}

/* One pass; returns the number of processes. */
static int one_pass(int with_cmdline) {
  int npids = 0;
  int dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  syscalls++;
  if (dfd < 0) {
    perror("psnative: /proc");
    exit(1);
  }
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, dirbuf, sizeof dirbuf);
    syscalls++;
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct linux_dirent64 *d = (struct linux_dirent64 *)(dirbuf + off);
      off += d->d_reclen;
      const char *s = d->d_name;
      if (*s < '1' || *s > '9') continue;
      int pid = 0;
      while (*s >= '0' && *s <= '9') pid = pid * 10 + (*s++ - '0');
      if (*s == 0 && npids < MAX_PIDS) pids[npids++] = pid;
    }
  }
  close(dfd);
  syscalls++;

  ssize_t n = read_file("/proc/stat", procstatbuf, sizeof procstatbuf - 1);
  if (n > 0) {
    procstatbuf[n] = 0;
    char *b = strstr(procstatbuf, "\nbtime ");
    if (b) sink += atol(b + 7);
  }
  char path[64];
  /* vmi reads the namespace links in a batch of their own, before the files. */
  for (int i = 0; i < npids; i++) {
    snprintf(path, sizeof path, "/proc/%d/ns/pid", pids[i]);
    ssize_t l = readlink(path, linkbuf, sizeof linkbuf);
    syscalls++;
    if (l > 0) sink += linkbuf[l - 1];
  }
  for (int i = 0; i < npids; i++) {
    snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
    n = read_file(path, statbuf, sizeof statbuf - 1);
    if (n > 0) {
      statbuf[n] = 0;
      char *rp = strrchr(statbuf, ')');
      if (rp) sink += atol(rp + 4); /* ") S PPID" */
    }
    snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
    n = read_file(path, statusbuf, sizeof statusbuf - 1);
    if (n > 0) {
      statusbuf[n] = 0;
      char *u = strstr(statusbuf, "\nUid:");
      if (u) sink += atol(u + 5);
    }
    snprintf(path, sizeof path, "/proc/%d/cgroup", pids[i]);
    n = read_file(path, cgroupbuf, sizeof cgroupbuf);
    if (n > 0) sink += n;
    if (with_cmdline) {
      snprintf(path, sizeof path, "/proc/%d/cmdline", pids[i]);
      n = read_file(path, cmdbuf, sizeof cmdbuf);
      if (n > 0) sink += n;
    }
  }
  return npids;
}

static int parse_runs(const char *s) {
  int k = atoi(s);
  if (k < 1 || k > MAX_RUNS) {
    fprintf(stderr, "psnative: -n must be 1..%d\n", MAX_RUNS);
    exit(2);
  }
  return k;
}

static void report(const char *tag, int procs, int runs, int64_t *t) {
  qsort(t, runs, sizeof t[0], cmp_i64);
  int64_t median = runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
  if (procs >= 0)
    printf("%s procs=%d runs=%d syscalls=%ld median_us=%lld min_us=%lld max_us=%lld\n", tag, procs, runs,
           syscalls / runs, (long long)median, (long long)t[0], (long long)t[runs - 1]);
  else
    printf("%s runs=%d median_us=%lld min_us=%lld max_us=%lld\n", tag, runs, (long long)median,
           (long long)t[0], (long long)t[runs - 1]);
}

static int do_spawn(int n) {
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p < 0) {
      fprintf(stderr, "psnative spawn: fork %d: %s\n", i, strerror(errno));
      return 1;
    }
    if (p == 0) {
      signal(SIGHUP, SIG_IGN);
      int fd = open("/dev/null", O_RDWR);
      if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) close(fd);
      }
      for (;;) pause();
    }
  }
  printf("psnative spawned %d\n", n);
  return 0;
}

static int do_exec(int runs, char **argv) {
  static int64_t t[MAX_RUNS];
  for (int i = 0; i < runs; i++) {
    int64_t t0 = now_us();
    pid_t p = fork();
    if (p < 0) {
      perror("psnative exec: fork");
      return 1;
    }
    if (p == 0) {
      int fd = open("/dev/null", O_WRONLY);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execvp(argv[0], argv);
      _exit(127);
    }
    int st;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    t[i] = now_us() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "psnative exec: %s failed (status %d)\n", argv[0], st);
      return 1;
    }
  }
  report("psnative-exec", -1, runs, t);
  return 0;
}

int main(int argc, char **argv) {
  static int64_t t[MAX_RUNS];
  int runs = 10, with_cmdline = 0, gap_ms = 0;
  if (argc >= 3 && strcmp(argv[1], "spawn") == 0) return do_spawn(atoi(argv[2]));
  if (argc >= 3 && strcmp(argv[1], "nap") == 0) {
    /* The naive polling loop the shadow's idle cost is compared with: nanosleep(MS), forever. */
    struct timespec ts = {atoi(argv[2]) / 1000, (atoi(argv[2]) % 1000) * 1000000L};
    for (;;) nanosleep(&ts, NULL);
  }
  if (argc >= 2 && strcmp(argv[1], "exec") == 0) {
    int i = 2;
    if (i + 1 < argc && strcmp(argv[i], "-n") == 0) {
      runs = parse_runs(argv[i + 1]);
      i += 2;
    }
    if (i < argc && strcmp(argv[i], "--") == 0) i++;
    if (i >= argc) {
      fprintf(stderr, "usage: psnative exec [-n K] CMD ARGS...\n");
      return 2;
    }
    return do_exec(runs, argv + i);
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      runs = parse_runs(argv[++i]);
    else if (strcmp(argv[i], "--cmdline") == 0)
      with_cmdline = 1;
    else if (strcmp(argv[i], "--gap-ms") == 0 && i + 1 < argc) {
      char *end;
      long g = strtol(argv[++i], &end, 10);
      gap_ms = (int)g;
      if (*argv[i] == '\0' || *end != '\0' || g < 0 || g > 10000) {
        fprintf(stderr, "psnative: --gap-ms must be 0..10000\n");
        return 2;
      }
    } else {
      fprintf(stderr,
              "usage: psnative [-n K] [--cmdline] [--gap-ms G] | spawn N | nap MS | exec [-n K] CMD ARGS...\n");
      return 2;
    }
  }
  int procs = 0;
  one_pass(with_cmdline); /* warm-up, not timed (dentries, page cache) */
  syscalls = 0;
  for (int i = 0; i < runs; i++) {
    if (gap_ms > 0) {
      struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
      nanosleep(&gap, NULL);
    }
    int64_t t0 = now_us();
    procs = one_pass(with_cmdline);
    t[i] = now_us() - t0;
  }
  report(with_cmdline ? "psnative-cmdline" : "psnative", procs, runs, t);
  return sink == 42 ? 3 : 0;
}
