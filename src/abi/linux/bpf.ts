/**
 * The bpf(2) read-only queries (include/uapi/linux/bpf.h, kernel/bpf/syscall.c): walking
 * the ids of loaded programs, maps and links (BPF_*_GET_NEXT_ID), opening one by id
 * (BPF_*_GET_FD_BY_ID) and reading its info (BPF_OBJ_GET_INFO_BY_FD). Layouts are the
 * uapi structs of Linux 6.1; the kernel copies min(its size, ours) and zero-fills, so
 * older and newer kernels answer the same fields at the same offsets.
 */

export const BPF_PROG_GET_NEXT_ID = 11;
export const BPF_MAP_GET_NEXT_ID = 12;
export const BPF_PROG_GET_FD_BY_ID = 13;
export const BPF_MAP_GET_FD_BY_ID = 14;
export const BPF_OBJ_GET_INFO_BY_FD = 15;
export const BPF_LINK_GET_FD_BY_ID = 30;
export const BPF_LINK_GET_NEXT_ID = 31;
/** The bpf commands that only read (what the read-only policy allows). */
export const BPF_READ_ONLY_COMMANDS: readonly number[] = Object.freeze([
  BPF_PROG_GET_NEXT_ID,
  BPF_MAP_GET_NEXT_ID,
  BPF_PROG_GET_FD_BY_ID,
  BPF_MAP_GET_FD_BY_ID,
  BPF_OBJ_GET_INFO_BY_FD,
  BPF_LINK_GET_FD_BY_ID,
  BPF_LINK_GET_NEXT_ID,
]);
/** map open flag: read-only fd (BPF_F_RDONLY). */
export const BPF_F_RDONLY = 1 << 3;

/** The size of the bpf_attr prefix each query uses (the `size` argument of bpf()). */
export const GET_ID_ATTR_SIZE = 12;
export const GET_INFO_ATTR_SIZE = 16;
/** Room given to each info struct (bigger than 6.1's: the kernel copies what it has). */
export const PROG_INFO_SIZE = 256;
export const MAP_INFO_SIZE = 128;
export const LINK_INFO_SIZE = 128;
/** Map ids asked for per program. */
export const PROG_MAP_IDS = 64;

export type BpfKind = 'prog' | 'map' | 'link';

export const NEXT_ID_CMD: Record<BpfKind, number> = {
  prog: BPF_PROG_GET_NEXT_ID,
  map: BPF_MAP_GET_NEXT_ID,
  link: BPF_LINK_GET_NEXT_ID,
};
export const FD_BY_ID_CMD: Record<BpfKind, number> = {
  prog: BPF_PROG_GET_FD_BY_ID,
  map: BPF_MAP_GET_FD_BY_ID,
  link: BPF_LINK_GET_FD_BY_ID,
};

/** enum bpf_prog_type. */
export const BPF_PROG_TYPES: readonly string[] = [
  'unspec',
  'socket_filter',
  'kprobe',
  'sched_cls',
  'sched_act',
  'tracepoint',
  'xdp',
  'perf_event',
  'cgroup_skb',
  'cgroup_sock',
  'lwt_in',
  'lwt_out',
  'lwt_xmit',
  'sock_ops',
  'sk_skb',
  'cgroup_device',
  'sk_msg',
  'raw_tracepoint',
  'cgroup_sock_addr',
  'lwt_seg6local',
  'lirc_mode2',
  'sk_reuseport',
  'flow_dissector',
  'cgroup_sysctl',
  'raw_tracepoint_writable',
  'cgroup_sockopt',
  'tracing',
  'struct_ops',
  'ext',
  'lsm',
  'sk_lookup',
  'syscall',
  'netfilter',
];
/** enum bpf_map_type. */
export const BPF_MAP_TYPES: readonly string[] = [
  'unspec',
  'hash',
  'array',
  'prog_array',
  'perf_event_array',
  'percpu_hash',
  'percpu_array',
  'stack_trace',
  'cgroup_array',
  'lru_hash',
  'lru_percpu_hash',
  'lpm_trie',
  'array_of_maps',
  'hash_of_maps',
  'devmap',
  'sockmap',
  'cpumap',
  'xskmap',
  'sockhash',
  'cgroup_storage',
  'reuseport_sockarray',
  'percpu_cgroup_storage',
  'queue',
  'stack',
  'sk_storage',
  'devmap_hash',
  'struct_ops',
  'ringbuf',
  'inode_storage',
  'task_storage',
  'bloom_filter',
  'user_ringbuf',
  'cgrp_storage',
  'arena',
];
/** enum bpf_link_type. */
export const BPF_LINK_TYPES: readonly string[] = [
  'unspec',
  'raw_tracepoint',
  'tracing',
  'cgroup',
  'iter',
  'netns',
  'xdp',
  'perf_event',
  'kprobe_multi',
  'struct_ops',
  'netfilter',
  'tcx',
  'uprobe_multi',
  'netkit',
];
/** enum bpf_attach_type. */
export const BPF_ATTACH_TYPES: readonly string[] = [
  'cgroup_inet_ingress',
  'cgroup_inet_egress',
  'cgroup_inet_sock_create',
  'cgroup_sock_ops',
  'sk_skb_stream_parser',
  'sk_skb_stream_verdict',
  'cgroup_device',
  'sk_msg_verdict',
  'cgroup_inet4_bind',
  'cgroup_inet6_bind',
  'cgroup_inet4_connect',
  'cgroup_inet6_connect',
  'cgroup_inet4_post_bind',
  'cgroup_inet6_post_bind',
  'cgroup_udp4_sendmsg',
  'cgroup_udp6_sendmsg',
  'lirc_mode2',
  'flow_dissector',
  'cgroup_sysctl',
  'cgroup_udp4_recvmsg',
  'cgroup_udp6_recvmsg',
  'cgroup_getsockopt',
  'cgroup_setsockopt',
  'trace_raw_tp',
  'trace_fentry',
  'trace_fexit',
  'modify_return',
  'lsm_mac',
  'trace_iter',
  'cgroup_inet4_getpeername',
  'cgroup_inet6_getpeername',
  'cgroup_inet4_getsockname',
  'cgroup_inet6_getsockname',
  'xdp_devmap',
  'cgroup_inet_sock_release',
  'xdp_cpumap',
  'sk_lookup',
  'xdp',
  'sk_skb_verdict',
  'sk_reuseport_select',
  'sk_reuseport_select_or_migrate',
  'perf_event',
  'trace_kprobe_multi',
  'lsm_cgroup',
  'struct_ops',
  'netfilter',
];

