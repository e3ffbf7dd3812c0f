/**
 * library_list: the shared libraries the dynamic linker loaded into each process
 * (Volatility's linux.library_list), read from the process's own link map, without
 * symbols: /proc/PID/auxv gives the program headers' address (AT_PHDR); PT_PHDR gives the
 * load bias and PT_DYNAMIC the dynamic section, whose DT_DEBUG entry ld.so points at its
 * `struct r_debug`; r_map heads the list of `struct link_map` {l_addr, l_name, l_ld,
 * l_next, l_prev} (<link.h>, the ABI every glibc and musl shares). Entries with an empty
 * name (the program itself) are left out, as Volatility does; the vDSO is listed under
 * the name ld.so gives it.
 *
 * Statically linked programs have no dynamic linker (AT_BASE 0), hence no rows. Columns are
 * Volatility's (Name is the task name, LoadAddress l_addr) plus Mapped: whether the path
 * is a file /proc/PID/maps shows mapped (False for a name in the link map that the maps do
 * not back, e.g. a library unmapped behind ld.so's back).
 *
 * Cost: 1 batch for the listing (none with --pid), 1 for comm and maps, 1 for auxv, 1 for the
 * program headers, 1 for the dynamic sections, 1 for r_debug, then 1 per round of the
 * link-map walk: each round reads 8 KiB at every node not read yet (glibc allocates the
 * nodes close together, so a round usually covers several) and the names: ~7-10 batches.
 */
import {
  DT_DEBUG,
  ELF64_PHDR_SIZE,
  LINK_MAP_SIZE,
  parseDynamic,
  parseLinkMap,
  parseProgramHeaders,
  PT_DYNAMIC,
  PT_PHDR,
  R_DEBUG_R_MAP,
} from '../abi/linux/elf.js';
import {
  bytesToText,
  definePlugin,
  isVanished,
  PID_OPTION,
  readMemory,
  readProcessMaps,
  type MemoryRequest,
  type Row,
} from '../sdk/index.js';

const columns = [
  { name: 'Name', type: 'utf8', description: 'Task name (comm)' },
  { name: 'Pid', type: 'int32', description: 'Process id' },
  {
    name: 'LoadAddress',
    type: 'hex64',
    description: 'l_addr: the load bias of the library (its base for a shared object)',
  },
  { name: 'Path', type: 'utf8', description: "l_name: the library's path as ld.so recorded it" },
  { name: 'Mapped', type: 'bool', description: 'The path is a file mapped in the process (/proc/PID/maps)' },
] as const;

const AT_NULL = 0n;
const AT_PHDR = 3n;
const AT_PHNUM = 5n;
const AT_BASE = 7n;
/** Link-map nodes followed per process at most (a cycle or a smeared list stops there). */
const MAX_NODES = 1024;
/** Bytes read at a node not yet covered: glibc's link_map is ~1.1 KiB and nodes sit close. */
const NODE_WINDOW = 8192;
const NAME_BYTES = 512;
const MAX_ROUNDS = 64;
const MAX_DYNAMIC = 16384;

interface Walk {
  pid: number;
  comm: string;
  mapped: Set<string>;
  /** Windows of memory read so far: start address → bytes. */
  windows: { start: bigint; data: Uint8Array }[];
  next: bigint;
  seen: Set<bigint>;
  nodes: { addr: bigint; name: bigint }[];
  done: boolean;
}

function cached(w: Walk, addr: bigint, len: number): Uint8Array | undefined {
  for (const win of w.windows) {
    const off = addr - win.start;
    if (off >= 0n && off + BigInt(len) <= BigInt(win.data.length))
      return win.data.subarray(Number(off), Number(off) + len);
  }
  return undefined;
}

/** The NUL-terminated string at `addr` if a window holds it whole. */
function cachedString(w: Walk, addr: bigint): Uint8Array | undefined {
  for (const win of w.windows) {
    const off = addr - win.start;
    if (off < 0n || off >= BigInt(win.data.length)) continue;
    const rest = win.data.subarray(Number(off));
    const nul = rest.indexOf(0);
    if (nul >= 0) return rest.subarray(0, nul);
  }
  return undefined;
}

