/**
 * sockxview: sockets seen through independent views of the guest kernel, and the ones
 * some view hides. A rootkit that hooks the /proc/net seq files (tcp4_seq_show...) hides a
 * listener from sockstat and netstat; the socket is still in its owner's descriptor table
 * and in the kernel's hash tables that the sock_diag dump walks.
 *
 * Views (bool columns; each one is answered by the guest kernel, so a rootkit that also
 * filters that path defeats that view):
 * - fd_table: some process holds it, /proc/PID/fd/N → `socket:[INODE]` (proc_fd_link); its
 *   protocol from getxattr(/proc/PID/fd/N, "system.sockprotoname") (sockfs: the name of the
 *   socket's struct proto, TCP, UDPv6, UNIX-STREAM...).
 * - proc_net: in the /proc/PID/net/{tcp,tcp6,udp,udp6,raw,raw6,unix,netlink} tables of its
 *   network namespace (the seq_file show functions), read through a process of that
 *   namespace.
 * - sock_diag: in the NETLINK_SOCK_DIAG dump (inet_diag: TCP and UDP over IPv4 and IPv6;
 *   unix_diag), which only covers the shadow's own network namespace; N/A elsewhere and
 *   for protocols the dump does not cover. Run only when the diag modules are already in
 *   the kernel (/proc/modules, or modules.builtin): otherwise the dump would make the
 *   kernel load them (request_module), a change to the guest.
 *
 * HIDDEN: a socket some applicable view misses on two looks (the whole collection runs a
 * second time when the first disagrees, so sockets opened or closed meanwhile are not
 * flagged). A socket in the tables but held by no visible process is not HIDDEN (kernel
 * sockets, descriptors in flight) but its evidence says so. No port is probed by bind().
 *
 * Cost: sockstat's batches (listing, /proc/PID/fd, links, tables) + 1 for the protocol
 * names + 1 for the diag modules + 1 for the dumps; twice when the first look disagrees.
 */
import {
  cPath,
  definePlugin,
  flags,
  inBytes,
  outBuffer,
  notAvailable,
  proc as procParsers,
  readProcessFds,
  sockDiag,
  sockDiagDump,
  SyscallError,
  type PluginContext,
  type ProcessFds,
  type Row,
  type RowValue,
  type SockDiagQuery,
} from '../sdk/index.js';

/** The /proc/net tables read per namespace. */
export const SOCKET_TABLES = ['tcp', 'tcp6', 'udp', 'udp6', 'raw', 'raw6', 'unix', 'netlink'] as const;
type Table = (typeof SOCKET_TABLES)[number];

/** struct proto names (system.sockprotoname) → the /proc/net table that lists such sockets. */
const TABLE_OF_PROTO: Record<string, Table> = {
  TCP: 'tcp',
  TCPv6: 'tcp6',
  UDP: 'udp',
  UDPv6: 'udp6',
  RAW: 'raw',
  RAWv6: 'raw6',
  UNIX: 'unix',
  'UNIX-STREAM': 'unix',
  NETLINK: 'netlink',
};

/** The dumps, each with the table it mirrors and the diag module that answers it. */
const DUMPS: { table: Table; query: SockDiagQuery; module: string }[] = [
  { table: 'tcp', query: { family: sockDiag.AF_INET, protocol: sockDiag.IPPROTO_TCP }, module: 'tcp_diag' },
  { table: 'tcp6', query: { family: sockDiag.AF_INET6, protocol: sockDiag.IPPROTO_TCP }, module: 'tcp_diag' },
  { table: 'udp', query: { family: sockDiag.AF_INET, protocol: sockDiag.IPPROTO_UDP }, module: 'udp_diag' },
  { table: 'udp6', query: { family: sockDiag.AF_INET6, protocol: sockDiag.IPPROTO_UDP }, module: 'udp_diag' },
  { table: 'unix', query: { family: sockDiag.AF_UNIX }, module: 'unix_diag' },
];

const SOCKET_RE = /^socket:\[(\d{1,20})\]$/;
const NETNS_LINK_RE = /^net:\[(\d{1,20})\]$/;

