/**
 * check_syscall: the x86-64 system call table as the hypervisor reads it from guest RAM,
 * each entry checked to point at the start of a syscall handler in the kernel's core text
 * (Volatility's linux.malware.check_syscall, without a profile). A rootkit that rewrites
 * an entry (to its own code in the module area, or to another kernel function) is flagged.
 *
 * Sources: the table's address and the handlers' symbols from /proc/kallsyms (guest kernel,
 * root only); the table's contents by the host, through a page walk of the kernel's page
 * tables in guest RAM (no guest code runs, so a rootkit cannot filter this read). The
 * table's length is its distance to the next kallsyms symbol (≤ 512 entries; trailing zero
 * padding dropped). An entry is sound when it points into [_stext, _etext) at offset 0 of
 * a `__x64_sys_*`, `__ia32_sys_*` or `sys_ni_syscall` symbol (arch/x86/entry/syscall_64.c
 * fills every gap with __x64_sys_ni_syscall).
 *
 * Kernels since 6.9 (and 6.1.85+, 6.6.26+ backports) dispatch through x64_sys_call's
 * switch, not the table: a rewritten entry then changes nothing the kernel runs, but it is
 * still a rootkit's write into read-only kernel data, and still flagged. The Dispatch column
 * says which way the kernel dispatches (x64_sys_call present in /proc/kallsyms or not).
 *
 * Cost (lab 6.1 guest: 4 batches): /proc/modules, /proc/kallsyms read to its end (2 rounds
 * and a close), then one host read of the table (~3.6 KB).
 */
import {
  definePlugin,
  notAvailable,
  proc as procParsers,
  readKallsyms,
  syscallName,
  type Row,
} from '../sdk/index.js';

const HANDLER_RE = /^(__x64_sys_\w+|__ia32_sys_\w+|sys_ni_syscall)$/;
const MAX_ENTRIES = 512;

const columns = [
  { name: 'Table Address', type: 'hex64', description: 'Address of sys_call_table (/proc/kallsyms)' },
  { name: 'Table Name', type: 'utf8', description: 'Which table (64bit: sys_call_table)' },
  {
    name: 'Dispatch',
    type: 'utf8',
    description:
      "How the kernel runs 64-bit syscalls (/proc/kallsyms): 'x64_sys_call' (a switch; the table is not used, 6.9+ and 6.1.85+) or 'sys_call_table'",
  },
  { name: 'Index', type: 'int32', description: 'System call number' },
  {
    name: 'Syscall',
    type: 'utf8',
    description: 'x86-64 system call name of that number (profiles/x86_64-syscalls.json)',
  },
  {
    name: 'Handler Address',
    type: 'hex64',
    description: 'The entry, read by the hypervisor from guest RAM (host page walk; no guest code)',
  },
  {
    name: 'Handler Symbol',
    type: 'utf8',
    description: "Symbol of the entry (%pS style, from /proc/kallsyms); '?' in code of no listed module",
  },
  {
    name: 'HOOKED',
    type: 'bool',
    description: 'The entry does not point at a syscall handler of the core kernel text',
  },
  { name: 'EVIDENCE', type: 'utf8', description: 'Why the entry is flagged (empty when sound)' },
] as const;

export const checkSyscall = definePlugin({
  name: 'check_syscall',
  volatilityName: 'linux.malware.check_syscall',
  description: 'Checks the system call table, read from guest RAM by the hypervisor, for rewritten entries',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const [modulesFile] = await ctx.sys.readFiles(['/proc/modules'], { chunkSize: 16384 });
    const modules = modulesFile?.data ? procParsers.parseModules(modulesFile.data).entries : [];
    const ks = await readKallsyms(ctx, { needAddresses: true });
    const core = (n: string) => ks.symbols.find((s) => s.module === '' && s.name === n)?.address;
    const table = core('sys_call_table');
    const stext = core('_stext');
    const etext = core('_etext');
    if (table === undefined || stext === undefined || etext === undefined)
      throw new Error('/proc/kallsyms lacks sys_call_table, _stext or _etext');
    const index = new procParsers.SymbolIndex(ks.symbols);
    // arch/x86/entry/syscall_64.c: since 6.9 (backported to 6.1.85, 6.6.26) do_syscall_64
    // calls x64_sys_call(), a switch over the numbers; the table stays for tracing only.
    const dispatch = core('x64_sys_call') === undefined ? 'sys_call_table' : 'x64_sys_call';
    const next = ks.symbols
      .filter((s) => s.address > table)
      .reduce<bigint | undefined>((m, s) => (m === undefined || s.address < m ? s.address : m), undefined);
    let count = Math.min(MAX_ENTRIES, next === undefined ? MAX_ENTRIES : Number((next - table) / 8n));
    if (!ctx.hypervisor)
      throw new Error('check_syscall needs the hypervisor view (a live guest or a replay)');
    const kernel = await ctx.hypervisor.kernel(table);
    const raw = await kernel.read(table, count * 8);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    while (count > 0 && view.getBigUint64((count - 1) * 8, true) === 0n) count--;

    const rows: Row<typeof columns>[] = [];
    for (let nr = 0; nr < count; nr++) {
      const target = view.getBigUint64(nr * 8, true);
      const inCore = target >= stext && target < etext;
      const hit = index.lookup(target);
      const mod = modules.find(
        (m) => m.offset !== 0n && target >= m.offset && target < m.offset + BigInt(m.size),
      );
      let symbol: string;
      if (inCore) symbol = procParsers.formatSymbol(hit);
      else if (mod && hit?.symbol.module === mod.name) symbol = procParsers.formatSymbol(hit);
      else if (mod) symbol = `? [${mod.name}]`;
      else symbol = '?';
      let why = '';
      if (!inCore)
        why = mod
          ? `points into module ${mod.name}, outside the kernel text`
          : `points outside the kernel text (_stext..._etext) and every listed module`;
      else if (!hit || hit.offset !== 0n) why = `points inside ${symbol}, not at a function start`;
      else if (!HANDLER_RE.test(hit.symbol.name)) why = `points at ${hit.symbol.name}, not a syscall handler`;
      const name = syscallName(nr);
      rows.push({
        'Table Address': table,
        'Table Name': '64bit',
        Dispatch: dispatch,
        Index: nr,
        Syscall: name.startsWith('syscall_') ? notAvailable('number unknown to the profile') : name,
        'Handler Address': target,
        'Handler Symbol': symbol,
        HOOKED: why !== '',
        EVIDENCE: why,
      });
    }
    return rows;
  },
});
