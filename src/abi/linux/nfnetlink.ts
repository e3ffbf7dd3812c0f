/**
 * Netfilter's read-only views: nf_tables over netlink (NETLINK_NETFILTER,
 * include/uapi/linux/netfilter/nfnetlink.h and nf_tables.h: GET dumps of tables, chains
 * and rules, answered by nf_tables_api.c) and legacy iptables' getsockopt interface
 * (include/uapi/linux/netfilter_ipv4/ip_tables.h: IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES,
 * answered by net/ipv4/netfilter/ip_tables.c). Pure encoders and decoders; every length
 * read from the guest is bounded by the buffer it came in.
 */

export const NETLINK_NETFILTER = 12;
export const NFNL_SUBSYS_NFTABLES = 10;
export const NFT_MSG_GETTABLE = 1;
export const NFT_MSG_GETCHAIN = 4;
export const NFT_MSG_GETRULE = 7;
export const NFT_MSG_GETSET = 10;
export const NFT_MSG_GETGEN = 16;
/** The nf_tables GET messages that only read (the *_RESET variants zero counters: refused). */
export const NFT_READ_ONLY_MSGS: readonly number[] = Object.freeze([
  NFT_MSG_GETTABLE,
  NFT_MSG_GETCHAIN,
  NFT_MSG_GETRULE,
  NFT_MSG_GETSET,
  NFT_MSG_GETGEN,
]);
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLA_TYPE_MASK = 0x3fff;

/** NFPROTO_* family names (include/uapi/linux/netfilter.h), as nft spells them. */
export const NFPROTO_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'unspec',
  1: 'inet',
  2: 'ip',
  3: 'arp',
  5: 'netdev',
  7: 'bridge',
  10: 'ip6',
});

/** Hook names by family: inet/ip/ip6/bridge (NF_INET_*), arp (NF_ARP_*), netdev (NF_NETDEV_*). */
export function hookName(family: number, hook: number): string {
  const inet = ['prerouting', 'input', 'forward', 'output', 'postrouting', 'ingress'];
  const arp = ['input', 'output', 'forward'];
  const netdev = ['ingress', 'egress'];
  const t = family === 3 ? arp : family === 5 ? netdev : inet;
  return t[hook] ?? `hook${hook}`;
}

/** An nf_tables dump request: nlmsghdr + nfgenmsg (family NFPROTO_UNSPEC: every family). */
export function encodeNftDump(msg: number, seq = 1): Uint8Array {
  const b = new Uint8Array(20);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 20, true);
  dv.setUint16(4, (NFNL_SUBSYS_NFTABLES << 8) | msg, true);
  dv.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  dv.setUint32(8, seq, true);
  return b;
}

/** True when `data` is exactly one nf_tables read-only GET request (the policy's test). */
export function isNftGetRequest(data: Uint8Array): boolean {
  if (data.length < 20) return false;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const type = dv.getUint16(4, true);
  return (
    dv.getUint32(0, true) === data.length &&
    type >> 8 === NFNL_SUBSYS_NFTABLES &&
    NFT_READ_ONLY_MSGS.includes(type & 0xff) &&
    (dv.getUint16(6, true) & NLM_F_REQUEST) !== 0
  );
}

/** A netlink attribute: type (flags masked off) and payload. */
export interface Nla {
  type: number;
  data: Uint8Array;
}

