/**
 * ifconfig: the network interfaces of the guest and their addresses (Volatility's
 * linux.ifconfig / linux.ip.Addr), in every network namespace (NetNS column, as sockstat).
 *
 * The namespaces are found through the processes in them (/proc/PID/ns/net of every
 * process); each one's files are read through /proc/PID/net of two of its processes (in
 * case one exits meanwhile): /proc/PID/net is the view of that task's namespace. The
 * namespace vmi's shadow is in (init's) comes first, read through /proc/self/net. A
 * namespace no process is in (kept by `ip netns` bind mounts only) is not found.
 *
 * Interfaces and counters come from net/dev, IPv6 addresses from net/if_inet6. MAC, MTU
 * and flags come from /sys/class/net/IF, which shows the namespace of whoever mounted
 * that sysfs (init's): the other namespaces get N/A there (RTM_GETLINK over netlink would
 * need the shadow to enter them with setns, which the read-only policy does not allow).
 * IPv4 addresses are not in any per-interface /proc file: each LOCAL /32 of
 * net/fib_trie is an address of the host, and the interface that holds it is the one of
 * the longest directly connected route in net/route that contains it (the prefix route
 * the kernel adds with the address), or the loopback interface for an address in a
 * LOCAL prefix such as 127.0.0.0/8. An address added without a prefix route
 * (noprefixroute, a /32 on an interface without other routes) or two interfaces on one
 * subnet cannot be told apart this way: such an address shows with an N/A interface, or
 * under the first interface of the subnet. (RTM_GETADDR over netlink would be exact;
 * that needs socket calls.)
 */
import { ipv4ToNumber, prefixOfMask } from '../abi/linux/inet.js';
import {
  parseFibTrie,
  parseIfInet6,
  parseIpv4Routes,
  parseNetDev,
  type NetDevStats,
} from '../abi/linux/proc/index.js';
import {
  bytesToText,
  definePlugin,
  isVanished,
  notAvailable,
  type PluginContext,
  SyscallError,
  unreadable,
  type FileReadResult,
  type Row,
  type RowValue,
} from '../sdk/index.js';

const columns = [
  { name: 'NetNS', type: 'int64', description: 'Network namespace id (inode of /proc/PID/ns/net)' },
  { name: 'Interface', type: 'utf8', description: 'Interface name' },
  {
    name: 'IP Address',
    type: 'utf8',
    description: 'IPv4 or IPv6 address (empty: interface without address)',
  },
  { name: 'Prefix', type: 'int32', description: 'Prefix length of the address (24 for 255.255.255.0)' },
  { name: 'MAC Address', type: 'utf8', description: 'Hardware address (/sys/class/net/IF/address)' },
  { name: 'Promiscuous', type: 'bool', description: 'IFF_PROMISC set' },
  { name: 'State', type: 'utf8', description: 'UP (IFF_UP set) or DOWN' },
  { name: 'MTU', type: 'int32', description: 'MTU, bytes' },
  { name: 'RX Bytes', type: 'int64', description: 'Bytes received' },
  { name: 'TX Bytes', type: 'int64', description: 'Bytes sent' },
] as const;

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const IFF_PROMISC = 0x100;
/** Interface names: at most 15 bytes, no '/', ':' or whitespace (dev_valid_name()). */
const NAME_RE = /^(?!\.\.?$)[^/:\s]{1,15}$/;
const SYSFS = ['address', 'mtu', 'flags'] as const;
const NO_INTERFACE = notAvailable('no route ties the address to an interface');
const NO_SYSFS = notAvailable("sysfs shows only its mounter's network namespace (init's)");
const NET_FILES = ['dev', 'if_inet6', 'fib_trie', 'route'] as const;
const NETNS_RE = /^net:\[(\d{1,20})\]$/;
/** Processes per namespace whose /proc/PID/net is read: a second in case the first exits. */
const READERS = 2;

type IfconfigRow = Row<typeof columns>;

interface Addr {
  address: string;
  prefix: number;
}

const text = (f: FileReadResult) => bytesToText(f.data!).trim();

