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
 *   labkern nft         creates, through nf_tables netlink, table inet vmilab with base
 *                       chain input (filter, hook input, priority 0, policy accept) and
 *                       the rule `meta l4proto tcp tcp dport 31337 counter drop comment
 *                       "vmilab-rule"`, then exits
 *   labkern nft-list    dumps tables, chains and rules (netlink GET): one line each
 *   labkern iptables    asks for the legacy filter table (IPT_SO_GET_INFO), which makes
 *                       the kernel instantiate it, and prints its entry count
 */
#define _GNU_SOURCE
/* glibc's netinet/in.h before the uapi headers (linux/libc-compat.h then defers to it). */
#include <netinet/in.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netlink.h>
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

/* ---- nf_tables over netlink ---- */
static char nlbuf[8192];
static size_t nllen;
static uint32_t nlseq = 1;

static struct nlmsghdr *nl_begin(uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id) {
  struct nlmsghdr *h = (struct nlmsghdr *)(nlbuf + nllen);
  memset(h, 0, NLMSG_HDRLEN + sizeof(struct nfgenmsg));
  h->nlmsg_type = type;
  h->nlmsg_flags = NLM_F_REQUEST | flags;
  h->nlmsg_seq = nlseq++;
  struct nfgenmsg *g = NLMSG_DATA(h);
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = htons(res_id);
  h->nlmsg_len = NLMSG_HDRLEN + sizeof(*g);
  return h;
}
static void nl_end(struct nlmsghdr *h) { nllen += NLMSG_ALIGN(h->nlmsg_len); }
static struct nlattr *nla_put(struct nlmsghdr *h, uint16_t type, const void *data, size_t len) {
  struct nlattr *a = (struct nlattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
  a->nla_type = type;
  a->nla_len = (uint16_t)(NLA_HDRLEN + len);
  if (len) memcpy((char *)a + NLA_HDRLEN, data, len);
  h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + NLA_ALIGN(a->nla_len);
  return a;
}
static void nla_str(struct nlmsghdr *h, uint16_t t, const char *s) { nla_put(h, t, s, strlen(s) + 1); }
static void nla_u32(struct nlmsghdr *h, uint16_t t, uint32_t v) { v = htonl(v); nla_put(h, t, &v, 4); }
static struct nlattr *nest_begin(struct nlmsghdr *h, uint16_t t) { return nla_put(h, t | NLA_F_NESTED, NULL, 0); }
static void nest_end(struct nlmsghdr *h, struct nlattr *a) { a->nla_len = (uint16_t)((char *)h + h->nlmsg_len - (char *)a); }

static void expr(struct nlmsghdr *h, const char *name, void (*data)(struct nlmsghdr *, const void *), const void *arg) {
  struct nlattr *el = nest_begin(h, NFTA_LIST_ELEM);
  nla_str(h, NFTA_EXPR_NAME, name);
  struct nlattr *d = nest_begin(h, NFTA_EXPR_DATA);
  data(h, arg);
  nest_end(h, d);
  nest_end(h, el);
}
static void e_meta(struct nlmsghdr *h, const void *a) { (void)a; nla_u32(h, NFTA_META_DREG, NFT_REG_1); nla_u32(h, NFTA_META_KEY, NFT_META_L4PROTO); }
static void e_cmp(struct nlmsghdr *h, const void *a) {
  const uint8_t *v = a;  /* v[0] = length, then the bytes */
  nla_u32(h, NFTA_CMP_SREG, NFT_REG_1);
  nla_u32(h, NFTA_CMP_OP, NFT_CMP_EQ);
  struct nlattr *d = nest_begin(h, NFTA_CMP_DATA);
  nla_put(h, NFTA_DATA_VALUE, v + 1, v[0]);
  nest_end(h, d);
}
static void e_payload(struct nlmsghdr *h, const void *a) {
  (void)a;
  nla_u32(h, NFTA_PAYLOAD_DREG, NFT_REG_1);
  nla_u32(h, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
  nla_u32(h, NFTA_PAYLOAD_OFFSET, 2);
  nla_u32(h, NFTA_PAYLOAD_LEN, 2);
}
static void e_counter(struct nlmsghdr *h, const void *a) { (void)a; uint64_t z = 0; nla_put(h, NFTA_COUNTER_BYTES, &z, 8); nla_put(h, NFTA_COUNTER_PACKETS, &z, 8); }
static void e_drop(struct nlmsghdr *h, const void *a) {
  (void)a;
  nla_u32(h, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
  struct nlattr *d = nest_begin(h, NFTA_IMMEDIATE_DATA);
  struct nlattr *v = nest_begin(h, NFTA_DATA_VERDICT);
  nla_u32(h, NFTA_VERDICT_CODE, NF_DROP);
  nest_end(h, v);
  nest_end(h, d);
}

static int nl_socket(void) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (s < 0) perror("socket(NETLINK_NETFILTER)");
  return s;
}

/* Reads answers until DONE (dump) or the last ACK; prints dump lines with `show`. */
static int nl_recv(int s, int dump, int acks, void (*show)(struct nlmsghdr *)) {
  static char rb[65536];
  for (;;) {
    ssize_t n = recv(s, rb, sizeof(rb), 0);
    if (n <= 0) { perror("recv"); return 1; }
    for (struct nlmsghdr *h = (struct nlmsghdr *)rb; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(h);
        if (e->error) { fprintf(stderr, "netlink error %d (seq %u)\n", e->error, h->nlmsg_seq); return 1; }
        if (!dump && --acks == 0) return 0;
        continue;
      }
      if (show) show(h);
    }
  }
}

static int nft_create(void) {
  int s = nl_socket();
  if (s < 0) return 1;
  nllen = 0;
  struct nlmsghdr *h = nl_begin(NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  nl_end(h);
  h = nl_begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
  nla_str(h, NFTA_TABLE_NAME, "vmilab");
  nl_end(h);
  h = nl_begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET, 0);
  nla_str(h, NFTA_CHAIN_TABLE, "vmilab");
  nla_str(h, NFTA_CHAIN_NAME, "input");
  struct nlattr *hook = nest_begin(h, NFTA_CHAIN_HOOK);
  nla_u32(h, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_IN);
  nla_u32(h, NFTA_HOOK_PRIORITY, 0);
  nest_end(h, hook);
  nla_u32(h, NFTA_CHAIN_POLICY, NF_ACCEPT);
  nla_str(h, NFTA_CHAIN_TYPE, "filter");
  nl_end(h);
  h = nl_begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, NFPROTO_INET, 0);
  nla_str(h, NFTA_RULE_TABLE, "vmilab");
  nla_str(h, NFTA_RULE_CHAIN, "input");
  struct nlattr *list = nest_begin(h, NFTA_RULE_EXPRESSIONS);
  static const uint8_t tcp[] = {1, 6}, port[] = {2, 0x7a, 0x69}; /* 31337 */
  expr(h, "meta", e_meta, NULL);
  expr(h, "cmp", e_cmp, tcp);
  expr(h, "payload", e_payload, NULL);
  expr(h, "cmp", e_cmp, port);
  expr(h, "counter", e_counter, NULL);
  expr(h, "immediate", e_drop, NULL);
  nest_end(h, list);
  /* libnftnl userdata: the comment TLV (type 0, length, NUL-terminated text) */
  static const char comment[] = "vmilab-rule";
  uint8_t ud[2 + sizeof(comment)];
  ud[0] = 0;
  ud[1] = sizeof(comment);
  memcpy(ud + 2, comment, sizeof(comment));
  nla_put(h, NFTA_RULE_USERDATA, ud, sizeof(ud));
  nl_end(h);
  h = nl_begin(NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  nl_end(h);
  struct sockaddr_nl k = {.nl_family = AF_NETLINK};
  if (sendto(s, nlbuf, nllen, 0, (struct sockaddr *)&k, sizeof(k)) < 0) { perror("sendto"); return 1; }
  if (nl_recv(s, 0, 3, NULL) != 0) return 1;
  printf("labkern nft ready\n");
  return 0;
}

static struct nlattr *attr(struct nlmsghdr *h, uint16_t type) {
  struct nlattr *a = (struct nlattr *)((char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
  int left = (int)h->nlmsg_len - (int)((char *)a - (char *)h);
  while (left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= left) {
    if ((a->nla_type & NLA_TYPE_MASK) == type) return a;
    left -= NLA_ALIGN(a->nla_len);
    a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
  }
  return NULL;
}
static const char *astr(struct nlmsghdr *h, uint16_t t) { struct nlattr *a = attr(h, t); return a ? (char *)a + NLA_HDRLEN : "?"; }
static unsigned long long abe64(struct nlmsghdr *h, uint16_t t) {
  struct nlattr *a = attr(h, t);
  if (!a) return 0;
  uint8_t *p = (uint8_t *)a + NLA_HDRLEN;
  unsigned long long v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static int fam(struct nlmsghdr *h) { return ((struct nfgenmsg *)NLMSG_DATA(h))->nfgen_family; }
static void show_table(struct nlmsghdr *h) { printf("nft table %d %s handle %llu\n", fam(h), astr(h, NFTA_TABLE_NAME), abe64(h, NFTA_TABLE_HANDLE)); }
static void show_chain(struct nlmsghdr *h) {
  printf("nft chain %d %s %s handle %llu type %s\n", fam(h), astr(h, NFTA_CHAIN_TABLE), astr(h, NFTA_CHAIN_NAME),
         abe64(h, NFTA_CHAIN_HANDLE), attr(h, NFTA_CHAIN_TYPE) ? astr(h, NFTA_CHAIN_TYPE) : "-");
}
static void show_rule(struct nlmsghdr *h) {
  printf("nft rule %d %s %s handle %llu\n", fam(h), astr(h, NFTA_RULE_TABLE), astr(h, NFTA_RULE_CHAIN), abe64(h, NFTA_RULE_HANDLE));
}

static int nft_list(void) {
  static const int msgs[] = {NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE};
  static void (*const shows[])(struct nlmsghdr *) = {show_table, show_chain, show_rule};
  for (int i = 0; i < 3; i++) {
    int s = nl_socket();
    if (s < 0) return 1;
    nllen = 0;
    struct nlmsghdr *h = nl_begin((NFNL_SUBSYS_NFTABLES << 8) | msgs[i], NLM_F_DUMP, AF_UNSPEC, 0);
    nl_end(h);
    if (send(s, nlbuf, nllen, 0) < 0) { perror("send"); return 1; }
    if (nl_recv(s, 1, 0, shows[i]) != 0) return 1;
    close(s);
  }
  return 0;
}

static int iptables(void) {
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s < 0) { perror("socket(SOCK_RAW)"); return 1; }
  struct ipt_getinfo info;
  memset(&info, 0, sizeof(info));
  strcpy(info.name, "filter");
  socklen_t len = sizeof(info);
  if (getsockopt(s, SOL_IP, IPT_SO_GET_INFO, &info, &len) != 0) { perror("IPT_SO_GET_INFO"); return 1; }
  printf("labkern iptables filter entries %u size %u\n", info.num_entries, info.size);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "nft") == 0) return nft_create();
  if (argc >= 2 && strcmp(argv[1], "nft-list") == 0) return nft_list();
  if (argc >= 2 && strcmp(argv[1], "iptables") == 0) return iptables();
  if (argc >= 2 && strcmp(argv[1], "caps") == 0) return caps();
  if (argc >= 2 && strcmp(argv[1], "sleep") == 0) { sleep_forever(); return 0; }
  if (argc >= 3 && strcmp(argv[1], "trace") == 0) return trace(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "bpf") == 0) return bpf(argv[2]);
  fprintf(stderr, "usage: labkern caps | sleep | trace PID | bpf PORT | nft | nft-list | iptables\n");
  return 2;
}