const nameOf = (table: readonly string[], n: number): string => table[n] ?? `unknown(${n})`;
export const progTypeName = (n: number): string => nameOf(BPF_PROG_TYPES, n);
export const mapTypeName = (n: number): string => nameOf(BPF_MAP_TYPES, n);
export const linkTypeName = (n: number): string => nameOf(BPF_LINK_TYPES, n);
export const attachTypeName = (n: number): string => nameOf(BPF_ATTACH_TYPES, n);

/** bpf_attr of GET_NEXT_ID / GET_FD_BY_ID: { start_id or id, next_id, open_flags }. */
export function encodeIdAttr(id: number, openFlags = 0): Uint8Array {
  const b = new Uint8Array(GET_ID_ATTR_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, id >>> 0, true);
  dv.setUint32(8, openFlags >>> 0, true);
  return b;
}

/** next_id of a GET_NEXT_ID attr the kernel wrote back. */
export function decodeNextId(attr: Uint8Array): number | undefined {
  if (attr.length < 8) return undefined;
  return new DataView(attr.buffer, attr.byteOffset, attr.byteLength).getUint32(4, true);
}

/**
 * One in-out blob for OBJ_GET_INFO_BY_FD: the attr { bpf_fd, info_len, info → +16 },
 * then the info struct, then (programs) room for map ids that info.map_ids points at.
 * `pointers` are the self-relative u64 fields (see the SDK's inOutBuffer).
 */
export function encodeInfoBlob(
  kind: BpfKind,
  fd: number,
): { size: number; init: Uint8Array; pointers: number[] } {
  const infoSize = kind === 'prog' ? PROG_INFO_SIZE : kind === 'map' ? MAP_INFO_SIZE : LINK_INFO_SIZE;
  const extra = kind === 'prog' ? PROG_MAP_IDS * 4 : 0;
  const size = GET_INFO_ATTR_SIZE + infoSize + extra;
  const init = new Uint8Array(size);
  const dv = new DataView(init.buffer);
  dv.setUint32(0, fd >>> 0, true);
  dv.setUint32(4, infoSize, true);
  dv.setBigUint64(8, BigInt(GET_INFO_ATTR_SIZE), true);
  const pointers = [8];
  if (kind === 'prog') {
    const info = GET_INFO_ATTR_SIZE;
    dv.setUint32(info + 52, PROG_MAP_IDS, true);
    dv.setBigUint64(info + 56, BigInt(info + infoSize), true);
    pointers.push(info + 56);
  }
  return { size, init, pointers };
}

const cstr = (b: Uint8Array, off: number, len: number): string => {
  const s = b.subarray(off, off + len);
  const end = s.indexOf(0);
  return new TextDecoder().decode(end >= 0 ? s.subarray(0, end) : s);
};
const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');

/** struct bpf_prog_info, the parts vmi shows. */
export interface BpfProgInfo {
  type: number;
  id: number;
  tag: string;
  jitedLen: number;
  xlatedLen: number;
  /** ns since boot (CLOCK_BOOTTIME) of the load. */
  loadTimeNs: bigint;
  uid: number;
  mapIds: number[];
  name: string;
  gpl: boolean;
  netnsIno: bigint;
  btfId: number;
  runTimeNs: bigint;
  runCount: bigint;
  verifiedInsns: number;
}

