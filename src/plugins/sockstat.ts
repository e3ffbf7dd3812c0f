/**
 * sockstat: the sockets processes hold open (Volatility's linux.sockstat), tied to their
 * owners the way ss -p and lsof do it: /proc/PID/fd/N links to `socket:[INODE]`, and the
 * inode keys the socket tables /proc/net/{tcp,tcp6,udp,udp6,raw,raw6,unix,netlink} of the
 * process's network namespace (read once per namespace, through /proc/PID/net of its first
 * process). Volatility's Sock Offset (a kernel address) and Filter (BPF) columns have no
 * syscall view and are left out; TID is the process id (threads share the fd table).
 * A unix socket's peer is not in /proc/net/unix: its Destination cells are empty. Sockets
 * of other families (packet, vsock, alg...) show with N/A family.
 */
import {
  parseInetSockets,
  parseNetlinkSockets,
  parseUnixSockets,
  SO_ACCEPTCON,
  TCP_CLOSE,
  TCP_STATES,
  type ParsedLines,
} from '../abi/linux/proc/index.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  type FileReadResult,
  type PluginContext,
  type ProcessFds,
  notAvailable,
  PID_OPTION,
  readProcessFds,
  type Row,
  type RowValue,
  selectPids,
  SyscallError,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'NetNS', type: 'int64', description: 'Network namespace id (inode of /proc/PID/ns/net)' },
  { name: 'Process Name', type: 'utf8', description: 'Task name (comm)' },
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'TID', type: 'int32', description: 'Thread id (= PID: threads share the descriptor table)' },
  { name: 'FD', type: 'int32', description: 'File descriptor number' },
  { name: 'Inode', type: 'int64', description: 'Socket inode (socket:[INODE])' },
  { name: 'Family', type: 'utf8', description: 'AF_INET, AF_INET6, AF_UNIX, AF_NETLINK' },
  { name: 'Type', type: 'utf8', description: 'STREAM, DGRAM, SEQPACKET, RAW' },
  { name: 'Proto', type: 'utf8', description: 'TCP, UDP, the IP protocol of a raw socket, NETLINK_*' },
  { name: 'Source Addr', type: 'utf8', description: 'Local address; bound path of a unix socket' },
  { name: 'Source Port', type: 'int32', description: 'Local port' },
  { name: 'Destination Addr', type: 'utf8', description: 'Remote address' },
  { name: 'Destination Port', type: 'int32', description: 'Remote port' },
  { name: 'State', type: 'utf8', description: 'TCP state, UNCONNECTED (udp, raw), unix socket state' },
] as const;

type SockstatRow = Row<typeof columns>;
type SocketCells = Pick<
  SockstatRow,
  | 'Family'
  | 'Type'
  | 'Proto'
  | 'Source Addr'
  | 'Source Port'
  | 'Destination Addr'
  | 'Destination Port'
  | 'State'
>;

/** The socket tables of a namespace, with how each one's rows become cells. */
const TABLES = ['tcp', 'tcp6', 'udp', 'udp6', 'raw', 'raw6', 'unix', 'netlink'] as const;
type Table = (typeof TABLES)[number];

const IP_PROTOCOLS: Record<number, string> = {
  1: 'ICMP',
  2: 'IGMP',
  6: 'TCP',
  17: 'UDP',
  58: 'ICMPv6',
  255: 'RAW',
};
const UNIX_TYPES: Record<number, string> = { 1: 'STREAM', 2: 'DGRAM', 3: 'RAW', 4: 'RDM', 5: 'SEQPACKET' };
const UNIX_STATES: Record<number, string> = {
  0: 'FREE',
  1: 'UNCONNECTED',
  2: 'CONNECTING',
  3: 'CONNECTED',
  4: 'DISCONNECTING',
};
const NETLINK_PROTOCOLS: Record<number, string> = {
  0: 'NETLINK_ROUTE',
  2: 'NETLINK_USERSOCK',
  4: 'NETLINK_SOCK_DIAG',
  6: 'NETLINK_XFRM',
  9: 'NETLINK_AUDIT',
  10: 'NETLINK_FIB_LOOKUP',
  11: 'NETLINK_CONNECTOR',
  12: 'NETLINK_NETFILTER',
  15: 'NETLINK_KOBJECT_UEVENT',
  16: 'NETLINK_GENERIC',
};