/** The attributes in `buf` (4-byte aligned TLVs); a truncated one ends the list. */
export function parseNlas(buf: Uint8Array): Nla[] {
  const out: Nla[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = dv.getUint16(off, true);
    if (len < 4 || off + len > buf.length) break;
    out.push({ type: dv.getUint16(off + 2, true) & NLA_TYPE_MASK, data: buf.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

const get = (a: Nla[], t: number) => a.find((x) => x.type === t)?.data;
const str = (d: Uint8Array | undefined) => {
  if (!d) return undefined;
  const end = d.indexOf(0);
  return new TextDecoder().decode(end >= 0 ? d.subarray(0, end) : d);
};
const be32 = (d: Uint8Array | undefined) =>
  d && d.length >= 4 ? new DataView(d.buffer, d.byteOffset, 4).getUint32(0, false) : undefined;
const be32s = (d: Uint8Array | undefined) =>
  d && d.length >= 4 ? new DataView(d.buffer, d.byteOffset, 4).getInt32(0, false) : undefined;
const be64 = (d: Uint8Array | undefined) =>
  d && d.length >= 8 ? new DataView(d.buffer, d.byteOffset, 8).getBigUint64(0, false) : undefined;
const hex = (d: Uint8Array) => [...d].map((x) => x.toString(16).padStart(2, '0')).join('');

/** One message of an nf_tables dump answer. */
export interface NftMessage {
  /** NFT_MSG_NEW* type (low byte). */
  msg: number;
  family: number;
  attrs: Nla[];
}

/** The messages of one recvfrom: nf_tables answers, done, or an NLMSG_ERROR's -errno. */
export function decodeNftChunk(buf: Uint8Array): { messages: NftMessage[]; done: boolean; error?: number } {
  const messages: NftMessage[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off + 16 <= buf.length) {
    const len = dv.getUint32(off, true);
    if (len < 16 || off + len > buf.length) throw new RangeError(`netlink message of ${len} bytes at ${off}`);
    const type = dv.getUint16(off + 4, true);
    if (type === NLMSG_DONE) return { messages, done: true };
    if (type === NLMSG_ERROR) {
      const err = len >= 20 ? dv.getInt32(off + 16, true) : -1;
      if (err !== 0) return { messages, done: true, error: err };
    } else if (type >> 8 === NFNL_SUBSYS_NFTABLES && len >= 20) {
      messages.push({
        msg: type & 0xff,
        family: buf[off + 16],
        attrs: parseNlas(buf.subarray(off + 20, off + len)),
      });
    }
    off += (len + 3) & ~3;
  }
  return { messages, done: false };
}

export interface NftTable {
  family: number;
  name: string;
  handle?: bigint;
  flags?: number;
}
export interface NftChain {
  family: number;
  table: string;
  name: string;
  handle?: bigint;
  hook?: number;
  priority?: number;
  device?: string;
  policy?: number;
  type?: string;
}
export interface NftRule {
  family: number;
  table: string;
  chain: string;
  handle?: bigint;
  /** Expressions rendered one by one (`meta load l4proto => reg 1`, `cmp eq reg 1 0x06`...). */
  exprs: string[];
  packets?: bigint;
  bytes?: bigint;
  comment?: string;
}

export function decodeTable(m: NftMessage): NftTable {
  return {
    family: m.family,
    name: str(get(m.attrs, 1)) ?? '',
    flags: be32(get(m.attrs, 2)),
    handle: be64(get(m.attrs, 4)),
  };
}

export function decodeChain(m: NftMessage): NftChain {
  const hook = get(m.attrs, 4);
  const h = hook ? parseNlas(hook) : [];
  return {
    family: m.family,
    table: str(get(m.attrs, 1)) ?? '',
    handle: be64(get(m.attrs, 2)),
    name: str(get(m.attrs, 3)) ?? '',
    hook: be32(get(h, 1)),
    priority: be32s(get(h, 2)),
    device: str(get(h, 3)),
    policy: be32(get(m.attrs, 5)),
    type: str(get(m.attrs, 7)),
  };
}

const CMP_OPS = ['eq', 'neq', 'lt', 'lte', 'gt', 'gte'];
const PAYLOAD_BASES = ['link', 'network', 'transport', 'inner'];
const META_KEYS = [
  'len',
  'protocol',
  'priority',
  'mark',
  'iif',
  'oif',
  'iifname',
  'oifname',
  'iiftype',
  'oiftype',
  'skuid',
  'skgid',
  'nftrace',
  'rtclassid',
  'secmark',
  'nfproto',
  'l4proto',
  'bri_iifname',
  'bri_oifname',
  'pkttype',
  'cpu',
  'iifgroup',
  'oifgroup',
  'cgroup',
  'prandom',
];
/** Verdict names (NF_DROP, NF_ACCEPT, NFT_CONTINUE...). */
export function verdictName(code: number): string {
  const v: Record<number, string> = {
    0: 'drop',
    1: 'accept',
    2: 'stolen',
    3: 'queue',
    4: 'repeat',
    [-1]: 'continue',
    [-2]: 'break',
    [-3]: 'jump',
    [-4]: 'goto',
    [-5]: 'return',
  };
  return v[code] ?? `verdict ${code}`;
}

function dataValue(d: Uint8Array | undefined): string {
  if (!d) return '?';
  const a = parseNlas(d);
  const value = get(a, 1);
  if (value) return `0x${hex(value)}`;
  const verdict = get(a, 2);
  if (verdict) {
    const v = parseNlas(verdict);
    const chain = str(get(v, 2));
    return `${verdictName(be32s(get(v, 1)) ?? 99)}${chain ? ` ${chain}` : ''}`;
  }
  return '?';
}

/** One expression as text, with its counter values when it is a counter. */
function renderExpr(e: Uint8Array): { text: string; packets?: bigint; bytes?: bigint } {
  const a = parseNlas(e);
  const name = str(get(a, 1)) ?? '?';
  const d = get(a, 2);
  const p = d ? parseNlas(d) : [];
  switch (name) {
    case 'payload':
      return {
        text: `payload load ${be32(get(p, 4))}b @ ${PAYLOAD_BASES[be32(get(p, 2)) ?? 9] ?? '?'} + ${be32(get(p, 3))} => reg ${be32(get(p, 1))}`,
      };
    case 'cmp':
      return {
        text: `cmp ${CMP_OPS[be32(get(p, 2)) ?? 9] ?? '?'} reg ${be32(get(p, 1))} ${dataValue(get(p, 3))}`,
      };
    case 'meta': {
      const key = META_KEYS[be32(get(p, 2)) ?? 999] ?? `key${be32(get(p, 2))}`;
      const dreg = be32(get(p, 1));
      return {
        text:
          dreg !== undefined
            ? `meta load ${key} => reg ${dreg}`
            : `meta set ${key} with reg ${be32(get(p, 3))}`,
      };
    }
    case 'immediate': {
      const dreg = be32(get(p, 1));
      const v = dataValue(get(p, 2));
      return { text: dreg === 0 ? `immediate ${v}` : `immediate reg ${dreg} ${v}` };
    }
    case 'counter': {
      const bytes = be64(get(p, 1));
      const packets = be64(get(p, 2));
      return { text: `counter packets ${packets ?? '?'} bytes ${bytes ?? '?'}`, packets, bytes };
    }
    default:
      return { text: name };
  }
}

export function decodeRule(m: NftMessage): NftRule {
  const exprs: string[] = [];
  let packets: bigint | undefined;
  let bytes: bigint | undefined;
  const list = get(m.attrs, 4);
  for (const el of list ? parseNlas(list) : []) {
    if (el.type !== 1) continue;
    const r = renderExpr(el.data);
    exprs.push(r.text);
    if (r.packets !== undefined) packets = (packets ?? 0n) + r.packets;
    if (r.bytes !== undefined) bytes = (bytes ?? 0n) + r.bytes;
  }
  // NFTA_RULE_USERDATA: libnftnl TLVs; type 0 is the comment.
  let comment: string | undefined;
  const ud = get(m.attrs, 7);
  if (ud) {
    let off = 0;
    while (off + 2 <= ud.length) {
      const t = ud[off];
      const l = ud[off + 1];
      if (off + 2 + l > ud.length) break;
      if (t === 0) comment = str(ud.subarray(off + 2, off + 2 + l));
      off += 2 + l;
    }
  }
  return {
    family: m.family,
    table: str(get(m.attrs, 1)) ?? '',
    chain: str(get(m.attrs, 2)) ?? '',
    handle: be64(get(m.attrs, 3)),
    exprs,
    packets,
    bytes,
    comment,
  };
}

// ---------------------------------------------------------------- legacy iptables

export const SOL_IP = 0;
export const IPPROTO_RAW = 255;
export const IPT_SO_GET_INFO = 64;
export const IPT_SO_GET_ENTRIES = 65;
/** struct ipt_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5], num_entries, size. */
export const IPT_GETINFO_SIZE = 84;
/** struct ipt_get_entries header: name[32], size, 4 bytes of padding before the entries. */
export const IPT_GET_ENTRIES_HEADER = 40;
const XT_TABLE_MAXNAMELEN = 32;

/** The name field of ipt_getinfo / ipt_get_entries. */
export function encodeIptName(name: string, size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(new TextEncoder().encode(name).subarray(0, XT_TABLE_MAXNAMELEN - 1));
  return b;
}

export interface IptInfo {
  validHooks: number;
  hookEntry: number[];
  underflow: number[];
  numEntries: number;
  size: number;
}

export function decodeIptInfo(b: Uint8Array): IptInfo {
  if (b.length < IPT_GETINFO_SIZE) throw new RangeError(`ipt_getinfo: ${b.length} bytes`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u = (o: number) => dv.getUint32(o, true);
  return {
    validHooks: u(32),
    hookEntry: [0, 1, 2, 3, 4].map((i) => u(36 + 4 * i)),
    underflow: [0, 1, 2, 3, 4].map((i) => u(56 + 4 * i)),
    numEntries: u(76),
    size: u(80),
  };
}

/** One ipt_entry: match on addresses/interfaces/protocol, matches by name, the target. */
export interface IptEntry {
  offset: number;
  src: string;
  dst: string;
  inIface: string;
  outIface: string;
  proto: number;
  matches: string[];
  /** Target name (`ACCEPT`, `DROP`, `RETURN`, a jump offset, `ERROR`, or an extension's name). */
  target: string;
  /** ERROR target's data: a user chain's name (or `ERROR` at the end of the table). */
  errorName?: string;
  /** Standard target's verdict: < 0 is -NF_verdict - 1, ≥ 0 a jump offset. */
  verdict?: number;
  packets: bigint;
  bytes: bigint;
}

const ip4 = (b: Uint8Array, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
const prefix = (b: Uint8Array, o: number) => {
  let n = 0;
  for (let i = 0; i < 4; i++) n += [...b[o + i].toString(2)].filter((c) => c === '1').length;
  return n;
};

/** The entries of an IPT_SO_GET_ENTRIES answer (the entry table after the 40-byte header). */
export function decodeIptEntries(table: Uint8Array): IptEntry[] {
  const out: IptEntry[] = [];
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  let off = 0;
  while (off + 112 <= table.length) {
    const targetOff = dv.getUint16(off + 88, true);
    const next = dv.getUint16(off + 90, true);
    if (next < 112 || targetOff < 112 || targetOff + 32 > next || off + next > table.length) break;
    const e = table.subarray(off, off + next);
    const matches: string[] = [];
    let m = 112;
    while (m + 32 <= targetOff) {
      const size = dv.getUint16(off + m, true);
      if (size < 32) break;
      matches.push(str(e.subarray(m + 2, m + 31)) ?? '?');
      m += size;
    }
    const tname = str(e.subarray(targetOff + 2, targetOff + 31)) ?? '';
    const entry: IptEntry = {
      offset: off,
      src: `${ip4(e, 0)}/${prefix(e, 8)}`,
      dst: `${ip4(e, 4)}/${prefix(e, 12)}`,
      inIface: str(e.subarray(16, 32)) ?? '',
      outIface: str(e.subarray(32, 48)) ?? '',
      proto: dv.getUint16(off + 80, true),
      matches,
      target: tname,
      packets: dv.getBigUint64(off + 96, true),
      bytes: dv.getBigUint64(off + 104, true),
    };
    if (tname === '' && targetOff + 36 <= next) {
      const v = dv.getInt32(off + targetOff + 32, true);
      entry.verdict = v;
      // XT_RETURN is -NF_REPEAT - 1; other negative values are -verdict - 1.
      entry.target = v === -5 ? 'RETURN' : v < 0 ? verdictName(-v - 1).toUpperCase() : `jump @${v}`;
    } else if (tname === 'ERROR') {
      entry.errorName = str(e.subarray(targetOff + 32, next));
    }
    out.push(entry);
    off += next;
  }
  return out;
}