export const ifconfig = definePlugin({
  name: 'ifconfig',
  description: 'Lists the network interfaces of the guest with their addresses, state and counters',
  version: '1.0.0',
  columns,
  async run(ctx) {
    // 1 batch for the listing, 1 for every namespace link, 1 for the net files of every
    // namespace, 1 for the sysfs attributes of the interfaces of the shadow's namespace.
    const pids = await ctx.proc.listPids();
    const links = await ctx.sys.readlinks(['/proc/self/ns/net', ...pids.map((p) => `/proc/${p}/ns/net`)]);
    const readers = new Map<string, string[]>();
    links.forEach((l, i) => {
      const who = i === 0 ? 'self' : String(pids[i - 1]);
      const m = l.target !== undefined ? NETNS_RE.exec(l.target) : null;
      if (!m) {
        if (!isVanished(l.error))
          ctx.warn(
            `${l.path}: ${l.error?.message ?? `not a net namespace link: ${JSON.stringify(l.target)}`}`,
          );
        return;
      }
      const list = readers.get(m[1]) ?? [];
      if (list.length < READERS && (i === 0 || list[0] !== 'self')) list.push(who);
      readers.set(m[1], list);
    });
    const reads = [...readers].flatMap(([ns, whos]) =>
      whos.flatMap((who) => NET_FILES.map((f) => ({ ns, f, path: `/proc/${who}/net/${f}` }))),
    );
    const files = await ctx.sys.readFiles(reads.map(({ path }) => ({ path, chunkSize: 16384 })));
    const own = links[0].target !== undefined ? NETNS_RE.exec(links[0].target)?.[1] : undefined;
    const rows: IfconfigRow[] = [];
    for (const ns of readers.keys()) {
      // Each file from the first reader that could read it.
      const pick = (f: (typeof NET_FILES)[number]): FileReadResult => {
        const got = reads.flatMap((r, i) => (r.ns === ns && r.f === f ? [files[i]] : []));
        return got.find((x) => !x.error) ?? got.find((x) => !isVanished(x.error)) ?? got[0];
      };
      const nsRows = await namespaceRows(
        ctx,
        [pick('dev'), pick('if_inet6'), pick('fib_trie'), pick('route')],
        ns === own,
      );
      for (const r of nsRows) rows.push({ NetNS: BigInt(ns), ...r });
    }
    return rows;
  },
});

/**
 * The rows of one namespace (without NetNS) from its net/dev, net/if_inet6, net/fib_trie
 * and net/route; `sysfs`: its interfaces' MAC, MTU and flags are in /sys/class/net (1 batch).
 */