const columns = [
  {
    name: 'NetNS',
    type: 'int64',
    description: 'Network namespace id (inode of /proc/PID/ns/net of a holder or reader)',
  },
  { name: 'Inode', type: 'int64', description: 'Socket inode (socket:[INODE])' },
  {
    name: 'Proto',
    type: 'utf8',
    description:
      'struct proto name (getxattr system.sockprotoname, guest kernel: sockfs), else the table it is in',
  },
  { name: 'Table', type: 'utf8', description: '/proc/net table that lists (or should list) it' },
  {
    name: 'Local',
    type: 'utf8',
    description: 'addr:port, or the unix path, from /proc/net (empty when not there)',
  },
  { name: 'Holders', type: 'utf8', description: 'PID/FD of every descriptor that holds it' },
  {
    name: 'fd_table',
    type: 'bool',
    description: 'Held by a process (guest kernel: /proc/PID/fd → proc_fd_link)',
  },
  {
    name: 'proc_net',
    type: 'bool',
    description:
      'In its namespace’s /proc/net table (guest kernel: the seq_file show functions, e.g. tcp4_seq_show)',
  },
  {
    name: 'sock_diag',
    type: 'bool',
    description:
      'In the NETLINK_SOCK_DIAG dump (guest kernel: inet_diag / unix_diag hash-table walk); N/A outside the shadow’s namespace, for other protocols, or without the diag modules',
  },
  { name: 'HIDDEN', type: 'bool', description: 'An applicable view misses it, on two looks' },
  {
    name: 'EVIDENCE',
    type: 'utf8',
    description: 'Which views see it and which miss it (empty when all agree)',
  },
] as const;

type SockxviewRow = Row<typeof columns>;

/** One socket as the views of one look saw it. */
interface SocketSeen {
  netns: string;
  inode: bigint;
  proto?: string;
  table?: Table;
  local?: string;
  holders: string[];
  inProcNet: boolean;
  /** undefined: the dump does not apply. */
  inDiag?: boolean;
}

/** All sockets of one look, by `netns/inode`. */
type Look = Map<string, SocketSeen>;

/** Reads /proc/modules and modules.builtin: which diag handlers are in the kernel already. */
async function diagModules(ctx: PluginContext): Promise<Set<string>> {
  const { release } = await ctx.sys.uname();
  const [mods, builtin] = await ctx.sys.readFiles([
    { path: '/proc/modules', chunkSize: 16384 },
    { path: `/lib/modules/${release}/modules.builtin`, chunkSize: 65536 },
  ]);
  const have = new Set<string>();
  for (const line of new TextDecoder().decode(mods.data ?? new Uint8Array()).split('\n'))
    if (line) have.add(line.split(' ')[0]);
  for (const line of new TextDecoder().decode(builtin.data ?? new Uint8Array()).split('\n')) {
    const m = /([^/]+)\.ko$/.exec(line.trim());
    if (m) have.add(m[1].replace(/-/g, '_'));
  }
  return have;
}

