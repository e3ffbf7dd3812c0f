/**
 * modxview: kernel modules seen through several views, and what one view hides from the
 * others (Volatility's linux.malware.modxview, which merges lsmod, check_modules and
 * hidden_modules; here without a profile). A rootkit that unlinks itself from the module
 * list (list_del of THIS_MODULE->list) disappears from /proc/modules and /proc/kallsyms;
 * one that also removes its kobject disappears from /sys/module. Its code is still mapped
 * executable in the module area, which the hypervisor reads without asking the guest.
 *
 * Views, one bool column each:
 * - In procfs: /proc/modules (guest kernel: the module list, kernel/module/procfs.c).
 * - In sysfs: /sys/module/NAME/initstate exists (guest kernel: the module's kobject; only
 *   loadable modules have initstate, built-in ones do not).
 * - In kallsyms: symbols `[NAME]` in /proc/kallsyms (guest kernel: the module list again,
 *   plus ftrace's record of the freed init functions of modules that had ftrace sites).
 * - In code scan: executable pages in the module area that lie in the module's memory
 *   (its /proc/modules base and size, its /sys/module/NAME/sections/.text page). Host
 *   only: a page walk of the kernel's page tables in guest RAM, no guest code runs.
 * Rows of the code scan: each run of executable module-area pages that belongs to no
 * listed module and to no kernel-made code named in kallsyms ([__builtin__ftrace]
 * trampolines, [__builtin__kprobes] slots, [bpf] programs) is a row of its own, Name '?'.
 *
 * A 2 MiB run aligned on 2 MiB is a BPF program pack when /proc/vmallocinfo lists at least
 * as many bpf_prog_pack_alloc areas (its addresses are hashed, so only counts compare): a row
 * `[bpf_prog_pack]`, not flagged. Code hidden inside a pack is not told apart.
 *
 * Taints: /proc/modules and /sys/module/NAME/taint per module, /proc/sys/kernel/tainted for
 * the kernel. Out-of-tree (O) or unsigned (E) taint of the kernel that no listed module
 * carries is reported in EVIDENCE of the unlisted rows (a module that was unloaded leaves
 * it too, so it is never a finding by itself).
 *
 * Needs root in the guest (addresses in /proc/modules, /proc/kallsyms and sections are
 * shown to CAP_SYSLOG only); without addresses, or without the hypervisor view (isolated
 * packs), the code scan column is N/A and only the guest views are compared.
 *
 * Cost (measured on the lab's 6.1 guest: 9 batches, ~2950 syscalls): /proc/modules and
 * tainted, the /sys/module listing, initstate/taint/.text of every entry, /proc/kallsyms
 * read to its end (4 MB: 2 rounds of ~750 page-sized reads, readToEnd) and its close, and
 * on the host one page walk of the module area (a few hundred table reads).
 */
import {
  definePlugin,
  notAvailable,
  proc as procParsers,
  readKallsyms,
  type PluginContext,
  type Row,
} from '../sdk/index.js';

/**
 * x86-64 module mapping space, widest case (Documentation/arch/x86/x86_64/mm.rst): from
 * 0xffffffffa0000000 (a 512 MiB kernel image; 0xffffffffc0000000 with KASLR's 1 GiB) to
 * MODULES_END below the fixmap. The kernel image's own pages are excluded by _text.._end.
 */
export const MODULE_AREA_START = 0xffff_ffff_a000_0000n;
export const MODULE_AREA_END = 0xffff_ffff_ff00_0000n;
const PAGE = 4096n;

/** Taint letters of kernel/panic.c taint_flags, by bit. */
const TAINT_LETTERS = 'PFSRMBUDAWCIOELKXTN';

/** /proc/sys/kernel/tainted → letters (`OE`), pure. */
export function taintLetters(mask: bigint): string {
  let s = '';
  for (let bit = 0; bit < TAINT_LETTERS.length; bit++)
    if (mask & (1n << BigInt(bit))) s += TAINT_LETTERS[bit];
  return s;
}

