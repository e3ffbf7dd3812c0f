/**
 * check_idt: the x86-64 interrupt descriptor table as the hypervisor reads it, each present
 * gate checked to point into the kernel's core text or a listed module's code (Volatility's
 * linux.malware.check_idt, without a profile). A rootkit that rewrites a gate, or loads an
 * IDTR of its own, is flagged.
 *
 * Sources:
 * - the IDT's base and limit: each vCPU's IDTR, from the hypervisor (QEMU's `info
 *   registers`; no guest code runs). On x86-64 Linux it is the read-only alias of
 *   idt_table in the CPU entry area (0xfffffe0000000000, arch/x86/kernel/idt.c
 *   idt_map_in_cea).
 * - the 256 16-byte gate descriptors: read by the host from guest RAM through a walk of
 *   the kernel's page tables (Intel SDM vol. 3, 6.14.1: offset 15:0, selector, IST, type
 *   and P/DPL, offset 31:16, offset 63:32).
 * - _stext/_etext, idt_table and the handlers' symbols from /proc/kallsyms, module ranges
 *   from /proc/modules (guest kernel, root only).
 * A present gate is sound when its handler lies in [_stext, _etext) or in a listed module,
 * its selector is __KERNEL_CS (0x10) and its type an interrupt or trap gate, and (when
 * kallsyms names idt_table) it is the same 16 bytes as idt_table's gate. Linux fills
 * 32..255 with irq_entries_start/spurious_entries_start stubs, so those gates point
 * inside a symbol, not at its start: that is sound. Exception vectors it never sets after
 * boot keep early_idt_handler_array's stubs in the freed init text: sound while the host
 * finds that page not executable (one page walk per such page).
 *
 * Cost (lab 6.1 guest: 4 batches): /proc/modules, /proc/kallsyms read to its end (2
 * rounds and a close); on the host one QMP question per run and two 4 KiB reads per IDTR.
 */
import { definePlugin, proc as procParsers, readKallsyms, type Row } from '../sdk/index.js';

/** arch/x86/include/asm/segment.h: GDT_ENTRY_KERNEL_CS * 8 on x86-64. */
const KERNEL_CS = 0x10;
const GATE_INTERRUPT = 0xe;
const GATE_TRAP = 0xf;
const GATE_SIZE = 16;
const MAX_GATES = 256;
/** early_idt_handler_array: 32 stubs of EARLY_IDT_HANDLER_SIZE (9 bytes; 13 with IBT's endbr). */
const EARLY_STUBS_SPAN = 32n * 16n;

/** One decoded gate descriptor (SDM vol. 3, figure 6-8). */
export interface IdtGate {
  index: number;
  handler: bigint;
  selector: number;
  ist: number;
  type: number;
  dpl: number;
  present: boolean;
}

/** Decodes `bytes` (a multiple of 16, at most 256 gates) into gates; pure. */
export function decodeIdt(bytes: Uint8Array): IdtGate[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const gates: IdtGate[] = [];
  for (let i = 0; i < Math.min(MAX_GATES, Math.floor(bytes.length / GATE_SIZE)); i++) {
    const o = i * GATE_SIZE;
    const attr = v.getUint8(o + 5);
    gates.push({
      index: i,
      handler:
        BigInt(v.getUint16(o, true)) |
        (BigInt(v.getUint16(o + 6, true)) << 16n) |
        (BigInt(v.getUint32(o + 8, true)) << 32n),
      selector: v.getUint16(o + 2, true),
      ist: v.getUint8(o + 4) & 7,
      type: attr & 0xf,
      dpl: (attr >> 5) & 3,
      present: (attr & 0x80) !== 0,
    });
  }
  return gates;
}

const columns = [
  { name: 'CPU', type: 'utf8', description: 'vCPUs whose IDTR names this table (hypervisor vCPU state)' },
  {
    name: 'IDT Address',
    type: 'hex64',
    description: 'IDTR base (hypervisor vCPU state: QEMU info registers; no guest code)',
  },
  { name: 'Index', type: 'int32', description: 'Vector number' },
  { name: 'Present', type: 'bool', description: 'Gate P bit (read by the host from guest RAM)' },
  {
    name: 'Address',
    type: 'hex64',
    description: 'Handler address in the gate (host page walk of guest RAM; no guest code)',
  },
  { name: 'Selector', type: 'int32', description: 'Code segment selector of the gate' },
  { name: 'Type', type: 'utf8', description: 'Gate type (interrupt, trap, other), DPL and IST' },
  {
    name: 'Module',
    type: 'utf8',
    description:
      "Where the handler is: 'kernel' (core text), 'kernel (freed init text)', a listed module (/proc/modules), or '?'",
  },
  { name: 'Symbol', type: 'utf8', description: 'Symbol of the handler (%pS style, from /proc/kallsyms)' },
  { name: 'HOOKED', type: 'bool', description: 'A present gate that is not sound (see EVIDENCE)' },
  { name: 'EVIDENCE', type: 'utf8', description: 'Why the gate is flagged (empty when sound)' },
] as const;

function gateType(g: IdtGate): string {
  const t = g.type === GATE_INTERRUPT ? 'interrupt' : g.type === GATE_TRAP ? 'trap' : `type ${g.type}`;
  return `${t} dpl${g.dpl}${g.ist ? ` ist${g.ist}` : ''}`;
}