/** struct bpf_map_info, the parts vmi shows. */
export interface BpfMapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
  btfId: number;
}

/** struct bpf_link_info: type, id, prog and what it is attached to, as text. */
export interface BpfLinkInfo {
  type: number;
  id: number;
  progId: number;
  target: string;
}

function view(blob: Uint8Array, size: number): DataView {
  if (blob.length < GET_INFO_ATTR_SIZE + size) throw new RangeError(`bpf info: ${blob.length} bytes`);
  return new DataView(blob.buffer, blob.byteOffset + GET_INFO_ATTR_SIZE, size);
}

/** Decodes the program info of an answered info blob (see encodeInfoBlob). */
export function decodeProgInfo(blob: Uint8Array): BpfProgInfo {
  const dv = view(blob, PROG_INFO_SIZE);
  const info = blob.subarray(GET_INFO_ATTR_SIZE, GET_INFO_ATTR_SIZE + PROG_INFO_SIZE);
  const nMaps = Math.min(dv.getUint32(52, true), PROG_MAP_IDS);
  const ids = blob.subarray(GET_INFO_ATTR_SIZE + PROG_INFO_SIZE);
  const idv = new DataView(ids.buffer, ids.byteOffset, ids.byteLength);
  const mapIds: number[] = [];
  for (let i = 0; i < nMaps && 4 * i + 4 <= ids.length; i++) mapIds.push(idv.getUint32(4 * i, true));
  return {
    type: dv.getUint32(0, true),
    id: dv.getUint32(4, true),
    tag: hex(info.subarray(8, 16)),
    jitedLen: dv.getUint32(16, true),
    xlatedLen: dv.getUint32(20, true),
    loadTimeNs: dv.getBigUint64(40, true),
    uid: dv.getUint32(48, true),
    mapIds,
    name: cstr(info, 64, 16),
    gpl: (dv.getUint32(84, true) & 1) === 1,
    netnsIno: dv.getBigUint64(96, true),
    btfId: dv.getUint32(128, true),
    runTimeNs: dv.getBigUint64(192, true),
    runCount: dv.getBigUint64(200, true),
    verifiedInsns: dv.getUint32(216, true),
  };
}

export function decodeMapInfo(blob: Uint8Array): BpfMapInfo {
  const dv = view(blob, MAP_INFO_SIZE);
  const info = blob.subarray(GET_INFO_ATTR_SIZE, GET_INFO_ATTR_SIZE + MAP_INFO_SIZE);
  return {
    type: dv.getUint32(0, true),
    id: dv.getUint32(4, true),
    keySize: dv.getUint32(8, true),
    valueSize: dv.getUint32(12, true),
    maxEntries: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    name: cstr(info, 24, 16),
    btfId: dv.getUint32(64, true),
  };
}

/** Decodes a link's info; the union after prog_id (offset 16) is read by link type. */
export function decodeLinkInfo(blob: Uint8Array): BpfLinkInfo {
  const dv = view(blob, LINK_INFO_SIZE);
  const type = dv.getUint32(0, true);
  const u = 16;
  let target: string;
  switch (linkTypeName(type)) {
    case 'tracing':
      target = `${attachTypeName(dv.getUint32(u, true))} obj ${dv.getUint32(u + 4, true)} btf ${dv.getUint32(u + 8, true)}`;
      break;
    case 'cgroup':
      target = `${attachTypeName(dv.getUint32(u + 8, true))} cgroup ${dv.getBigUint64(u, true)}`;
      break;
    case 'netns':
      target = `${attachTypeName(dv.getUint32(u + 4, true))} netns ${dv.getUint32(u, true)}`;
      break;
    case 'xdp':
      target = `xdp ifindex ${dv.getUint32(u, true)}`;
      break;
    case 'tcx':
    case 'netkit':
      target = `${attachTypeName(dv.getUint32(u + 4, true))} ifindex ${dv.getUint32(u, true)}`;
      break;
    case 'netfilter':
      target = `netfilter pf ${dv.getUint32(u, true)} hook ${dv.getUint32(u + 4, true)} prio ${dv.getInt32(u + 8, true)}`;
      break;
    default:
      target = linkTypeName(type);
  }
  return { type, id: dv.getUint32(4, true), progId: dv.getUint32(8, true), target };
}

/** prog_id / map_id / link_id of a /proc/PID/fdinfo/N of a bpf object (kernel/bpf/syscall.c *_show_fdinfo). */
export function parseBpfFdinfo(text: string): { kind: BpfKind; id: number } | undefined {
  const link = /^link_id:\s*(\d+)$/m.exec(text);
  if (link) return { kind: 'link', id: Number(link[1]) };
  const prog = /^prog_id:\s*(\d+)$/m.exec(text);
  if (prog) return { kind: 'prog', id: Number(prog[1]) };
  const map = /^map_id:\s*(\d+)$/m.exec(text);
  if (map) return { kind: 'map', id: Number(map[1]) };
  return undefined;
}