async function look(ctx: PluginContext): Promise<{ seen: Look; diagNote: string }> {
  const procs = await readProcessFds(ctx, { netns: true });
  const key = (p: ProcessFds) => (typeof p.netns === 'bigint' ? p.netns.toString() : `pid ${p.pid}`);
  // Per namespace: two readers of its tables; per socket descriptor: its protocol name.
  const readers = new Map<string, number[]>();
  const held: { ns: string; inode: bigint; pid: number; fd: number }[] = [];
  for (const p of procs) {
    const list = readers.get(key(p)) ?? [];
    if (list.length < 2) list.push(p.pid);
    readers.set(key(p), list);
    for (const f of p.fds) {
      const m = f.target ? SOCKET_RE.exec(f.target) : null;
      if (m) held.push({ ns: key(p), inode: BigInt(m[1]), pid: p.pid, fd: f.fd });
    }
  }
  const b = ctx.sys.batch();
  const name = 'system.sockprotoname';
  const protoRefs = held.map((h) =>
    b.call(
      'getxattr',
      [inBytes(cPath(`/proc/${h.pid}/fd/${h.fd}`)), inBytes(cPath(name)), outBuffer(64), 64],
      {
        path: `/proc/${h.pid}/fd/${h.fd}`,
      },
    ),
  );
  const selfNs = b.readlinkat(flags.AT_FDCWD, '/proc/self/ns/net', 64);
  await b.submit();

  const reads = [...readers].flatMap(([ns, pids]) =>
    pids.flatMap((pid) => SOCKET_TABLES.map((table) => ({ ns, table, path: `/proc/${pid}/net/${table}` }))),
  );
  const files = await ctx.sys.readFiles(reads.map(({ path }) => ({ path, chunkSize: 16384 })));
  const seen: Look = new Map();
  const get = (ns: string, inode: bigint): SocketSeen => {
    const k = `${ns}/${inode}`;
    let s = seen.get(k);
    if (!s) seen.set(k, (s = { netns: ns, inode, holders: [], inProcNet: false }));
    return s;
  };
  const tablesRead = new Set<string>();
  const done = new Set<string>();
  reads.forEach(({ ns, table }, i) => {
    const f = files[i];
    if (f.error || done.has(`${ns}/${table}`)) {
      if (f.error && !(f.error instanceof SyscallError && f.error.code === 'ENOENT'))
        ctx.warn(`${f.path}: ${f.error.message}`);
      return;
    }
    done.add(`${ns}/${table}`);
    tablesRead.add(`${ns}/${table}`);
    for (const [inode, local] of tableEntries(table, f.data!, f.path, ctx)) {
      if (inode === 0n) continue; // time-wait and request sockets have no inode
      const s = get(ns, inode);
      s.inProcNet = true;
      s.table ??= table;
      s.local ??= local;
    }
  });
  held.forEach((h, i) => {
    const s = get(h.ns, h.inode);
    s.holders.push(`${h.pid}/${h.fd}`);
    const r = protoRefs[i].result();
    if (!r.error && !s.proto) s.proto = new TextDecoder().decode(r.data).replace(/\0.*$/s, '');
    if (s.proto && !s.table) s.table = TABLE_OF_PROTO[s.proto];
  });

  // sock_diag: the shadow's namespace only, and only with the diag modules present.
  const sr = selfNs.result();
  const m = sr.error ? null : NETNS_LINK_RE.exec(new TextDecoder().decode(sr.data));
  const shadowNs = m ? m[1] : undefined;
  const have = await diagModules(ctx);
  // A loaded inet_diag or unix_diag proves the sock_diag core (their dependency) is there,
  // built in or loaded, even where modules.builtin is absent (the lab's initramfs).
  const core = have.has('sock_diag') || have.has('inet_diag') || have.has('unix_diag');
  const usable = DUMPS.filter(
    (d) => core && have.has(d.module) && (d.module === 'unix_diag' || have.has('inet_diag')),
  );
  const missing = DUMPS.filter((d) => !usable.includes(d)).map((d) => d.table);
  let diagNote =
    missing.length > 0 ? `sock_diag not run for ${missing.join(', ')} (diag modules not loaded)` : '';
  const dumps =
    shadowNs && usable.length > 0
      ? await sockDiagDump(
          ctx.sys,
          usable.map((d) => d.query),
        )
      : [];
  const dumped = new Map<Table, Set<bigint>>();
  dumps.forEach((d, i) => {
    const table = usable[i].table;
    if (d.error || !d.complete) {
      const why = d.error ? (typeof d.error === 'string' ? d.error : d.error.message) : 'more than one batch';
      ctx.warn(`sock_diag ${table}: ${why}`);
      return;
    }
    dumped.set(table, d.inodes);
    for (const ino of d.inodes) {
      const s = get(shadowNs!, ino);
      s.table ??= table;
    }
  });
  if (!shadowNs) diagNote = 'sock_diag not run (shadow namespace unknown)';
  for (const s of seen.values()) {
    const set = s.table ? dumped.get(s.table) : undefined;
    if (s.netns === shadowNs && set) s.inDiag = set.has(s.inode);
    // A table that could not be read does not say the socket is missing from it.
    if (!s.inProcNet && s.table && !tablesRead.has(`${s.netns}/${s.table}`)) s.table = undefined;
  }
  return { seen, diagNote };
}

