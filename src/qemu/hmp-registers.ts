/**
 * The descriptor-table registers of each vCPU, from HMP `info registers -a` (QMP
 * `human-monitor-command`): QEMU 7.2's gdbstub exposes no GDTR/IDTR, the monitor does.
 *
 * Text written by target/i386/cpu-dump.c (x86_cpu_dump_state), one block per vCPU headed
 * `CPU#N` (monitor/hmp-cmds.c, hmp_info_registers with -a). In long mode:
 *     GDT=     fffffe0000001000 0000007f
 *     IDT=     fffffe0000000000 00000fff
 * (base 16 hex digits, limit 8); in legacy modes the base has 8 digits. Parsed defensively:
 * a block without a well-formed line yields no entry for that vCPU, never a guess.
 */
import type { QmpClient } from './qmp.js';

export interface VcpuDescriptorTables {
  /** vCPU index (QEMU's cpu_index, the `CPU#N` of the dump). */
  cpu: number;
  /** IDTR: linear base address and limit in bytes minus one. */
  idt: { base: bigint; limit: number };
  /** GDTR, when the block has it. */
  gdt?: { base: bigint; limit: number };
}

/** At most this many vCPU blocks are read (QEMU's x86 maximum is 1024 + slack for junk). */
const MAX_CPUS = 1024;
const MAX_TEXT = 4 << 20;

function tableLine(block: string, name: 'IDT' | 'GDT'): { base: bigint; limit: number } | undefined {
  const m = new RegExp(`^${name}=\\s+([0-9a-fA-F]{1,16})\\s+([0-9a-fA-F]{1,8})\\s*$`, 'm').exec(block);
  if (!m) return undefined;
  return { base: BigInt(`0x${m[1]}`), limit: Number.parseInt(m[2], 16) };
}

/**
 * Parses `info registers` / `info registers -a` output into one entry per vCPU with an
 * IDT line, in the order of the dump. Text with no `CPU#N` header is taken for vCPU
 * `defaultCpu` (plain `info registers` prints the monitor's current CPU without one).
 * @throws RangeError when the text is over 4 MiB
 */
export function parseDescriptorTables(text: string, defaultCpu = 0): VcpuDescriptorTables[] {
  if (text.length > MAX_TEXT) throw new RangeError(`info registers output of ${text.length} chars`);
  const out: VcpuDescriptorTables[] = [];
  const heads = [...text.matchAll(/^CPU#(\d{1,5})\s*$/gm)].slice(0, MAX_CPUS);
  const blocks: Array<[number, string]> =
    heads.length === 0
      ? [[defaultCpu, text]]
      : heads.map((h, i) => [Number(h[1]), text.slice(h.index, heads[i + 1]?.index ?? text.length)]);
  const seen = new Set<number>();
  for (const [cpu, block] of blocks) {
    if (seen.has(cpu)) continue;
    const idt = tableLine(block, 'IDT');
    if (!idt) continue;
    seen.add(cpu);
    const gdt = tableLine(block, 'GDT');
    out.push({ cpu, idt, ...(gdt ? { gdt } : {}) });
  }
  return out;
}

/**
 * Every vCPU's descriptor-table registers from a running (or paused) QEMU, through HMP
 * `info registers -a`; a monitor that rejects `-a` gets plain `info registers` (the
 * monitor's current vCPU only). The registers are synchronised from the vCPU by QEMU
 * (cpu_synchronize_state) for the dump; the guest keeps running.
 * @throws Error when no vCPU block has an IDT line
 */
export async function queryDescriptorTables(qmp: QmpClient): Promise<VcpuDescriptorTables[]> {
  let text = await qmp.hmp('info registers -a');
  let got = parseDescriptorTables(text);
  if (got.length === 0) {
    text = await qmp.hmp('info registers');
    got = parseDescriptorTables(text);
  }
  if (got.length === 0)
    throw new Error(`QEMU's info registers shows no IDT line: ${JSON.stringify(text.slice(0, 120))}`);
  return got;
}