const SOCKET_RE = /^socket:\[(\d{1,20})\]$/;

/** Cells of every socket of one namespace, by inode. */
function socketCells(table: Table, data: Uint8Array, file: string): ParsedLines<[bigint, SocketCells]> {
  if (table === 'unix') {
    const { entries, errors } = parseUnixSockets(data, file);
    return {
      errors,
      entries: entries.map((s) => [
        s.inode,
        {
          Family: 'AF_UNIX',
          Type: UNIX_TYPES[s.type] ?? `TYPE_${s.type}`,
          Proto: null,
          'Source Addr': s.path,
          'Source Port': null,
          'Destination Addr': null,
          'Destination Port': null,
          State: s.flags & SO_ACCEPTCON ? 'LISTEN' : (UNIX_STATES[s.state] ?? `STATE_${s.state}`),
        },
      ]),
    };
  }
  if (table === 'netlink') {
    const { entries, errors } = parseNetlinkSockets(data, file);
    return {
      errors,
      entries: entries.map((s) => [
        s.inode,
        {
          Family: 'AF_NETLINK',
          Type: notAvailable('not in /proc/net/netlink'),
          Proto: NETLINK_PROTOCOLS[s.protocol] ?? `NETLINK_${s.protocol}`,
          'Source Addr': String(s.portId),
          'Source Port': null,
          'Destination Addr': null,
          'Destination Port': null,
          State: null,
        },
      ]),
    };
  }
  const kind = table.replace('6', '') as 'tcp' | 'udp' | 'raw';
  const { entries, errors } = parseInetSockets(data, table.endsWith('6'), file);
  return {
    errors,
    entries: entries.map((s) => {
      const raw = kind === 'raw';
      // udp and raw sockets use TCP_CLOSE for "not connected" and TCP_ESTABLISHED after connect().
      const state =
        kind !== 'tcp' && s.state === TCP_CLOSE ? 'UNCONNECTED' : (TCP_STATES[s.state] ?? `STATE_${s.state}`);
      return [
        s.inode,
        {
          Family: s.family,
          Type: kind === 'tcp' ? 'STREAM' : kind === 'udp' ? 'DGRAM' : 'RAW',
          // A raw socket's "port" in /proc/net/raw is its IP protocol.
          Proto: raw ? (IP_PROTOCOLS[s.localPort] ?? `IPPROTO_${s.localPort}`) : kind.toUpperCase(),
          'Source Addr': s.localAddr,
          'Source Port': raw ? null : s.localPort,
          'Destination Addr': s.remoteAddr,
          'Destination Port': raw ? null : s.remotePort,
          State: state,
        },
      ];
    }),
  };
}

const UNKNOWN_SOCKET = notAvailable('socket not in the /proc/net tables read (packet, vsock, alg...)');
const UNKNOWN_CELLS: SocketCells = {
  Family: UNKNOWN_SOCKET,
  Type: UNKNOWN_SOCKET,
  Proto: UNKNOWN_SOCKET,
  'Source Addr': UNKNOWN_SOCKET,
  'Source Port': UNKNOWN_SOCKET,
  'Destination Addr': UNKNOWN_SOCKET,
  'Destination Port': UNKNOWN_SOCKET,
  State: UNKNOWN_SOCKET,
};

/** The key of a process's network namespace: its inode, or the pid when the link failed. */
const nsKey = (p: ProcessFds): string => (typeof p.netns === 'bigint' ? p.netns.toString() : `pid ${p.pid}`);

/** The socket descriptors of a process, with their inodes. */
function socketFds(p: ProcessFds): { fd: number; inode: bigint }[] {
  const out: { fd: number; inode: bigint }[] = [];
  for (const f of p.fds) {
    const m = f.target ? SOCKET_RE.exec(f.target) : null;
    if (m) out.push({ fd: f.fd, inode: BigInt(m[1]) });
  }
  return out;
}

