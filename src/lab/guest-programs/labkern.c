/*
 * labkern: lab workload helpers for the kernel-facing plugins (issue 17: capabilities,
 * ptrace, ebpf). Statically linked, no libc headers beyond the kernel's uapi.
 *
 *   labkern caps        sets known capability sets on itself, then sleeps:
 *                       inheritable NET_BIND_SERVICE+NET_RAW, ambient NET_RAW,
 *                       effective = all but SYS_MODULE and SYS_BOOT, permitted = all but
 *                       SYS_MODULE, bounding without SYS_MODULE
 *   labkern sleep       sleeps (the tracee)
 *   labkern trace PID   PTRACE_SEIZEs PID (it keeps running) and sleeps: PID's TracerPid
 *   labkern bpf PORT    creates an array map "vmilab_map", loads a socket filter
 *                       "vmilab_sockflt" that references it, attaches it (SO_ATTACH_BPF)
 *                       to a UDP socket bound on 127.0.0.1:PORT, keeps every fd, sleeps
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void sleep_forever(void) {
  for (;;) pause();
}

static int caps(void) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  uint64_t all = (1ULL << (CAP_LAST_CAP + 1)) - 1;
  uint64_t prm = all & ~(1ULL << CAP_SYS_MODULE);
  uint64_t eff = prm & ~(1ULL << CAP_SYS_BOOT);
  uint64_t inh = (1ULL << CAP_NET_BIND_SERVICE) | (1ULL << CAP_NET_RAW);
  if (prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0) != 0) { perror("PR_CAPBSET_DROP"); return 1; }
  d[0].effective = (uint32_t)eff; d[1].effective = (uint32_t)(eff >> 32);
  d[0].permitted = (uint32_t)prm; d[1].permitted = (uint32_t)(prm >> 32);
  d[0].inheritable = (uint32_t)inh; d[1].inheritable = (uint32_t)(inh >> 32);
  if (syscall(SYS_capset, &h, d) != 0) { perror("capset"); return 1; }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0) != 0) { perror("ambient"); return 1; }
  printf("labkern caps ready\n");
  fflush(stdout);
  sleep_forever();
  return 0;
}

static int trace(const char *pid) {
  pid_t p = (pid_t)atoi(pid);
  if (ptrace(PTRACE_SEIZE, p, 0, 0) != 0) { perror("PTRACE_SEIZE"); return 1; }
  printf("labkern tracing %d\n", p);
  fflush(stdout);
  sleep_forever();
  return 0;
}

static long sys_bpf(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof(*a)); }

static int bpf(const char *port) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = 4;
  a.value_size = 8;
  a.max_entries = 4;
  strncpy(a.map_name, "vmilab_map", sizeof(a.map_name) - 1);
  int map = (int)sys_bpf(BPF_MAP_CREATE, &a);
  if (map < 0) { perror("BPF_MAP_CREATE"); return 1; }
  /* r1 = map (ld_imm64 pseudo map fd); r0 = -1 (keep the whole packet); exit */
  struct bpf_insn insns[] = {
      {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map},
      {.code = 0},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = -1},
      {.code = BPF_JMP | BPF_EXIT},
  };
  static char log[4096];
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
  a.license = (uint64_t)(uintptr_t)"GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof(log);
  a.log_level = 1;
  strncpy(a.prog_name, "vmilab_sockflt", sizeof(a.prog_name) - 1);
  int prog = (int)sys_bpf(BPF_PROG_LOAD, &a);
  if (prog < 0) { perror("BPF_PROG_LOAD"); fprintf(stderr, "%s\n", log); return 1; }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (s < 0 || bind(s, (struct sockaddr *)&sin, sizeof(sin)) != 0) { perror("bind"); return 1; }
  if (setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof(prog)) != 0) { perror("SO_ATTACH_BPF"); return 1; }
  printf("labkern bpf map fd %d prog fd %d socket fd %d\n", map, prog, s);
  fflush(stdout);
  sleep_forever();
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "caps") == 0) return caps();
  if (argc >= 2 && strcmp(argv[1], "sleep") == 0) { sleep_forever(); return 0; }
  if (argc >= 3 && strcmp(argv[1], "trace") == 0) return trace(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "bpf") == 0) return bpf(argv[2]);
  fprintf(stderr, "usage: labkern caps | sleep | trace PID | bpf PORT\n");
  return 2;
}
