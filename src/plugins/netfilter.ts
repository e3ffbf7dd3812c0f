/**
 * netfilter: the firewall in place, as the guest kernel reports it. Volatility's
 * linux.malware.netfilter walks the netfilter hook arrays and names each hook function;
 * without symbols, a syscall view sees what registers those hooks instead:
 * - nf_tables: every table, chain (with its hook, priority, type and policy: a base
 *   chain is one hook) and rule (its expressions rendered like `nft --debug=netlink`),
 *   by netlink GET dumps on a NETLINK_NETFILTER socket (NFT_MSG_GETTABLE, GETCHAIN,
 *   GETRULE, what `nft list ruleset` sends). Nothing is found when nf_tables is not loaded
 *   (the socket is then refused with EPROTONOSUPPORT, or the dump answers empty).
 * - legacy iptables (ip_tables, IPv4): the tables named in /proc/net/ip_tables_names, by
 *   getsockopt(IPT_SO_GET_INFO) then getsockopt(IPT_SO_GET_ENTRIES) on a raw socket, as
 *   `iptables-legacy -L` reads them: each built-in chain (its hook and policy), user chain
 *   and rule. Only listed tables are asked for: asking for an unlisted one would make the
 *   kernel instantiate it (xt_find_table_lock loads the template), a change.
 * Both are allowed by the read-only policy on these exact shapes (SOCK_DIAG_SYSCALLS in
 * src/sdk/policy.ts): each socket is the shadow's own and closed in its batch; no
 * NEW or DEL message, RESET message or setsockopt is possible. Ip6tables, arptables and
 * ebtables are not read. Handler and Is Hooked (a hook function outside any module) need
 * kernel addresses that user space never sees: N/A. Net NS is the shadow's network
 * namespace (the one the sockets query).
 *
 * Cost: 1 batch for the namespace link, 1 for the three nf_tables dumps (3 sockets, 3 ×
 * 8 recvfrom of 32 KiB), 1 for /proc/net/ip_tables_names, and for iptables 1 of GET_INFO
 * and 1 of GET_ENTRIES: 5 batches, ~40 calls.
 */
import { AF_NETLINK, MSG_DONTWAIT, SOCK_RAW } from '../abi/linux/sock-diag.js';
import {
  decodeChain,
  decodeIptEntries,
  decodeIptInfo,
  decodeNftChunk,
  decodeRule,
  decodeTable,
  encodeIptName,
  encodeNftDump,
  hookName,
  IPPROTO_RAW,
  IPT_GET_ENTRIES_HEADER,
  IPT_GETINFO_SIZE,
  IPT_SO_GET_ENTRIES,
  IPT_SO_GET_INFO,
  NETLINK_NETFILTER,
  NFPROTO_NAMES,
  NFT_MSG_GETCHAIN,
  NFT_MSG_GETRULE,
  NFT_MSG_GETTABLE,
  SOL_IP,
  verdictName,
  type IptEntry,
  type NftChain,
  type NftMessage,
  type NftRule,
} from '../abi/linux/nfnetlink.js';
import {
  definePlugin,
  inBytes,
  inOutBuffer,
  notAvailable,
  outBuffer,
  type CallRef,
  type PluginContext,
  type Row,
} from '../sdk/index.js';

const SOCK_CLOEXEC = 0o2000000;
const AF_INET = 2;
/** recvfrom buffer and count per dump (a dump skb is at most 32 KiB). */
const RECV_BUFFER = 32 << 10;
const RECVS = 8;
/** The largest iptables table read (entries bytes). */
const MAX_IPT_TABLE = 1 << 20;