/**
 * The socket tables (/proc/PID/net/*) of the network namespaces of `procs`, as cells by
 * inode, per namespace key: one batch for all of them. The tables of a namespace are read
 * through two of its processes, in case one exits meanwhile; a process whose namespace
 * link failed reads its own.
 */
async function readNamespaceSockets(
  ctx: PluginContext,
  procs: readonly ProcessFds[],
): Promise<Map<string, Map<bigint, SocketCells>>> {
  const readers = new Map<string, number[]>();
  for (const p of procs) {
    if (typeof p.netns !== 'bigint' && p.netns) ctx.warn(`pid ${p.pid}: ${p.netns.message}`);
    const list = readers.get(nsKey(p)) ?? [];
    if (list.length < 2) list.push(p.pid);
    readers.set(nsKey(p), list);
  }
  const reads = [...readers].flatMap(([key, pids]) =>
    pids.flatMap((pid) => TABLES.map((table) => ({ key, table, path: `/proc/${pid}/net/${table}` }))),
  );
  const files = await ctx.sys.readFiles(reads.map(({ path }) => ({ path, chunkSize: 16384 })));
  const results = new Map<string, FileReadResult[]>();
  reads.forEach(({ key, table }, i) => {
    const id = `${key}/${table}`;
    results.set(id, [...(results.get(id) ?? []), files[i]]);
  });
  const sockets = new Map<string, Map<bigint, SocketCells>>();
  for (const key of readers.keys()) {
    const byInode = new Map<bigint, SocketCells>();
    for (const table of TABLES) {
      const got = results.get(`${key}/${table}`)!;
      const f = got.find((x) => !x.error);
      if (!f) {
        // ENOENT: a kernel without that table (no IPv6), or every reader exited.
        const err = got.find((x) => !(x.error instanceof SyscallError && x.error.code === 'ENOENT'));
        if (err) ctx.warn(`${err.path}: ${err.error!.message}`);
        continue;
      }
      const { entries, errors } = socketCells(table, f.data!, f.path);
      for (const e of errors) ctx.warn(e.message);
      for (const [inode, cells] of entries) byInode.set(inode, cells);
    }
    sockets.set(key, byInode);
  }
  return sockets;
}

/** --unix and --inet: only those families (both or neither: every family). */
function familyWanted(family: RowValue | undefined, unix: boolean, inet: boolean): boolean {
  if (unix && !inet) return family === 'AF_UNIX';
  if (inet && !unix) return family === 'AF_INET' || family === 'AF_INET6';
  return true;
}

export const sockstat = definePlugin({
  name: 'sockstat',
  volatilityName: 'linux.sockstat',
  description: 'Lists the sockets held open by the processes of the guest, with addresses and states',
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    unix: { type: 'boolean', description: 'Only unix sockets (default: every family)' },
    inet: { type: 'boolean', description: 'Only AF_INET and AF_INET6 sockets (default: every family)' },
    container: CONTAINER_OPTION,
  },
  async run(ctx) {
    const { unix, inet } = ctx.options;
    // 1 batch for the listing (none with --pid), 1 for the cgroups with --container, 1 for
    // /proc/PID/fd, 1 for every link and comm, 1 for the socket tables of every namespace
    // (+ a follow-up for big tables).
    const pids = await selectPids(ctx, ctx.options.pid, ctx.options.container);
    const procs = pids.length > 0 ? await readProcessFds(ctx, { pids, netns: true }) : [];
    const withSockets = procs.filter((p) => socketFds(p).length > 0);
    const tables = await readNamespaceSockets(ctx, withSockets);
    const rows: SockstatRow[] = [];
    for (const p of withSockets) {
      const netns: RowValue =
        typeof p.netns === 'bigint' ? p.netns : unreadable(p.netns?.message ?? 'no namespace link');
      for (const { fd, inode } of socketFds(p)) {
        const cells = tables.get(nsKey(p))!.get(inode);
        if (!familyWanted(cells?.Family, unix, inet)) continue;
        rows.push({
          NetNS: netns,
          'Process Name': p.comm,
          PID: p.pid,
          TID: p.pid,
          FD: fd,
          Inode: inode,
          ...(cells ?? UNKNOWN_CELLS),
        });
      }
    }
    return rows;
  },
});