export const checkIdt = definePlugin({
  name: 'check_idt',
  volatilityName: 'linux.malware.check_idt',
  description:
    'Checks the IDT of every vCPU, read by the hypervisor, for gates outside kernel and module code',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const [modulesFile] = await ctx.sys.readFiles(['/proc/modules'], { chunkSize: 16384 });
    const modules = modulesFile?.data ? procParsers.parseModules(modulesFile.data).entries : [];
    const ks = await readKallsyms(ctx, { needAddresses: true });
    const core = (n: string) => ks.symbols.find((s) => s.module === '' && s.name === n)?.address;
    const stext = core('_stext');
    const etext = core('_etext');
    if (stext === undefined || etext === undefined) throw new Error('/proc/kallsyms lacks _stext or _etext');
    const idtTable = core('idt_table');
    const sinit = core('_sinittext');
    const einit = core('_einittext');
    const early = core('early_idt_handler_array');
    const index = new procParsers.SymbolIndex(ks.symbols);

    if (!ctx.hypervisor?.idtr)
      throw new Error('check_idt needs the hypervisor view with vCPU state (a live guest or a replay)');
    ctx.progress('reading the vCPUs’ IDTR (host)');
    const idtrs = await ctx.hypervisor.idtr();
    // One table per distinct IDTR (every vCPU of Linux loads the same one).
    const tables = new Map<string, { base: bigint; limit: number; cpus: number[] }>();
    for (const r of idtrs) {
      const key = `${r.base}:${r.limit}`;
      const t = tables.get(key) ?? { base: r.base, limit: r.limit, cpus: [] };
      t.cpus.push(r.cpu);
      tables.set(key, t);
    }
    const kernel = await ctx.hypervisor.kernel(stext);
    let reference: IdtGate[] | undefined;
    if (idtTable !== undefined)
      reference = decodeIdt(await kernel.read(idtTable, MAX_GATES * GATE_SIZE).catch(() => new Uint8Array()));

    /** Whether the page of `va` is mapped executable (host page walk), cached per page. */
    const execPages = new Map<bigint, boolean>();
    const executable = async (va: bigint): Promise<boolean> => {
      const page = va & ~0xfffn;
      let x = execPages.get(page);
      if (x === undefined) {
        x = (await kernel.mappings(page, page + 0x1000n)).some((m) => m.executable);
        execPages.set(page, x);
      }
      return x;
    };

    const rows: Row<typeof columns>[] = [];
    for (const t of tables.values()) {
      const count = Math.min(MAX_GATES, Math.floor((t.limit + 1) / GATE_SIZE));
      const gates = decodeIdt(await kernel.read(t.base, count * GATE_SIZE));
      for (const g of gates) {
        const target = g.handler;
        const inCore = target >= stext && target < etext;
        const mod = modules.find(
          (m) => m.offset !== 0n && target >= m.offset && target < m.offset + BigInt(m.size),
        );
        const hit = index.lookup(target);
        let where: string;
        let symbol: string;
        // Exception vectors Linux never sets after boot (reserved ones, #VE without TDX, …)
        // keep early_idt_handler_array's stubs (arch/x86/kernel/head64.c early_idt_setup,
        // head_64.S), in init text the kernel freed and unmapped: sound while not executable.
        // (kallsyms may name the same address _sinittext: located by the array's own address.)
        const earlyStub =
          g.index < 32 &&
          early !== undefined &&
          sinit !== undefined &&
          einit !== undefined &&
          target >= early &&
          target < early + EARLY_STUBS_SPAN &&
          target >= sinit &&
          target < einit;
        if (inCore) [where, symbol] = ['kernel', procParsers.formatSymbol(hit)];
        else if (earlyStub)
          [where, symbol] = [
            'kernel (freed init text)',
            `early_idt_handler_array+0x${(target - early!).toString(16)}`,
          ];
        else if (mod)
          [where, symbol] = [
            mod.name,
            hit?.symbol.module === mod.name ? procParsers.formatSymbol(hit) : `? [${mod.name}]`,
          ];
        else [where, symbol] = ['?', '?'];
        const why: string[] = [];
        if (g.present) {
          if (earlyStub) {
            if (await executable(target))
              why.push('early_idt_handler_array in freed init text, yet mapped executable');
          } else if (!inCore && !mod)
            why.push('handler outside the kernel text (_stext.._etext) and every listed module');
          if (g.selector !== KERNEL_CS) why.push(`selector 0x${g.selector.toString(16)}, not __KERNEL_CS`);
          if (g.type !== GATE_INTERRUPT && g.type !== GATE_TRAP) why.push(`gate type ${g.type}`);
          const ref = reference?.[g.index];
          if (ref && (ref.handler !== g.handler || ref.selector !== g.selector || ref.type !== g.type))
            why.push(`differs from idt_table[${g.index}] (0x${ref.handler.toString(16)})`);
        }
        rows.push({
          CPU: t.cpus.join(','),
          'IDT Address': t.base,
          Index: g.index,
          Present: g.present,
          Address: target,
          Selector: g.selector,
          Type: gateType(g),
          Module: g.present ? where : '',
          Symbol: g.present ? symbol : '',
          HOOKED: why.length > 0,
          EVIDENCE: why.join('; '),
        });
      }
    }
    return rows;
  },
});