export const library_list = definePlugin({
  name: 'library_list',
  volatilityName: 'linux.library_list',
  description: 'Lists the shared libraries loaded into the processes of the guest, from their link maps',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION },
  async run(ctx) {
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const procs = await readProcessMaps(ctx, pids);
    const auxvFiles = await ctx.proc.readProcFiles(
      procs.map((p) => p.pid),
      'auxv',
      { chunkSize: 1024 },
    );
    // Step 1: AT_PHDR/AT_PHNUM of the dynamically linked processes (AT_BASE ≠ 0: an interpreter).
    const starts: { walk: Walk; phdr: bigint; phnum: number }[] = [];
    for (const p of procs) {
      const f = auxvFiles.get(p.pid);
      if (!f || f.error) {
        if (f?.error && !isVanished(f.error)) ctx.warn(`pid ${p.pid}: ${f.path}: ${f.error.message}`);
        continue;
      }
      const dv = new DataView(f.data!.buffer, f.data!.byteOffset, f.data!.byteLength);
      const aux = new Map<bigint, bigint>();
      for (let o = 0; o + 16 <= f.data!.length; o += 16) {
        const type = dv.getBigUint64(o, true);
        if (type === AT_NULL) break;
        aux.set(type, dv.getBigUint64(o + 8, true));
      }
      const phdr = aux.get(AT_PHDR) ?? 0n;
      const phnum = Number(aux.get(AT_PHNUM) ?? 0n);
      if ((aux.get(AT_BASE) ?? 0n) === 0n || phdr === 0n || phnum <= 0 || phnum > 256) continue;
      const mapped = new Set(p.maps.filter((m) => m.inode !== 0n).map((m) => m.path));
      starts.push({
        walk: {
          pid: p.pid,
          comm: p.comm,
          mapped,
          windows: [],
          next: 0n,
          seen: new Set(),
          nodes: [],
          done: false,
        },
        phdr,
        phnum,
      });
    }
    // Step 2: the program headers → the dynamic section.
    const phs = await readMemory(
      ctx,
      starts.map((s) => ({ pid: s.walk.pid, address: s.phdr, size: s.phnum * ELF64_PHDR_SIZE })),
    );
    const dyn: { walk: Walk; req: MemoryRequest }[] = [];
    phs.forEach((r, i) => {
      const s = starts[i];
      const hdrs = parseProgramHeaders(
        r.data,
        {
          elfClass: 2,
          data: 1,
          type: 0,
          machine: 0,
          entry: 0n,
          phoff: 0n,
          phentsize: ELF64_PHDR_SIZE,
          phnum: s.phnum,
        },
        0n,
      );
      const self = hdrs.find((h) => h.type === PT_PHDR);
      const dynamic = hdrs.find((h) => h.type === PT_DYNAMIC);
      if (!dynamic) return;
      const bias = self ? s.phdr - self.vaddr : 0n;
      const size = Number(dynamic.memsz < BigInt(MAX_DYNAMIC) ? dynamic.memsz : BigInt(MAX_DYNAMIC));
      if (size >= 16)
        dyn.push({ walk: s.walk, req: { pid: s.walk.pid, address: bias + dynamic.vaddr, size } });
    });
    const dyns = await readMemory(
      ctx,
      dyn.map((d) => d.req),
    );
    // Step 3: DT_DEBUG → struct r_debug → r_map.
    const dbg: { walk: Walk; req: MemoryRequest }[] = [];
    dyns.forEach((r, i) => {
      const debug = parseDynamic(r.data).find((e) => e.tag === BigInt(DT_DEBUG));
      if (debug && debug.val !== 0n)
        dbg.push({ walk: dyn[i].walk, req: { pid: dyn[i].walk.pid, address: debug.val, size: 16 } });
    });
    const rdebug = await readMemory(
      ctx,
      dbg.map((d) => d.req),
    );
    const walks: Walk[] = [];
    rdebug.forEach((r, i) => {
      if (r.data.length < 16) return;
      const w = dbg[i].walk;
      w.next = new DataView(r.data.buffer, r.data.byteOffset, 16).getBigUint64(R_DEBUG_R_MAP, true);
      walks.push(w);
    });
    // Step 4: walk the link maps, all processes in the same rounds.
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const reqs: { walk: Walk; req: MemoryRequest }[] = [];
      for (const w of walks) {
        while (!w.done) {
          if (w.next === 0n || w.seen.has(w.next) || w.nodes.length >= MAX_NODES) {
            w.done = true;
            break;
          }
          const bytes = cached(w, w.next, LINK_MAP_SIZE);
          if (!bytes) {
            reqs.push({ walk: w, req: { pid: w.pid, address: w.next, size: NODE_WINDOW } });
            break;
          }
          const lm = parseLinkMap(bytes)!;
          w.seen.add(w.next);
          w.nodes.push({ addr: lm.addr, name: lm.name });
          w.next = lm.next;
        }
        if (w.done)
          for (const n of w.nodes)
            if (n.name !== 0n && !cachedString(w, n.name))
              reqs.push({ walk: w, req: { pid: w.pid, address: n.name, size: NAME_BYTES } });
      }
      if (reqs.length === 0) break;
      const got = await readMemory(
        ctx,
        reqs.map((r) => r.req),
      );
      got.forEach((r, i) => {
        const w = reqs[i].walk;
        if (r.data.length === 0) {
          // The node (or name) cannot be read: stop this process's walk where it is.
          if (r.size === NODE_WINDOW) w.done = true;
          else w.windows.push({ start: r.address, data: new Uint8Array([0]) });
          return;
        }
        const data = r.size === NAME_BYTES && r.data.indexOf(0) < 0 ? new Uint8Array([...r.data, 0]) : r.data;
        w.windows.push({ start: r.address, data });
      });
    }
    const rows: Row<typeof columns>[] = [];
    for (const w of walks) {
      if (!w.done) ctx.warn(`pid ${w.pid}: link map walk stopped after ${MAX_ROUNDS} rounds`);
      for (const n of w.nodes) {
        if (n.name === 0n) continue;
        const name = cachedString(w, n.name);
        if (!name || name.length === 0) continue;
        const path = bytesToText(name);
        rows.push({ Name: w.comm, Pid: w.pid, LoadAddress: n.addr, Path: path, Mapped: w.mapped.has(path) });
      }
    }
    return rows;
  },
});
