/**
 * Opens a live guest's physical memory: learns its RAM layout (recorded by whoever started
 * the guest, or asked of QEMU over QMP) and picks the source, the shared RAM file(s) when
 * the guest has them, else QEMU's own process memory when it was proven at attach, else
 * the gdbstub.
 */
import type { GdbClient } from '../qemu/gdb.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { QmpClient } from '../qemu/qmp.js';
import { queryRamMap } from '../qemu/ram-map.js';
import { GdbPhysicalMemory } from './gdb-physical.js';
import { RamFileMemory, type PhysicalMemory } from './physical.js';
import { ProcessMemory } from './process-memory.js';
import { PhysicalMemoryError, RamLayout } from './ram-layout.js';

export interface GuestRam {
  layout: RamLayout;
  /** Block → RAM file, for the blocks the guest's own record names (empty without files). */
  files: Record<string, string>;
}

/**
 * The guest's RAM layout and files. Uses `guest.ram` when recorded; otherwise one QMP
 * connection (query-memdev, qom-get, `info mtree -f`, a few ms). A file QEMU reports is
 * used only when it is one the guest's record names (never a path QEMU alone vouches for).
 * @throws PhysicalMemoryError when QMP cannot be reached or the layout is unusable
 */
export async function learnGuestRam(guest: GuestEndpoints): Promise<GuestRam> {
  const declared = guest.ramFiles ?? {};
  if (guest.ram?.length) {
    const layout = new RamLayout(guest.ram);
    const files: Record<string, string> = { ...declared };
    const blocks = layout.blocks;
    if (guest.ramFile && blocks.length === 1 && !files[blocks[0]]) files[blocks[0]] = guest.ramFile;
    return { layout, files };
  }
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(guest.qmpSocket, { timeoutMs: 5000 });
    const map = await queryRamMap(qmp);
    const mine = new Set([guest.ramFile, ...Object.values(declared)].filter(Boolean));
    const files = Object.fromEntries(Object.entries(map.files).filter(([, path]) => mine.has(path)));
    return { layout: new RamLayout(map.ranges), files };
  } catch (e) {
    if (e instanceof PhysicalMemoryError) throw e;
    throw new PhysicalMemoryError(`cannot learn guest ${guest.name}'s RAM layout: ${(e as Error).message}`);
  } finally {
    qmp?.close();
  }
}

/** The shared RAM file(s) as memory, or undefined when the guest has none. */
export function openRamFiles(
  guest: GuestEndpoints,
  ram: GuestRam,
  writable = true,
): PhysicalMemory | undefined {
  if (!guest.ramFile) return undefined;
  return new RamFileMemory(ram.files, ram.layout, writable);
}

/**
 * True when the host can reach the guest's RAM without the gdbstub (a shared RAM file, or
 * QEMU's process memory proven at attach): what the doorbell transport needs.
 */
export function hasHostRam(guest: GuestEndpoints): boolean {
  return guest.ramFile !== undefined || guest.qemuRam !== undefined;
}

/** Which host-side source {@link openHostRam} opened. */
export type HostRamKind = 'ram-file' | 'qemu-process';

/**
 * The guest's RAM as the host reaches it directly: its shared RAM file(s), else QEMU's
 * process memory; undefined when it has neither.
 * @throws PhysicalMemoryError (ProcessMemoryError for QEMU's memory: one line, e.g. no
 *   ptrace rights or QEMU gone) when the source exists but cannot be opened
 */
export function openHostRam(
  guest: GuestEndpoints,
  ram: GuestRam,
  writable = true,
): { mem: PhysicalMemory; kind: HostRamKind } | undefined {
  const file = openRamFiles(guest, ram, writable);
  if (file) return { mem: file, kind: 'ram-file' };
  if (guest.qemuRam)
    return { mem: new ProcessMemory(guest.qemuRam, ram.layout, writable), kind: 'qemu-process' };
  return undefined;
}

/** The gdbstub as memory, checked against the layout. */
export function gdbMemory(gdb: GdbClient, ram: GuestRam): PhysicalMemory {
  return new GdbPhysicalMemory(gdb, ram.layout);
}