async function namespaceRows(
  ctx: PluginContext,
  [devF, inet6F, trieF, routeF]: FileReadResult[],
  sysfs: boolean,
): Promise<Omit<IfconfigRow, 'NetNS'>[]> {
  const parsed = <T>(
    f: FileReadResult,
    parse: (d: Uint8Array, file: string) => { entries: T[]; errors: Error[] },
  ) => {
    if (f.error) {
      // A kernel without IPv6 has no if_inet6.
      if (!(f.path.endsWith('/net/if_inet6') && f.error instanceof SyscallError && f.error.code === 'ENOENT'))
        ctx.warn(`${f.path}: ${f.error.message}`);
      return [];
    }
    const { entries, errors } = parse(f.data!, f.path);
    for (const e of errors) ctx.warn(e.message);
    return entries;
  };
  const devs = parsed(devF, parseNetDev).filter((d) => {
    if (NAME_RE.test(d.name)) return true;
    ctx.warn(`${devF.path}: bad interface name ${JSON.stringify(d.name.slice(0, 40))}`);
    return false;
  });
  const inet6 = parsed(inet6F, parseIfInet6);
  const fib = parsed(trieF, parseFibTrie);
  const routes = parsed(routeF, parseIpv4Routes);

  const sys = sysfs
    ? await ctx.sys.readFiles(
        devs.flatMap((d) => SYSFS.map((a) => ({ path: `/sys/class/net/${d.name}/${a}`, chunkSize: 128 }))),
      )
    : [];
  const attrs = new Map<string, Record<(typeof SYSFS)[number], FileReadResult>>();
  devs.forEach((d, i) =>
    attrs.set(d.name, { address: sys[3 * i], mtu: sys[3 * i + 1], flags: sys[3 * i + 2] }),
  );
  const flagsOf = (name: string): number | undefined => {
    // Without sysfs: every namespace's loopback is named lo (drivers/net/loopback.c).
    if (!sysfs) return name === 'lo' ? IFF_LOOPBACK : undefined;
    const f = attrs.get(name)!.flags;
    if (f.error) return undefined;
    const m = /^0x([0-9a-fA-F]{1,8})$/.exec(text(f));
    return m ? parseInt(m[1], 16) : undefined;
  };

  // IPv4: the host's LOCAL /32s, each under the interface of its connected route.
  const byIface = new Map<string, Addr[]>();
  const orphans: Addr[] = [];
  const loopback = devs.find((d) => (flagsOf(d.name) ?? 0) & IFF_LOOPBACK)?.name;
  const seen = new Set<string>();
  const direct = routes.flatMap((r) => {
    const dest = ipv4ToNumber(r.destination);
    const mask = ipv4ToNumber(r.mask);
    const prefix = mask === undefined ? undefined : prefixOfMask(mask);
    return r.gateway === '0.0.0.0' && dest !== undefined && prefix !== undefined
      ? [{ iface: r.iface, dest, mask: mask!, prefix }]
      : [];
  });
  const localNets = fib.filter((e) => e.type === 'LOCAL' && e.prefixLen < 32);
  for (const e of fib) {
    if (e.type !== 'LOCAL' || e.prefixLen !== 32 || seen.has(e.address)) continue;
    seen.add(e.address);
    const a = ipv4ToNumber(e.address);
    if (a === undefined) continue;
    let best: (typeof direct)[number] | undefined;
    for (const r of direct) if ((a & r.mask) >>> 0 === r.dest && (!best || r.prefix > best.prefix)) best = r;
    const net = localNets.find((n) => {
      const base = ipv4ToNumber(n.address);
      const mask = n.prefixLen === 0 ? 0 : (~0 << (32 - n.prefixLen)) >>> 0;
      return base !== undefined && (a & mask) >>> 0 === base;
    });
    let iface = best?.iface ?? (net ? loopback : undefined);
    // A namespace with one interface (a fresh `unshare -n`: lo) holds every address there.
    if ((iface === undefined || !attrs.has(iface)) && devs.length === 1) iface = devs[0].name;
    const addr = { address: e.address, prefix: best?.prefix ?? net?.prefixLen ?? 32 };
    if (iface === undefined || !attrs.has(iface)) orphans.push(addr);
    else byIface.set(iface, [...(byIface.get(iface) ?? []), addr]);
  }
  for (const a of inet6) {
    byIface.set(a.name, [...(byIface.get(a.name) ?? []), { address: a.address, prefix: a.prefixLen }]);
  }

  const rows: Omit<IfconfigRow, 'NetNS'>[] = [];
  const ifaceCells = (d: NetDevStats) => {
    if (!sysfs) {
      return {
        'MAC Address': NO_SYSFS,
        Promiscuous: NO_SYSFS,
        State: NO_SYSFS,
        MTU: NO_SYSFS,
        'RX Bytes': d.rxBytes,
        'TX Bytes': d.txBytes,
      };
    }
    const at = attrs.get(d.name)!;
    const cell = (f: FileReadResult, parse: (s: string) => RowValue | undefined): RowValue => {
      if (f.error) {
        ctx.warn(`${f.path}: ${f.error.message}`);
        return unreadable(f.error.message);
      }
      const v = parse(text(f));
      if (v !== undefined) return v;
      ctx.warn(`${f.path}: unexpected content ${JSON.stringify(text(f).slice(0, 40))}`);
      return unreadable('unexpected content');
    };
    const flags = cell(at.flags, () => flagsOf(d.name));
    return {
      'MAC Address': cell(at.address, (s) => (/^[0-9a-f]{2}(:[0-9a-f]{2})*$/.test(s) ? s : undefined)),
      Promiscuous: typeof flags === 'number' ? (flags & IFF_PROMISC) !== 0 : flags,
      State: typeof flags === 'number' ? (flags & IFF_UP ? 'UP' : 'DOWN') : flags,
      MTU: cell(at.mtu, (s) => (/^\d{1,9}$/.test(s) ? Number(s) : undefined)),
      'RX Bytes': d.rxBytes,
      'TX Bytes': d.txBytes,
    };
  };
  for (const d of devs) {
    const cells = ifaceCells(d);
    const addrs = byIface.get(d.name) ?? [];
    if (addrs.length === 0) rows.push({ Interface: d.name, 'IP Address': null, Prefix: null, ...cells });
    for (const a of addrs)
      rows.push({ Interface: d.name, 'IP Address': a.address, Prefix: a.prefix, ...cells });
  }
  for (const a of orphans) {
    rows.push({
      Interface: NO_INTERFACE,
      'IP Address': a.address,
      Prefix: a.prefix,
      'MAC Address': NO_INTERFACE,
      Promiscuous: NO_INTERFACE,
      State: NO_INTERFACE,
      MTU: NO_INTERFACE,
      'RX Bytes': NO_INTERFACE,
      'TX Bytes': NO_INTERFACE,
    });
  }
  return rows;
}
