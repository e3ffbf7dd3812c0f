/**
 * The hypervisor's own view of a guest, for the checks that must not trust the guest
 * kernel (modxview's code pages, check_syscall's table): guest RAM read by the host
 * through a host-side walk of the kernel's page tables. Nothing here runs in the guest,
 * so a kernel rootkit cannot filter it; it can still change the data it reads. Plugins see
 * this interface only (the engine behind it lives in src/shadow/kernel-view.ts).
 */

/** A run of mapped kernel pages with the same rights. */
export interface KernelMapping {
  /** First virtual address (page aligned). */
  start: bigint;
  /** Bytes (a multiple of 4 KiB). */
  size: bigint;
  writable: boolean;
  executable: boolean;
}

/** The kernel's address space, as the hypervisor reads it. */
export interface KernelMemory {
  /**
   * Reads `length` bytes (≤ 1 MiB) of kernel virtual memory.
   * @throws Error when a page of the range is not mapped
   */
  read(vaddr: bigint, length: number): Promise<Uint8Array>;
  /** The mapped pages in [start, end) (at most 2 GiB), merged into runs. */
  mappings(start: bigint, end: bigint): Promise<KernelMapping[]>;
}

/** One vCPU's interrupt descriptor table register (IDTR), as the hypervisor holds it. */
export interface VcpuIdtr {
  /** vCPU index. */
  cpu: number;
  /** Linear (kernel virtual) address of the IDT. */
  base: bigint;
  /** Limit in bytes minus one (0xfff for 256 16-byte gates). */
  limit: number;
}

export interface HypervisorView {
  /** Where guest RAM comes from (`ram-file`, `qemu-process`, `gdbstub`). */
  readonly memory: string;
  /**
   * The kernel's address space: the page tables the vCPU uses in kernel mode, chosen as
   * those that map `anchor` (a kernel address the caller knows, e.g. from /proc/kallsyms).
   * @throws Error when no candidate page table maps it
   */
  kernel(anchor: bigint): Promise<KernelMemory>;
  /**
   * Every vCPU's IDTR, read from the hypervisor's vCPU state (not from guest memory; on a
   * replay, the state the capture restored). Undefined when this view has no vCPU state.
   * @throws Error when the hypervisor answers with no IDTR
   */
  idtr?(): Promise<VcpuIdtr[]>;
}
