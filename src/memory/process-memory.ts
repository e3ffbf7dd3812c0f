/**
 * Guest RAM read and written inside the QEMU process itself, through /proc/QEMU_PID/mem
 * (pread/pwrite at host-virtual addresses), for guests whose RAM is not a shared file:
 * what memflow's qemu connector does, but with each RAM block's host address asked of
 * QEMU (`gpa2hva`, src/qemu/ram-host.ts) instead of guessed from mapping sizes, and the
 * bytes compared with QEMU's own view (`xp`) before they are trusted.
 *
 * Access needs ptrace rights over QEMU (PTRACE_MODE_ATTACH: same uid and no more
 * capabilities than the caller, or CAP_SYS_PTRACE; Yama's ptrace_scope may forbid even
 * that). Without them the open fails with EACCES/EPERM and the caller falls back to the
 * gdbstub (and the trap transport).
 *
 * Like a shared RAM file, writes bypass TCG's translated-code tracking: code pages are
 * written through the gdbstub only (see DESIGN.md).
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import {
  findSocketServer,
  mappingsCover,
  parseHostMaps,
  processStartTime,
  type QemuProcess,
} from '../qemu/qemu-process.js';
import type { QmpClient } from '../qemu/qmp.js';
import { monitorReadPhysical, queryBlockHostBases, type QemuRamHost } from '../qemu/ram-host.js';
import type { PhysicalMemory } from './physical.js';
import { PhysicalMemoryError, type RamLayout } from './ram-layout.js';

export type { QemuRamHost } from '../qemu/ram-host.js';

/** Thrown when QEMU's memory cannot be used: one line, the reason first. */
export class ProcessMemoryError extends PhysicalMemoryError {
  override name = 'ProcessMemoryError';
}

const hex = (v: number) => `0x${v.toString(16)}`;

/** Bytes of each block that the layout uses: max(offset + size) of its ranges. */
function blockExtents(layout: RamLayout): Map<string, number> {
  const ext = new Map<string, number>();
  for (const r of layout.ranges) ext.set(r.block, Math.max(ext.get(r.block) ?? 0, r.offset + r.size));
  return ext;
}

export class ProcessMemory implements PhysicalMemory {
  private fd: number | undefined;

