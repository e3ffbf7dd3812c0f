/*
 * labsandbox: a "sandboxed" root service for the vmi lab guest, the kind systemd units and
 * container runtimes make. It confines itself as the flags say, then forks a busy worker
 * (comm "sandbox-busy") that keeps making syscalls, so that vmi's bootstrap can borrow it.
 * Tests start it from the guest console, once per condition and with all of them at once:
 *
 *   --pidns --mntns --netns --utsns --ipcns --cgroupns   own namespaces (unshare(2)); with
 *                        --pidns --mntns a fresh /proc is mounted inside (like
 *                        `unshare --mount-proc`); --mntns also mounts a private tmpfs
 *   --chroot DIR         chroot into DIR (created, empty)
 *   --seccomp-wx         a seccomp filter refusing W+X mmap/mprotect with EPERM
 *                        (systemd's MemoryDenyWriteExecute)
 *   --drop-caps          every capability dropped (bounding set too); no_new_privs
 *   --cgroup NAME        own cgroup /sys/fs/cgroup/NAME with cpu.max 10000/100000 and
 *                        pids.max = its task count + SLACK (--pids-slack, default 0)
 *   --nice N             nice N           --nofile N   RLIMIT_NOFILE N
 *   --all                all of the above (chroot /tmp/sandbox-root, cgroup sandbox-all,
 *                        nice 19, nofile 16)
 *
 * The worker prints nothing; the parent writes "ready" to stdout once the worker runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "labsandbox: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) die(path);
  close(fd);
}

static int count_tasks(int fd) {
  char buf[32] = {0};
  if (pread(fd, buf, sizeof buf - 1, 0) <= 0) die("pids.current");
  return atoi(buf);
}

static void install_seccomp_wx(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 1, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 4),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 6), /* PROT_WRITE | PROT_EXEC */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die("seccomp");
}

static void drop_caps(void) {
  for (int c = 0; c <= 63; c++) prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  if (syscall(SYS_capset, &h, d) < 0) die("capset");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
}

/* The busy worker: a syscall every 2 ms, forever. */
static void busy(int pids_max_fd, int pids_current_fd, int slack) {
  prctl(PR_SET_NAME, "sandbox-busy", 0, 0, 0);
  if (pids_max_fd >= 0) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d\n", count_tasks(pids_current_fd) + slack);
    if (write(pids_max_fd, buf, strlen(buf)) < 0) die("pids.max");
  }
  puts("ready");
  fflush(stdout);
  struct timespec ts = {0, 2000000};
  for (;;) {
    syscall(SYS_getppid);
    nanosleep(&ts, NULL);
  }
}

int main(int argc, char **argv) {
  int ns = 0, seccomp_wx = 0, caps = 0, nice_v = 0, set_nice = 0, nofile = 0, slack = 0;
  const char *root = NULL, *cgroup = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--pidns")) ns |= CLONE_NEWPID;
    else if (!strcmp(a, "--mntns")) ns |= CLONE_NEWNS;
    else if (!strcmp(a, "--netns")) ns |= CLONE_NEWNET;
    else if (!strcmp(a, "--utsns")) ns |= CLONE_NEWUTS;
    else if (!strcmp(a, "--ipcns")) ns |= CLONE_NEWIPC;
    else if (!strcmp(a, "--cgroupns")) ns |= CLONE_NEWCGROUP;
    else if (!strcmp(a, "--seccomp-wx")) seccomp_wx = 1;
    else if (!strcmp(a, "--drop-caps")) caps = 1;
    else if (!strcmp(a, "--chroot") && next) root = argv[++i];
    else if (!strcmp(a, "--cgroup") && next) cgroup = argv[++i];
    else if (!strcmp(a, "--pids-slack") && next) slack = atoi(argv[++i]);
    else if (!strcmp(a, "--nice") && next) set_nice = 1, nice_v = atoi(argv[++i]);
    else if (!strcmp(a, "--nofile") && next) nofile = atoi(argv[++i]);
    else if (!strcmp(a, "--all")) {
      ns = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
      seccomp_wx = caps = 1;
      root = "/tmp/sandbox-root";
      cgroup = "sandbox-all";
      set_nice = 1, nice_v = 19, nofile = 16;
    } else {
      fprintf(stderr, "labsandbox: unknown argument %s\n", a);
      return 2;
    }
  }
  prctl(PR_SET_NAME, "sandbox-init", 0, 0, 0);

  int pids_max_fd = -1, pids_current_fd = -1;
  if (cgroup) {
    char path[256], pid[32];
    write_file("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +pids");
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s", cgroup);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) die(path);
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s/cpu.max", cgroup);
    write_file(path, "10000 100000");
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s/cgroup.procs", cgroup);
    snprintf(pid, sizeof pid, "%d", getpid());
    write_file(path, pid);
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s/pids.max", cgroup);
    if ((pids_max_fd = open(path, O_WRONLY)) < 0) die(path);
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s/pids.current", cgroup);
    if ((pids_current_fd = open(path, O_RDONLY)) < 0) die(path);
  }
  if (ns && unshare(ns) < 0) die("unshare");
  if (ns & CLONE_NEWUTS) sethostname("sandbox", 7);
  if (ns & CLONE_NEWNS) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    mkdir("/mnt/sandbox-private", 0755);
    if (mount("sandbox-tmp", "/mnt/sandbox-private", "tmpfs", 0, "size=1m") < 0) die("tmpfs");
  }
  if (root && mkdir(root, 0755) < 0 && errno != EEXIST) die(root);

  /* The first child is PID 1 of a new PID namespace; the worker is its child (PID 2). */
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child > 0) {
    for (;;) pause();
  }
  if ((ns & CLONE_NEWPID) && (ns & CLONE_NEWNS)) {
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount proc");
  }
  if (root) {
    if (chroot(root) < 0) die("chroot");
    if (chdir("/") < 0) die("chdir");
  }
  if (set_nice && setpriority(PRIO_PROCESS, 0, nice_v) < 0) die("nice");
  if (nofile) {
    struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) die("rlimit");
  }
  if (caps) drop_caps();
  if (seccomp_wx) install_seccomp_wx();
  if (ns & CLONE_NEWPID) {
    pid_t worker = fork();
    if (worker < 0) die("fork worker");
    if (worker > 0) {
      prctl(PR_SET_NAME, "sandbox-pid1", 0, 0, 0);
      /* The init of a PID namespace reaps what is re-parented to it (as tini does). */
      for (;;)
        if (waitpid(-1, NULL, __WALL) < 0 && errno == ECHILD) pause();
    }
  }
  busy(pids_max_fd, pids_current_fd, slack);
  return 0;
}