const columns = [
  {
    name: 'Net NS',
    type: 'int64',
    description: 'Network namespace id (the shadow’s: inode of /proc/self/ns/net)',
  },
  { name: 'Proto', type: 'utf8', description: 'Family: ip, ip6, inet, arp, bridge, netdev' },
  { name: 'Hook', type: 'utf8', description: 'Netfilter hook of a base chain (input, forward, output...)' },
  { name: 'Priority', type: 'int32', description: 'Hook priority (iptables filter: 0)' },
  { name: 'Handler', type: 'hex64', description: 'Hook function address: N/A (not exposed to user space)' },
  { name: 'Module', type: 'utf8', description: 'What registered the hook: nf_tables or ip_tables' },
  {
    name: 'Is Hooked',
    type: 'bool',
    description: 'Hook function outside any module: N/A (needs kernel addresses)',
  },
  { name: 'Kind', type: 'utf8', description: 'table, chain or rule' },
  { name: 'Table', type: 'utf8', description: 'Table name' },
  { name: 'Chain', type: 'utf8', description: 'Chain name (empty on a table row)' },
  {
    name: 'Chain Type',
    type: 'utf8',
    description: 'Base chain type (filter, nat, route); iptables: the table',
  },
  { name: 'Policy', type: 'utf8', description: 'Base chain policy (accept, drop)' },
  { name: 'Handle', type: 'int64', description: 'nf_tables handle; iptables: entry offset' },
  {
    name: 'Rule',
    type: 'utf8',
    description: 'The rule: nf_tables expressions, or iptables matches and target',
  },
  { name: 'Packets', type: 'int64', description: 'Counter: packets matched' },
  { name: 'Bytes', type: 'int64', description: 'Counter: bytes matched' },
  { name: 'Comment', type: 'utf8', description: 'Rule comment (nft userdata)' },
] as const;

type NfRow = Row<typeof columns>;

/** The three nf_tables dumps in one batch; their messages, or why a dump failed. */
async function nftDumps(
  ctx: PluginContext,
): Promise<{ messages: NftMessage[]; error?: string; complete: boolean }[]> {
  const b = ctx.sys.batch();
  const msgs = [NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE];
  const refs = msgs.map((m) =>
    b.group(() => {
      const req = encodeNftDump(m);
      const fd = b.call('socket', [AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER]);
      const sent = b.call('sendto', [fd, inBytes(req), req.length, 0, 0, 0]);
      const recvs: CallRef[] = [];
      for (let i = 0; i < RECVS; i++)
        recvs.push(b.call('recvfrom', [fd, outBuffer(RECV_BUFFER), RECV_BUFFER, MSG_DONTWAIT, 0, 0]));
      b.close(fd);
      return { fd, sent, recvs };
    }),
  );
  await b.submit();
  return refs.map(({ fd, sent, recvs }) => {
    const err = fd.result().error ?? sent.result().error;
    if (err) return { messages: [], error: err.message, complete: false };
    const messages: NftMessage[] = [];
    for (const r of recvs) {
      const got = r.result();
      if (got.error) break;
      try {
        const c = decodeNftChunk(got.data);
        messages.push(...c.messages);
        if (c.error !== undefined) return { messages, error: `NLMSG_ERROR ${c.error}`, complete: false };
        if (c.done) return { messages, complete: true };
      } catch (e) {
        return { messages, error: (e as Error).message, complete: false };
      }
    }
    return { messages, complete: false };
  });
}

function ruleText(e: IptEntry): string {
  const parts: string[] = [];
  if (e.src !== '0.0.0.0/0') parts.push(`-s ${e.src}`);
  if (e.dst !== '0.0.0.0/0') parts.push(`-d ${e.dst}`);
  if (e.inIface) parts.push(`-i ${e.inIface}`);
  if (e.outIface) parts.push(`-o ${e.outIface}`);
  if (e.proto) parts.push(`-p ${e.proto}`);
  for (const m of e.matches) parts.push(`-m ${m}`);
  parts.push(`-j ${e.target}`);
  return parts.join(' ');
}