const columns = [
  { name: 'Name', type: 'utf8', description: "Module name; '?' for code no module claims" },
  {
    name: 'Address',
    type: 'hex64',
    description:
      'Base address (/proc/modules, else .text section, else the first kallsyms symbol; the run start for code rows)',
  },
  { name: 'Size', type: 'int64', description: 'Bytes (/proc/modules size; the run length for code rows)' },
  { name: 'In procfs', type: 'bool', description: 'Listed in /proc/modules (guest kernel: module list)' },
  {
    name: 'In sysfs',
    type: 'bool',
    description: 'Has /sys/module/NAME/initstate (guest kernel: the module kobject)',
  },
  {
    name: 'In kallsyms',
    type: 'bool',
    description: 'Has symbols [NAME] in /proc/kallsyms (guest kernel: module list, ftrace mod map)',
  },
  {
    name: 'In code scan',
    type: 'bool',
    description:
      'Executable pages of the module area in its memory (hypervisor only: host page walk of guest RAM); N/A without addresses or host view',
  },
  {
    name: 'Taints',
    type: 'utf8',
    description: 'Taint letters of the module (/proc/modules, /sys/module/NAME/taint)',
  },
  { name: 'HIDDEN', type: 'bool', description: 'Some view misses it: a view of the kernel lies' },
  {
    name: 'EVIDENCE',
    type: 'utf8',
    description: 'Which views see it and which miss it (empty when all agree)',
  },
] as const;

type ModRow = Row<typeof columns>;

interface ModInfo {
  name: string;
  base?: bigint;
  size?: number;
  procfs: boolean;
  sysfs: boolean;
  kallsyms: boolean;
  text?: bigint;
  taints: string;
  firstSymbol?: bigint;
}

const NO_ADDR = notAvailable('kernel addresses hidden from the shadow (kptr_restrict, no CAP_SYSLOG)');
const NO_HOST = notAvailable('no hypervisor view in this run');

export const modxview = definePlugin({
  name: 'modxview',
  volatilityName: 'linux.malware.modxview',
  description:
    'Kernel modules in /proc/modules, /sys/module, kallsyms and the hypervisor’s scan of module code; flags hidden ones',
  version: '1.0.0',
  columns,
  async run(ctx) {
    return modxviewRows(ctx);
  },
});

/** A 2 MiB, 2 MiB-aligned executable run: the shape of a BPF program pack. */
/**
 * A run of unclaimed executable pages shaped like a BPF program pack: one whole 2 MiB-aligned
 * 2 MiB window, but for pages holding `[bpf]` kallsyms symbols (`bpfPages`, page addresses).
 */
function isPackShaped(
  o: { start: bigint; size: bigint },
  bpfPages: ReadonlySet<bigint> = new Set(),
): boolean {
  const window = 2n << 20n;
  const base = o.start & ~(window - 1n);
  const end = o.start + o.size;
  if (end > base + window) return false;
  for (let p = base; p < base + window; p += 0x1000n)
    if ((p < o.start || p >= end) && !bpfPages.has(p)) return false;
  return true;
}

