/**
 * ebpf: the loaded eBPF programs, maps and links (Volatility's linux.ebpf lists the
 * programs from the kernel's prog_idr), through bpf(2)'s read-only queries, as bpftool
 * does: BPF_{PROG,MAP,LINK}_GET_NEXT_ID walk the ids, BPF_*_GET_FD_BY_ID opens each one in
 * the shadow, BPF_OBJ_GET_INFO_BY_FD reads its info (id, type, name, tag, maps, load
 * time, what a link attaches it to), and the fd is closed. These commands are the only
 * bpf(2) calls the read-only policy allows (BPF_READ_ONLY_COMMANDS, src/sdk/policy.ts):
 * they read the id tables and copy info out; none loads, attaches, updates or pins
 * anything. An open fd only holds a reference until its close in the next batch.
 *
 * Attach points: links say what they attach to (cgroup, netns, xdp ifindex, tracing...).
 * A socket filter (SO_ATTACH_BPF) or a program a process keeps only an fd to is no link;
 * Holders names the processes holding an fd to the object (/proc/PID/fdinfo: prog_id,
 * map_id, link_id), which bpftool's `pids` shows too. The shadow needs CAP_SYS_ADMIN (it
 * runs as root); without it, or without CONFIG_BPF_SYSCALL, the table is empty with a
 * warning.
 *
 * Cost: 1 batch of GET_NEXT_ID per 256-id window of each kind (1 on a guest whose ids
 * are below 256), 1 of GET_FD_BY_ID, 1 of GET_INFO_BY_FD + close, 1 for /proc/stat, and
 * the holders: 1 listing, 1 for /proc/PID/fd, 1 for the links, 1 for the fdinfo files:
 * ~8 batches; 3 × 256 + 3 × objects + descriptors calls.
 */
import {
  BPF_F_RDONLY,
  BPF_OBJ_GET_INFO_BY_FD,
  decodeLinkInfo,
  decodeMapInfo,
  decodeNextId,
  decodeProgInfo,
  encodeIdAttr,
  encodeInfoBlob,
  FD_BY_ID_CMD,
  GET_ID_ATTR_SIZE,
  GET_INFO_ATTR_SIZE,
  mapTypeName,
  NEXT_ID_CMD,
  parseBpfFdinfo,
  progTypeName,
  linkTypeName,
  type BpfKind,
} from '../abi/linux/bpf.js';
import {
  definePlugin,
  inBytes,
  inOutBuffer,
  notAvailable,
  readProcessFds,
  type CallRef,
  type PluginContext,
  type Row,
} from '../sdk/index.js';

/** GET_NEXT_ID calls per kind and batch: a window of consecutive start ids. */
export const ID_WINDOW = 256;
/** Windows walked per kind at most (ids beyond ~16k sparse windows are not listed). */
const MAX_WINDOWS = 64;
const KINDS: readonly BpfKind[] = ['prog', 'map', 'link'];
const ENOENT = 2;

const columns = [
  { name: 'Kind', type: 'utf8', description: 'prog, map or link' },
  { name: 'ID', type: 'int64', description: 'Kernel id (bpftool prog/map/link show)' },
  { name: 'Name', type: 'utf8', description: 'Object name (BPF_OBJ_NAME_LEN, 15 bytes)' },
  { name: 'Tag', type: 'utf8', description: 'Program tag: SHA-1 prefix of its instructions (hex)' },
  { name: 'Type', type: 'utf8', description: 'Program, map or link type (enum bpf_*_type)' },
  { name: 'Prog ID', type: 'int64', description: 'The program a link attaches' },
  { name: 'Maps', type: 'utf8', description: 'Map ids a program uses' },
  { name: 'Attach', type: 'utf8', description: 'What a link attaches to; for a program, its links' },
  { name: 'Holders', type: 'utf8', description: 'Processes holding an fd to it: PID(comm):fd' },
  { name: 'UID', type: 'int64', description: 'Who loaded the program' },
  { name: 'Load Time', type: 'timestamp_ms', description: 'When the program was loaded' },
  {
    name: 'Details',
    type: 'utf8',
    description: 'Sizes (program: xlated/jited bytes; map: key/value/max entries)',
  },
] as const;