  /**
   * Opens /proc/PID/mem and checks that every block's bytes lie in readable, writable
   * mappings of that process.
   * @throws ProcessMemoryError when the process is gone or reused, not accessible (no
   *   ptrace rights), or a block is not mapped where QEMU said
   */
  constructor(
    readonly host: QemuRamHost,
    readonly layout: RamLayout,
    writable = true,
    private readonly proc = '/proc',
  ) {
    const { pid } = host;
    let now: number;
    try {
      now = processStartTime(pid, proc);
    } catch {
      throw new ProcessMemoryError(`QEMU (pid ${pid}) is gone`);
    }
    if (now !== host.startTime)
      throw new ProcessMemoryError(`QEMU (pid ${pid}) is gone (its pid was reused)`);
    try {
      this.fd = openSync(`${proc}/${pid}/mem`, writable ? 'r+' : 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new ProcessMemoryError(
        `no access to QEMU's memory (pid ${pid}): ${proc}/${pid}/mem: ${code}${code === 'EACCES' || code === 'EPERM' ? ' (needs ptrace rights over QEMU)' : ''}`,
      );
    }
    try {
      const maps = parseHostMaps(readFileSync(`${proc}/${pid}/maps`, 'utf8'));
      for (const [block, extent] of blockExtents(layout)) {
        const base = host.blockBases[block];
        if (base === undefined) throw new ProcessMemoryError(`no host address for RAM block ${block}`);
        if (!mappingsCover(maps, base, extent))
          throw new ProcessMemoryError(
            `RAM block ${block} (${hex(base)}+${hex(extent)}) is not a writable mapping of QEMU (pid ${pid})`,
          );
      }
    } catch (e) {
      this.close();
      if (e instanceof ProcessMemoryError) throw e;
      throw new ProcessMemoryError(`cannot read QEMU's mappings (pid ${pid}): ${(e as Error).message}`);
    }
  }

  async read(paddr: bigint, length: number): Promise<Buffer> {
    return this.readSync(paddr, length);
  }

  readSync(paddr: bigint, length: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    this.readIntoSync(paddr, buf, 0, length);
    return buf;
  }

  async readInto(paddr: bigint, target: Uint8Array, offset: number, length: number): Promise<void> {
    this.readIntoSync(paddr, target, offset, length);
  }

  /** The doorbell polls its words this way: one pread, no allocation. */
  readIntoSync(paddr: bigint, target: Uint8Array, offset: number, length: number): void {
    const pieces = this.layout.pieces(paddr, length);
    if (offset < 0 || offset + length > target.length)
      throw new RangeError(
        `readInto: ${length} bytes at ${offset} do not fit a ${target.length}-byte buffer`,
      );
    const fd = this.open();
    for (const p of pieces) {
      const base = this.host.blockBases[p.range.block];
      let done = 0;
      while (done < p.length) {
        const n = readSync(fd, target, offset + p.at + done, p.length - done, base + p.blockOffset + done);
        if (n === 0) throw new ProcessMemoryError(`short read of guest RAM at ${hex(Number(paddr))}`);
        done += n;
      }
    }
  }

  async write(paddr: bigint, data: Uint8Array): Promise<void> {
    this.writeSync(paddr, data);
  }

  writeSync(paddr: bigint, data: Uint8Array): void {
    const fd = this.open();
    for (const p of this.layout.pieces(paddr, data.length)) {
      const base = this.host.blockBases[p.range.block];
      let done = 0;
      while (done < p.length) {
        const n = writeSync(fd, data, p.at + done, p.length - done, base + p.blockOffset + done);
        if (n === 0) throw new ProcessMemoryError(`short write of guest RAM at ${hex(Number(paddr))}`);
        done += n;
      }
    }
  }

  private open(): number {
    if (this.fd === undefined) throw new ProcessMemoryError('QEMU process memory is closed');
    return this.fd;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Words compared per sample page (xp answers ~30 bytes of text per word). */
const SAMPLE_WORDS = 64;
/** Pages compared at most; a booted guest has non-zero bytes in the first few. */
const MAX_SAMPLES = 24;

/** Guest-physical addresses to compare: spread over every range, skipping the legacy window. */
export function samplePoints(layout: RamLayout, count = MAX_SAMPLES): number[] {
  const out: number[] = [];
  const total = layout.totalBytes;
  for (const r of layout.ranges) {
    const n = Math.max(1, Math.round((count * r.size) / total));
    for (let i = 0; i < n; i++) {
      const at = r.gpa + Math.floor(((i + 0.5) * r.size) / n / 4096) * 4096;
      if (at + SAMPLE_WORDS * 8 <= r.gpa + r.size && (at >= 0x10_0000 || at < 0xa_0000)) out.push(at);
    }
  }
  return out;
}

/**
 * Compares guest RAM read through `mem` with QEMU's own reading (`xp`) at spread-out
 * pages. A page may change between the two reads (the guest runs): each is tried 3 times.
 * @returns pages that matched with some non-zero byte (0: nothing proves the mapping)
 * @throws ProcessMemoryError when a page differs every time
 */
export async function compareWithMonitor(qmp: QmpClient, mem: ProcessMemory): Promise<number> {
  let proven = 0;
  for (const gpa of samplePoints(mem.layout)) {
    let same = false;
    let nonzero = false;
    for (let attempt = 0; attempt < 3 && !same; attempt++) {
      const ref = await monitorReadPhysical(qmp, gpa, SAMPLE_WORDS);
      const got = mem.readSync(BigInt(gpa), ref.length);
      same = ref.equals(got);
      nonzero = ref.some((b) => b !== 0);
    }
    if (!same)
      throw new ProcessMemoryError(
        `QEMU's memory at the address QEMU gave differs from the guest's RAM at ${hex(gpa)} (pid ${mem.host.pid})`,
      );
    if (nonzero) proven++;
  }
  return proven;
}

/**
 * Finds the QEMU process behind `qmpSocket`, asks it where each RAM block is, opens
 * its memory and checks the bytes against QEMU's own reading. Read-only; a few ms plus
 * ~1 ms per compared page.
 * @param qmp a connection to that QEMU (QMP takes one client at a time: the caller's)
 * @throws ProcessMemoryError (one line) when any step fails: the caller falls back
 */
export async function probeProcessMemory(
  qmp: QmpClient,
  qmpSocket: string,
  layout: RamLayout,
): Promise<QemuRamHost> {
  let proc: QemuProcess;
  try {
    proc = findSocketServer(qmpSocket);
  } catch (e) {
    throw new ProcessMemoryError(`cannot find QEMU's process: ${(e as Error).message}`);
  }
  let blockBases: Record<string, number>;
  try {
    blockBases = await queryBlockHostBases(qmp, layout.ranges);
  } catch (e) {
    throw new ProcessMemoryError(`QEMU did not say where its RAM is: ${(e as Error).message}`);
  }
  const host: QemuRamHost = { pid: proc.pid, startTime: proc.startTime, blockBases };
  const mem = new ProcessMemory(host, layout, false);
  try {
    const proven = await compareWithMonitor(qmp, mem);
    // A process found only by its command line must show real guest bytes; one seen
    // holding the QMP socket is QEMU already (a guest that never ran has only zeros).
    if (!proc.proven && proven === 0)
      throw new ProcessMemoryError(
        `cannot prove that pid ${proc.pid} is this guest's QEMU (its RAM is all zeros)`,
      );
  } catch (e) {
    if (e instanceof ProcessMemoryError) throw e;
    throw new ProcessMemoryError(`cannot compare QEMU's memory with the guest's: ${(e as Error).message}`);
  } finally {
    mem.close();
  }
  return host;
}