/** Legacy iptables: the tables /proc/net/ip_tables_names lists, read with getsockopt. */
async function iptables(
  ctx: PluginContext,
  netns: number | ReturnType<typeof notAvailable>,
): Promise<NfRow[]> {
  const [names] = await ctx.sys.readFiles([{ path: '/proc/net/ip_tables_names', chunkSize: 512 }]);
  if (!names.data) return []; // ip_tables not loaded
  const tables = new TextDecoder()
    .decode(names.data)
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => /^[A-Za-z0-9_-]{1,31}$/.test(s));
  if (tables.length === 0) return [];
  const sock = (b: ReturnType<PluginContext['sys']['batch']>) =>
    b.call('socket', [AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW]);
  const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
  const b1 = ctx.sys.batch();
  const infos = tables.map((t) =>
    b1.group(() => {
      const fd = sock(b1);
      const r = b1.call('getsockopt', [
        fd,
        SOL_IP,
        IPT_SO_GET_INFO,
        inOutBuffer(IPT_GETINFO_SIZE, encodeIptName(t, 32)),
        inBytes(u32(IPT_GETINFO_SIZE)),
      ]);
      b1.close(fd);
      return { fd, r };
    }),
  );
  await b1.submit();
  const got = tables.map((t, i) => {
    const e = infos[i].fd.result().error ?? infos[i].r.result().error;
    if (e) {
      ctx.warn(`iptables ${t}: IPT_SO_GET_INFO: ${e.message}`);
      return undefined;
    }
    return decodeIptInfo(infos[i].r.result().data);
  });
  const b2 = ctx.sys.batch();
  const entries = tables.map((t, i) => {
    const info = got[i];
    if (!info || info.size > MAX_IPT_TABLE) {
      if (info) ctx.warn(`iptables ${t}: ${info.size} bytes of rules, more than read`);
      return undefined;
    }
    const len = IPT_GET_ENTRIES_HEADER + info.size;
    const head = encodeIptName(t, IPT_GET_ENTRIES_HEADER);
    new DataView(head.buffer).setUint32(32, info.size, true);
    return b2.group(() => {
      const fd = sock(b2);
      const r = b2.call('getsockopt', [
        fd,
        SOL_IP,
        IPT_SO_GET_ENTRIES,
        inOutBuffer(len, head),
        inBytes(u32(len)),
      ]);
      b2.close(fd);
      return r;
    });
  });
  if (b2.length > 0) await b2.submit();
  const rows: NfRow[] = [];
  tables.forEach((t, i) => {
    const info = got[i];
    const ref = entries[i];
    if (!info || !ref) return;
    const r = ref.result();
    if (r.error) {
      ctx.warn(`iptables ${t}: IPT_SO_GET_ENTRIES: ${r.error.message}`);
      return;
    }
    const list = decodeIptEntries(r.data.subarray(IPT_GET_ENTRIES_HEADER));
    const base = {
      'Net NS': netns,
      Proto: 'ip',
      Handler: notAvailable('hook function addresses are not exposed to user space'),
      Module: 'ip_tables',
      'Is Hooked': notAvailable('needs kernel addresses'),
      Table: t,
      Comment: '',
    };
    rows.push({
      ...base,
      Hook: '',
      Priority: notAvailable('a table'),
      Kind: 'table',
      Chain: '',
      'Chain Type': t,
      Policy: '',
      Handle: notAvailable('a table'),
      Rule: '',
      Packets: notAvailable('a table'),
      Bytes: notAvailable('a table'),
    });
    let chain = '';
    let hook: number | undefined;
    list.forEach((e, k) => {
      const h = [0, 1, 2, 3, 4].find((x) => info.validHooks & (1 << x) && info.hookEntry[x] === e.offset);
      if (h !== undefined) {
        hook = h;
        chain = hookName(2, h).toUpperCase();
      }
      if (e.target === 'ERROR') {
        if (e.errorName && e.errorName !== 'ERROR') {
          chain = e.errorName;
          hook = undefined;
          rows.push({
            ...base,
            Hook: '',
            Priority: notAvailable('a user chain'),
            Kind: 'chain',
            Chain: chain,
            'Chain Type': t,
            Policy: '',
            Handle: e.offset,
            Rule: '',
            Packets: notAvailable('a chain'),
            Bytes: notAvailable('a chain'),
          });
        }
        return;
      }
      if (hook !== undefined && info.underflow[hook] === e.offset) {
        rows.push({
          ...base,
          Hook: hookName(2, hook),
          Priority: 0,
          Kind: 'chain',
          Chain: chain,
          'Chain Type': t,
          Policy: e.target,
          Handle: e.offset,
          Rule: '',
          Packets: e.packets,
          Bytes: e.bytes,
        });
        return;
      }
      // A user chain's closing RETURN (iptables does not list it).
      if (hook === undefined && list[k + 1]?.target === 'ERROR' && e.target === 'RETURN') return;
      rows.push({
        ...base,
        Hook: hook === undefined ? '' : hookName(2, hook),
        Priority: hook === undefined ? notAvailable('user chain') : 0,
        Kind: 'rule',
        Chain: chain,
        'Chain Type': t,
        Policy: '',
        Handle: e.offset,
        Rule: ruleText(e),
        Packets: e.packets,
        Bytes: e.bytes,
      });
    });
  });
  return rows;
}