type EbpfRow = Row<typeof columns>;

/** Every id of each kind, by windows of GET_NEXT_ID (see the header). */
async function walkIds(ctx: PluginContext): Promise<Record<BpfKind, number[]>> {
  const out: Record<BpfKind, Set<number>> = { prog: new Set(), map: new Set(), link: new Set() };
  const start: Partial<Record<BpfKind, number>> = { prog: 0, map: 0, link: 0 };
  for (let round = 0; round < MAX_WINDOWS; round++) {
    const kinds = KINDS.filter((k) => start[k] !== undefined);
    if (kinds.length === 0) break;
    const b = ctx.sys.batch();
    const calls = kinds.map((k) =>
      Array.from({ length: ID_WINDOW }, (_, i) =>
        b.call('bpf', [
          NEXT_ID_CMD[k],
          inOutBuffer(GET_ID_ATTR_SIZE, encodeIdAttr(start[k]! + i)),
          GET_ID_ATTR_SIZE,
        ]),
      ),
    );
    await b.submit();
    kinds.forEach((k, j) => {
      const refs = calls[j];
      const first = refs[0].result();
      if (first.errno !== undefined && first.errno !== ENOENT) {
        ctx.warn(`bpf ${k} ids: ${first.error!.message}`);
        start[k] = undefined;
        return;
      }
      let max = 0;
      for (const r of refs) {
        const res = r.result();
        if (res.errno !== undefined) continue;
        const id = decodeNextId(res.data);
        if (id !== undefined && id > 0) {
          out[k].add(id);
          max = Math.max(max, id);
        }
      }
      const last = refs[refs.length - 1].result();
      // The window's last start found nothing beyond it: every id is seen.
      start[k] = last.errno === undefined && max > start[k]! + ID_WINDOW - 1 ? max : undefined;
    });
    if (round === MAX_WINDOWS - 1 && KINDS.some((k) => start[k] !== undefined))
      ctx.warn(`bpf ids: stopped after ${MAX_WINDOWS} windows of ${ID_WINDOW}`);
  }
  return {
    prog: [...out.prog].sort((a, b) => a - b),
    map: [...out.map].sort((a, b) => a - b),
    link: [...out.link].sort((a, b) => a - b),
  };
}

