/**
 * The SDK's HypervisorView (src/sdk/hypervisor.ts) over a session's physical memory and
 * the shadow's page-table root. The shadow is a user task: with KPTI its CR3 names the
 * user half of an 8 KiB PGD pair and the kernel's own tables are the page below
 * (arch/x86/mm/pti.c, PTI_PGTABLE_SWITCH_BIT = bit 12); without KPTI it is the one PGD.
 * The kernel tables are picked as the candidate that maps the caller's anchor, and when
 * both map it they must agree on where.
 */
import { mappedRanges, readVirtual, translate } from '../memory/page-walk.js';
import type { PhysicalMemory } from '../memory/physical.js';
import type { HypervisorView, KernelMapping, KernelMemory, VcpuIdtr } from '../sdk/hypervisor.js';
import { queryDescriptorTables } from '../qemu/hmp-registers.js';
import { QmpClient } from '../qemu/qmp.js';

const PGD_MASK = 0x000f_ffff_ffff_f000n;
const PTI_USER_BIT = 1n << 12n;
/** Bounds of one call (the guest's page tables are hostile data). */
const MAX_READ = 1 << 20;
const MAX_SPAN = 2n << 30n;

export class HostKernelView implements HypervisorView {
  constructor(
    private readonly mem: PhysicalMemory,
    /** The shadow's CR3 and CR4 as recorded at its creation. */
    private readonly cr3: bigint,
    private readonly cr4: bigint,
    readonly memory: string,
    /** QEMU's QMP socket, for the vCPU state the gdbstub lacks (IDTR). */
    private readonly qmpSocket?: string,
  ) {}

  /** IDTR of every vCPU from HMP `info registers -a` (QEMU 7.2's gdbstub has no IDTR). */
  async idtr(): Promise<VcpuIdtr[]> {
    if (this.qmpSocket === undefined) throw new Error('no QMP socket: the vCPU state is out of reach');
    // QMP takes one client at a time: connect for this question only.
    const qmp = await QmpClient.connect(this.qmpSocket, { timeoutMs: 5000 });
    try {
      const tables = await queryDescriptorTables(qmp);
      return tables.map((t) => ({ cpu: t.cpu, base: t.idt.base, limit: t.idt.limit }));
    } finally {
      qmp.close();
    }
  }

  async kernel(anchor: bigint): Promise<KernelMemory> {
    const raw = this.cr3 & PGD_MASK;
    const below = raw & ~PTI_USER_BIT;
    const viaRaw = await translate(this.mem, raw, this.cr4, anchor).catch(() => null);
    let pgd: bigint | undefined;
    if (below !== raw) {
      const viaBelow = await translate(this.mem, below, this.cr4, anchor).catch(() => null);
      if (viaBelow && (!viaRaw || viaRaw.paddr === viaBelow.paddr)) pgd = below;
    }
    if (pgd === undefined && viaRaw) pgd = raw;
    if (pgd === undefined)
      throw new Error(`no kernel page table maps 0x${anchor.toString(16)} (CR3 0x${this.cr3.toString(16)})`);
    const { mem, cr4 } = this;
    const root = pgd;
    return {
      async read(vaddr: bigint, length: number): Promise<Uint8Array> {
        if (!Number.isSafeInteger(length) || length < 0 || length > MAX_READ)
          throw new RangeError(`kernel read of ${length} bytes (at most ${MAX_READ})`);
        return readVirtual(mem, root, cr4, vaddr, length);
      },
      async mappings(start: bigint, end: bigint): Promise<KernelMapping[]> {
        if (end <= start || end - start > MAX_SPAN)
          throw new RangeError('kernel mapping range empty or over 2 GiB');
        return (await mappedRanges(mem, root, cr4, start, end)).map((r) => ({
          start: r.start,
          size: r.size,
          writable: r.writable,
          executable: r.executable,
        }));
      },
    };
  }
}
