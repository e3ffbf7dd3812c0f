/**
 * kallsyms: the kernel's symbol table (Volatility's linux.kallsyms), from /proc/kallsyms
 * (kernel/kallsyms.c): the kernel image's symbols, every loaded module's, and the BPF and
 * ftrace trampolines the kernel adds. Addresses are real only for a reader that may see
 * kernel pointers (the shadow runs as root: kptr_restrict ≤ 1 shows them); otherwise they
 * are zeros and the Addr column is N/A, with a warning.
 *
 * Beyond the file: Size is the distance to the next higher symbol of the same image or
 * module (N/A for the last one, as Volatility's); Exported is whether a `__ksymtab_NAME`
 * entry exists (EXPORT_SYMBOL writes one); SubSystem is Volatility's classification
 * (core, module, bpf for `bpf_prog_*` symbols, ftrace for `[__builtin__ftrace]`).
 *
 * Cost: SyscallApi.readToEnd, ~750 page-sized reads per batch and one batch to close:
 * 3 batches for the 4.4 MiB of the lab's Debian 6.1 kernel with its modules, 4 for 7 MiB.
 */
import { parseKallsyms, KALLSYMS_TYPES, type KallsymsEntry } from '../abi/linux/proc/kallsyms.js';
import { definePlugin, notAvailable, type Row } from '../sdk/index.js';

const columns = [
  { name: 'Addr', type: 'hex64', description: 'Symbol address (N/A when kptr_restrict hides it)' },
  {
    name: 'Type',
    type: 'utf8',
    description: "nm's type letter (T text, D data, B bss, R read-only; lower case: local)",
  },
  { name: 'Size', type: 'int64', description: 'Bytes to the next symbol of the same image or module' },
  { name: 'Exported', type: 'bool', description: 'EXPORT_SYMBOL’d (a __ksymtab_NAME entry exists)' },
  { name: 'SubSystem', type: 'utf8', description: 'core (kernel image), module, bpf or ftrace' },
  { name: 'ModuleName', type: 'utf8', description: 'Module (in brackets in the file), or kernel' },
  { name: 'SymbolName', type: 'utf8', description: 'Symbol name' },
  { name: 'Description', type: 'utf8', description: 'What the type letter means' },
] as const;

/** Volatility's subsystem of a symbol. */
export function subsystemOf(e: KallsymsEntry): string {
  if (e.module === 'bpf' || e.name.startsWith('bpf_prog_')) return 'bpf';
  if (e.module?.includes('ftrace')) return 'ftrace';
  return e.module ? 'module' : 'core';
}

/** Size of each symbol: the gap to the next higher address in its image or module. */
export function symbolSizes(entries: readonly KallsymsEntry[]): (bigint | undefined)[] {
  const groups = new Map<string, number[]>();
  entries.forEach((e, i) => {
    const k = e.module;
    const g = groups.get(k);
    if (g) g.push(i);
    else groups.set(k, [i]);
  });
  const sizes: (bigint | undefined)[] = entries.map(() => undefined);
  for (const idx of groups.values()) {
    idx.sort((a, b) =>
      entries[a].address < entries[b].address ? -1 : entries[a].address > entries[b].address ? 1 : 0,
    );
    let next: bigint | undefined;
    for (let j = idx.length - 1; j >= 0; j--) {
      const a = entries[idx[j]].address;
      if (next !== undefined && next > a) sizes[idx[j]] = next - a;
      if (next === undefined || a < next) next = a;
    }
  }
  return sizes;
}

export const kallsyms = definePlugin({
  name: 'kallsyms',
  volatilityName: 'linux.kallsyms',
  description: 'Lists the kernel symbols (kernel image, modules, BPF programs) with types and addresses',
  version: '1.0.0',
  columns,
  options: {
    module: { type: 'string', description: 'Only the symbols of this module (kernel: the image)' },
  },
  async run(ctx) {
    const { symbols: entries, errors } = parseKallsyms(await ctx.sys.readToEnd('/proc/kallsyms'));
    for (const e of errors) ctx.warn(e.message);
    const visible = entries.some((e) => e.address !== 0n);
    if (!visible) ctx.warn('/proc/kallsyms: addresses hidden (kptr_restrict): Addr and Size are N/A');
    const exported = new Set<string>();
    for (const e of entries)
      if (e.name.startsWith('__ksymtab_')) exported.add(`${e.name.slice(10)}\0${e.module}`);
    const sizes = visible ? symbolSizes(entries) : [];
    const hidden = notAvailable('address hidden by kptr_restrict');
    const want = ctx.options.module;
    const rows: Row<typeof columns>[] = [];
    entries.forEach((e, i) => {
      const mod = e.module || 'kernel';
      if (want !== undefined && want !== mod) return;
      rows.push({
        Addr: visible ? e.address : hidden,
        Type: e.type,
        Size: sizes[i] ?? notAvailable(visible ? 'last symbol of its image or module' : 'addresses hidden'),
        Exported: exported.has(`${e.name}\0${e.module}`),
        SubSystem: subsystemOf(e),
        ModuleName: mod,
        SymbolName: e.name,
        Description: KALLSYMS_TYPES[e.type.toLowerCase()] ?? 'unknown',
      });
    });
    return rows;
  },
});