export const netfilter = definePlugin({
  name: 'netfilter',
  volatilityName: 'linux.malware.netfilter',
  description: 'Lists the firewall: nf_tables tables, chains (hooks) and rules, and legacy iptables tables',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const [link] = await ctx.sys.readlinks(['/proc/self/ns/net']);
    const m = link.target ? /^net:\[(\d+)\]$/.exec(link.target) : null;
    const netns = m ? Number(m[1]) : notAvailable('network namespace link unreadable');
    const [tablesD, chainsD, rulesD] = await nftDumps(ctx);
    for (const [what, d] of [
      ['tables', tablesD],
      ['chains', chainsD],
      ['rules', rulesD],
    ] as const) {
      if (d.error && !/EPROTONOSUPPORT|ENOENT|-2\b|-93\b/.test(d.error))
        ctx.warn(`nf_tables ${what}: ${d.error}`);
      else if (!d.error && !d.complete) ctx.warn(`nf_tables ${what}: more than one batch of dump, cut`);
    }
    const chains = chainsD.messages.map(decodeChain);
    const rules: NftRule[] = rulesD.messages.map(decodeRule);
    const rows: NfRow[] = [];
    const na = notAvailable('hook function addresses are not exposed to user space');
    const fam = (f: number) => NFPROTO_NAMES[f] ?? String(f);
    const base = (f: number, table: string) => ({
      'Net NS': netns,
      Proto: fam(f),
      Handler: na,
      Module: 'nf_tables',
      'Is Hooked': notAvailable('needs kernel addresses'),
      Table: table,
    });
    for (const t of tablesD.messages.map(decodeTable)) {
      rows.push({
        ...base(t.family, t.name),
        Hook: '',
        Priority: notAvailable('a table'),
        Kind: 'table',
        Chain: '',
        'Chain Type': '',
        Policy: '',
        Handle: t.handle !== undefined ? Number(t.handle) : notAvailable('no handle'),
        Rule: '',
        Packets: notAvailable('a table'),
        Bytes: notAvailable('a table'),
        Comment: '',
      });
      const own = (c: NftChain) => c.family === t.family && c.table === t.name;
      for (const c of chains.filter(own)) {
        const hook =
          c.hook === undefined ? '' : hookName(c.family, c.hook) + (c.device ? ` (${c.device})` : '');
        rows.push({
          ...base(c.family, c.table),
          Hook: hook,
          Priority: c.priority ?? notAvailable('not a base chain'),
          Kind: 'chain',
          Chain: c.name,
          'Chain Type': c.type ?? '',
          Policy: c.policy === undefined ? '' : verdictName(c.policy),
          Handle: c.handle !== undefined ? Number(c.handle) : notAvailable('no handle'),
          Rule: '',
          Packets: notAvailable('a chain'),
          Bytes: notAvailable('a chain'),
          Comment: '',
        });
        for (const r of rules.filter(
          (x) => x.family === c.family && x.table === c.table && x.chain === c.name,
        ))
          rows.push({
            ...base(r.family, r.table),
            Hook: hook,
            Priority: c.priority ?? notAvailable('not a base chain'),
            Kind: 'rule',
            Chain: r.chain,
            'Chain Type': c.type ?? '',
            Policy: '',
            Handle: r.handle !== undefined ? Number(r.handle) : notAvailable('no handle'),
            Rule: r.exprs.join(' ; '),
            Packets: r.packets ?? notAvailable('no counter'),
            Bytes: r.bytes ?? notAvailable('no counter'),
            Comment: r.comment ?? '',
          });
      }
    }
    rows.push(...(await iptables(ctx, netns)));
    return rows;
  },
});