export const ebpf = definePlugin({
  name: 'ebpf',
  volatilityName: 'linux.ebpf',
  description: 'Lists the loaded eBPF programs, maps and links (ids, types, names, tags, attach points)',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const ids = await walkIds(ctx);
    const objs = KINDS.flatMap((kind) => ids[kind].map((id) => ({ kind, id })));

    // Open each one (the fd lives until the next batch closes it).
    const b1 = ctx.sys.batch();
    const fds = objs.map((o) =>
      b1.call('bpf', [
        FD_BY_ID_CMD[o.kind],
        inBytes(encodeIdAttr(o.id, o.kind === 'map' ? BPF_F_RDONLY : 0)),
        GET_ID_ATTR_SIZE,
      ]),
    );
    if (objs.length > 0) await b1.submit();
    const b2 = ctx.sys.batch();
    const infos: (CallRef | undefined)[] = objs.map((o, i) => {
      const r = fds[i].result();
      if (r.errno !== undefined) {
        if (r.errno !== ENOENT) ctx.warn(`bpf ${o.kind} ${o.id}: ${r.error!.message}`);
        return undefined;
      }
      const fd = Number(r.ret);
      const blob = encodeInfoBlob(o.kind, fd);
      const info = b2.call('bpf', [
        BPF_OBJ_GET_INFO_BY_FD,
        inOutBuffer(blob.size, blob.init, blob.pointers),
        GET_INFO_ATTR_SIZE,
      ]);
      b2.close(fd);
      return info;
    });
    if (b2.length > 0) await b2.submit();

    // Who holds an fd to each object.
    const holders = new Map<string, string[]>();
    const procs = await readProcessFds(ctx);
    const fdinfo: { key: string; path: string }[] = [];
    for (const p of procs)
      for (const f of p.fds)
        if (f.target && /^anon_inode:bpf[-_](prog|map|link)$/.test(f.target))
          fdinfo.push({ key: `${p.pid}(${String(p.comm)}):${f.fd}`, path: `/proc/${p.pid}/fdinfo/${f.fd}` });
    const fdinfoFiles = await ctx.sys.readFiles(fdinfo.map((f) => ({ path: f.path, chunkSize: 1024 })));
    fdinfoFiles.forEach((f, i) => {
      if (!f.data) return;
      const o = parseBpfFdinfo(new TextDecoder().decode(f.data));
      if (!o) return;
      const k = `${o.kind}:${o.id}`;
      holders.set(k, [...(holders.get(k) ?? []), fdinfo[i].key]);
    });
    const boot = objs.some((o) => o.kind === 'prog')
      ? await ctx.proc.bootTime().catch(() => undefined)
      : undefined;

    const rows: EbpfRow[] = [];
    const linksOf = new Map<number, string[]>();
    const none = (why: string) => notAvailable(why);
    objs.forEach((o, i) => {
      const ref = infos[i];
      if (!ref) return;
      const r = ref.result();
      const held = (holders.get(`${o.kind}:${o.id}`) ?? []).join(', ');
      if (r.errno !== undefined) {
        ctx.warn(`bpf ${o.kind} ${o.id}: info: ${r.error!.message}`);
        return;
      }
      try {
        if (o.kind === 'prog') {
          const p = decodeProgInfo(r.data);
          rows.push({
            Kind: 'prog',
            ID: p.id,
            Name: p.name,
            Tag: p.tag,
            Type: progTypeName(p.type),
            'Prog ID': none('a program'),
            Maps: p.mapIds.join(','),
            Attach: '',
            Holders: held,
            UID: p.uid,
            'Load Time':
              boot === undefined ? none('boot time unknown') : boot + Number(p.loadTimeNs / 1_000_000n),
            Details: `xlated ${p.xlatedLen} B, jited ${p.jitedLen} B${p.gpl ? ', GPL' : ''}`,
          });
        } else if (o.kind === 'map') {
          const m = decodeMapInfo(r.data);
          rows.push({
            Kind: 'map',
            ID: m.id,
            Name: m.name,
            Tag: none('maps have no tag'),
            Type: mapTypeName(m.type),
            'Prog ID': none('a map'),
            Maps: none('a map'),
            Attach: none('a map'),
            Holders: held,
            UID: none('not recorded for maps'),
            'Load Time': none('not recorded for maps'),
            Details: `key ${m.keySize} B, value ${m.valueSize} B, max_entries ${m.maxEntries}, flags 0x${m.flags.toString(16)}`,
          });
        } else {
          const l = decodeLinkInfo(r.data);
          linksOf.set(l.progId, [...(linksOf.get(l.progId) ?? []), `link ${l.id}: ${l.target}`]);
          rows.push({
            Kind: 'link',
            ID: l.id,
            Name: none('links have no name'),
            Tag: none('links have no tag'),
            Type: linkTypeName(l.type),
            'Prog ID': l.progId,
            Maps: none('a link'),
            Attach: l.target,
            Holders: held,
            UID: none('not recorded for links'),
            'Load Time': none('not recorded for links'),
            Details: '',
          });
        }
      } catch (e) {
        ctx.warn(`bpf ${o.kind} ${o.id}: ${(e as Error).message}`);
      }
    });
    for (const row of rows)
      if (row.Kind === 'prog') row.Attach = (linksOf.get(row.ID as number) ?? []).join('; ');
    return rows;
  },
});