async function modxviewRows(ctx: PluginContext): Promise<ModRow[]> {
  const [modulesFile, taintedFile] = await ctx.sys.readFiles(['/proc/modules', '/proc/sys/kernel/tainted'], {
    chunkSize: 16384,
  });
  const [sysList] = await ctx.sys.listDirs(['/sys/module']);
  const mods = new Map<string, ModInfo>();
  const get = (name: string): ModInfo => {
    let m = mods.get(name);
    if (!m) mods.set(name, (m = { name, procfs: false, sysfs: false, kallsyms: false, taints: '' }));
    return m;
  };
  if (modulesFile?.data) {
    const { entries, errors } = procParsers.parseModules(modulesFile.data);
    for (const e of errors) ctx.warn(e.message);
    for (const e of entries) {
      const m = get(e.name);
      m.procfs = true;
      m.taints = e.taints.replace(/[()]/g, '');
      if (e.offset !== 0n) m.base = e.offset;
      m.size = e.size;
    }
  } else ctx.warn(`/proc/modules: ${modulesFile?.error?.message ?? 'unreadable'}`);
  const kernelTaint = taintedFile?.data
    ? BigInt(/^\s*(\d{1,20})/.exec(new TextDecoder().decode(taintedFile.data))?.[1] ?? '0')
    : 0n;

  // Every /sys/module entry: initstate marks a loadable module; taint and .text come along.
  const sysNames = (sysList?.entries ?? []).map((e) => e.name).filter((n) => /^[\w.-]{1,64}$/.test(n));
  if (sysList?.error) ctx.warn(`/sys/module: ${sysList.error.message}`);
  const reads = await ctx.sys.readFiles(
    sysNames.flatMap((n) => [
      { path: `/sys/module/${n}/initstate`, chunkSize: 64 },
      { path: `/sys/module/${n}/taint`, chunkSize: 64 },
      { path: `/sys/module/${n}/sections/.text`, chunkSize: 64 },
    ]),
  );
  const text = (r: { data?: Uint8Array } | undefined) =>
    r?.data ? new TextDecoder().decode(r.data).trim() : undefined;
  sysNames.forEach((n, i) => {
    if (!reads[i * 3]?.data) return;
    const m = get(n);
    m.sysfs = true;
    const t = text(reads[i * 3 + 1]);
    if (t && !m.taints) m.taints = t;
    const s = text(reads[i * 3 + 2]);
    if (s && /^0x[0-9a-f]{1,16}$/.test(s) && BigInt(s) !== 0n) m.text = BigInt(s);
  });

  const ks = await readKallsyms(ctx);
  const pseudo: bigint[] = [];
  let kText: bigint | undefined;
  let kEnd: bigint | undefined;
  for (const s of ks.symbols) {
    if (s.module === '') {
      if (s.name === '_text') kText = s.address;
      else if (s.name === '_end') kEnd = s.address;
      continue;
    }
    if (procParsers.isPseudoModule(s.module)) {
      pseudo.push(s.address);
      continue;
    }
    const m = get(s.module);
    m.kallsyms = true;
    if (s.address !== 0n && (m.firstSymbol === undefined || s.address < m.firstSymbol))
      m.firstSymbol = s.address;
  }

  // The hypervisor's scan: executable pages of the module area, claimed or not.
  let scan: { start: bigint; size: bigint }[] | undefined;
  const haveAddresses = !ks.hidden && kText !== undefined;
  if (ctx.hypervisor && haveAddresses) {
    ctx.progress('walking the module area (host)');
    const kernel = await ctx.hypervisor.kernel(kText!);
    scan = (await kernel.mappings(MODULE_AREA_START, MODULE_AREA_END))
      .filter((r) => r.executable)
      .filter((r) => !(kEnd !== undefined && r.start >= kText! && r.start < kEnd));
  }
  const claims = (m: ModInfo): { start: bigint; end: bigint }[] => {
    const out: { start: bigint; end: bigint }[] = [];
    if (m.base !== undefined && m.size !== undefined)
      out.push({ start: m.base, end: m.base + BigInt(m.size) });
    if (m.text !== undefined) out.push({ start: m.text & ~(PAGE - 1n), end: (m.text & ~(PAGE - 1n)) + PAGE });
    return out;
  };
  const listed = [...mods.values()].filter((m) => m.procfs || m.sysfs);
  const { seen: seenByScan, orphans } = attributeScan(
    scan ?? [],
    listed.map((m) => ({ name: m.name, claims: claims(m) })),
    pseudo,
  );

  const kernelTaints = taintLetters(kernelTaint);
  const unexplained = [...'OE'].filter(
    (l) => kernelTaints.includes(l) && !listed.some((m) => m.taints.includes(l)),
  );
  const taintNote = unexplained.length
    ? `; kernel taint ${kernelTaints} has ${unexplained.join('')} that no listed module carries`
    : '';

  const rows: ModRow[] = [];
  for (const m of [...mods.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const inScan = scan && haveAddresses ? seenByScan.has(m.name) : undefined;
    const views: [string, boolean | undefined][] = [
      ['procfs', m.procfs],
      ['sysfs', m.sysfs],
      ['kallsyms', m.kallsyms],
    ];
    // A module without executable code would miss the scan honestly; only the guest views decide.
    const seen = views.filter(([, v]) => v === true).map(([n]) => n);
    const missed = views.filter(([, v]) => v === false).map(([n]) => n);
    // kallsyms lists only modules with symbols; a listed module without any is not hidden from it.
    const hidden = !m.procfs || !m.sysfs || (!m.kallsyms && m.firstSymbol !== undefined);
    rows.push({
      Name: m.name,
      Address: m.base ?? m.text ?? m.firstSymbol ?? NO_ADDR,
      Size: m.size ?? notAvailable('not in /proc/modules'),
      'In procfs': m.procfs,
      'In sysfs': m.sysfs,
      'In kallsyms': m.kallsyms,
      'In code scan': inScan ?? (haveAddresses ? NO_HOST : NO_ADDR),
      Taints: m.taints,
      HIDDEN: hidden,
      EVIDENCE: hidden
        ? `seen by ${seen.join(', ') || 'no guest view'}; missed by ${missed.join(', ')}${taintNote}`
        : '',
    });
  }
  // BPF JIT images live in 2 MiB packs from the module area (kernel/bpf/core.c
  // bpf_prog_pack_alloc, set executable whole); classic BPF programs in them are not in
  // kallsyms. /proc/vmallocinfo hashes addresses, so packs are matched by count and shape.
  // A pack's first pages may hold a JIT image the kernel lists in kallsyms as `[bpf]` (so
  // claimed): the unclaimed run is then the rest of the 2 MiB window.
  const bpfPages = new Set(
    ks.symbols.filter((x) => x.module === 'bpf' && x.address !== 0n).map((x) => x.address & ~0xfffn),
  );
  const packShape = (o: { start: bigint; size: bigint }): boolean => isPackShaped(o, bpfPages);
  let packs = 0;
  if (orphans.some(packShape)) {
    const vm = await ctx.sys.readToEnd('/proc/vmallocinfo').catch(() => undefined);
    if (vm) packs = (new TextDecoder().decode(vm).match(/ 2101248 bpf_prog_pack_alloc\+/g) ?? []).length;
  }
  const packShaped = orphans.filter(packShape).length;
  const index = new procParsers.SymbolIndex(ks.symbols);
  for (const o of orphans) {
    if (packShape(o) && packShaped <= packs) {
      rows.push({
        Name: '[bpf_prog_pack]',
        Address: o.start,
        Size: Number(o.size),
        'In procfs': false,
        'In sysfs': false,
        'In kallsyms': false,
        'In code scan': true,
        Taints: '',
        HIDDEN: false,
        EVIDENCE: '',
      });
      continue;
    }
    const near = index
      .within(o.start, o.start + o.size)
      .map((s) => `${s.name}${s.module ? ` [${s.module}]` : ''}`);
    rows.push({
      Name: '?',
      Address: o.start,
      Size: Number(o.size),
      'In procfs': false,
      'In sysfs': false,
      'In kallsyms': near.length > 0,
      'In code scan': true,
      Taints: '',
      HIDDEN: true,
      EVIDENCE:
        `${o.size / PAGE} executable page(s) in the module area at 0x${o.start.toString(16)} that no listed module claims ` +
        `(hypervisor page walk)${near.length ? `; kallsyms names ${near.slice(0, 3).join(', ')}` : ''}${taintNote}`,
    });
  }
  return rows;
}

/**
 * The hypervisor's scan attributed: which listed modules own an executable page of the
 * module area (`seen`), and the runs of pages no module and no pseudo-module symbol (`[bpf]`
 * and the like, `pseudo` addresses) claims (`orphans`). Addresses are guest-virtual,
 * 4 KiB pages. Every module whose claim holds a page sees it, not only the first:
 * /proc/modules' size adds up all of a module's memory types (kernel/module/procfs.c), so
 * base + size can run past its text into another module's pages (since 6.4 each memory
 * type is its own allocation, kernel/module/main.c); the first claimant alone made
 * libcrc32c's text look unseen on 6.12 when a neighbour's long range covered it.
 */
export function attributeScan(
  runs: readonly { start: bigint; size: bigint }[],
  modules: readonly { name: string; claims: readonly { start: bigint; end: bigint }[] }[],
  pseudo: readonly bigint[],
): { seen: Set<string>; orphans: { start: bigint; size: bigint }[] } {
  const seen = new Set<string>();
  const orphans: { start: bigint; size: bigint }[] = [];
  for (const r of runs) {
    for (let p = r.start; p < r.start + r.size; p += PAGE) {
      const owners = modules.filter((m) => m.claims.some((c) => p >= c.start && p < c.end));
      for (const m of owners) seen.add(m.name);
      if (owners.length > 0 || pseudo.some((a) => a >= p && a < p + PAGE)) continue;
      const last = orphans[orphans.length - 1];
      if (last && last.start + last.size === p) last.size += PAGE;
      else orphans.push({ start: p, size: PAGE });
    }
  }
  return { seen, orphans };
}