/** (inode, local address) of every row of one /proc/net table; parse errors warn. */
function tableEntries(table: Table, data: Uint8Array, file: string, ctx: PluginContext): [bigint, string][] {
  if (table === 'unix') {
    const r = procParsers.parseUnixSockets(data, file);
    for (const e of r.errors) ctx.warn(e.message);
    return r.entries.map((s) => [s.inode, s.path ?? '']);
  }
  if (table === 'netlink') {
    const r = procParsers.parseNetlinkSockets(data, file);
    for (const e of r.errors) ctx.warn(e.message);
    return r.entries.map((s) => [s.inode, `portid ${s.portId}`]);
  }
  const r = procParsers.parseInetSockets(data, table.endsWith('6'), file);
  for (const e of r.errors) ctx.warn(e.message);
  return r.entries.map((s) => [s.inode, `${s.localAddr}:${s.localPort}`]);
}

/** Views that miss an applicable socket. proc_net applies when its table is known and was read. */
export function missingViews(s: Pick<SocketSeen, 'table' | 'inProcNet' | 'inDiag' | 'holders'>): string[] {
  const out: string[] = [];
  if (s.table && !s.inProcNet) out.push('proc_net');
  if (s.inDiag === false) out.push('sock_diag');
  return out;
}

function evidence(s: SocketSeen): string {
  const missing = missingViews(s);
  const seenBy = [
    ...(s.holders.length > 0 ? [`fd_table (${s.holders.join(',')})`] : []),
    ...(s.inProcNet ? [`proc_net ${s.table}`] : []),
    ...(s.inDiag ? ['sock_diag'] : []),
  ];
  const parts: string[] = [];
  if (missing.length > 0) parts.push(`missing from ${missing.join(', ')}; seen by ${seenBy.join(', ')}`);
  if (s.holders.length === 0)
    parts.push('held by no visible process (kernel socket, fd in flight, or a hidden process)');
  return parts.join('; ');
}

export const sockxview = definePlugin({
  name: 'sockxview',
  description:
    'Cross-view of the sockets: descriptor tables, /proc/net tables, the sock_diag dump; flags hidden ones',
  version: '1.0.0',
  columns,
  options: {},
  async run(ctx) {
    const first = await look(ctx);
    const suspect = (l: Look) =>
      [...l.entries()].filter(([, s]) => missingViews(s).length > 0).map(([k]) => k);
    let final = first.seen;
    if (suspect(first.seen).length > 0) {
      ctx.progress('views disagree: looking again');
      const second = (await look(ctx)).seen;
      // Flag only what disagrees on both looks; sockets gone on the second look are dropped.
      final = new Map(first.seen);
      for (const k of suspect(first.seen)) {
        const s2 = second.get(k);
        if (!s2) final.delete(k);
        else if (missingViews(s2).length === 0) final.set(k, s2);
      }
    }
    // No warning for missing diag modules: a kernel without them is normal; the N/A cells say why.
    const rows: SockxviewRow[] = [];
    const sorted = [...final.values()].sort((a, b) =>
      a.netns === b.netns ? (a.inode < b.inode ? -1 : 1) : a.netns < b.netns ? -1 : 1,
    );
    for (const s of sorted) {
      const nsCell: RowValue = /^\d+$/.test(s.netns) ? BigInt(s.netns) : notAvailable(s.netns);
      rows.push({
        NetNS: nsCell,
        Inode: s.inode,
        Proto: s.proto ?? (s.table ? s.table.toUpperCase() : notAvailable('unknown protocol')),
        Table: s.table ?? notAvailable('no /proc/net table read lists this protocol'),
        Local: s.local ?? null,
        Holders: s.holders.join(','),
        fd_table: s.holders.length > 0,
        proc_net: s.table ? s.inProcNet : notAvailable('no table read for its protocol'),
        sock_diag: s.inDiag ?? notAvailable(first.diagNote || 'not dumped (other namespace or protocol)'),
        HIDDEN: missingViews(s).length > 0,
        EVIDENCE: evidence(s),
      });
    }
    const flagged = rows.filter((r) => r.HIDDEN).length;
    if (flagged > 0) ctx.warn(`${flagged} socket(s) hidden from at least one view`);
    return rows;
  },
});
