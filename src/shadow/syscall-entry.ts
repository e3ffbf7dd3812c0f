import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { translate } from '../memory/page-walk.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { cpl, withRegs, type X86Regs } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';
import type { Journal } from './journal.js';

/** How far from the stopped rip to look for `0f 05` bytes (both directions). */
const SCAN_PAGES = 4096;
/** Candidates to step before giving up (a pair in a page that faults is skipped). */
const MAX_TRIES = 8;

export class SyscallEntryError extends Error {}

/**
 * Finds the guest kernel's syscall entry point (MSR_LSTAR, which the gdbstub does not
 * expose) without symbols: point a stopped vCPU at `0f 05` bytes in an executable page
 * near its rip, single-step that `syscall`, read rip (= LSTAR), and put every register
 * back. The bytes need not be a real instruction boundary: only the CPU decodes them.
 * A step that faults instead (rcx is then not the next instruction) tries the next pair.
 */
export async function findSyscallEntry(dbg: GuestDebugger, mem: PhysicalMemory): Promise<bigint> {
  const thread = await dbg.currentThread();
  const saved = await dbg.regs(thread);
  let tries = 0;
  try {
    for await (const gadget of syscallBytes(dbg, mem, thread, saved)) {
      await dbg.setRegs(thread, withRegs(saved, { rip: gadget }));
      await dbg.gdb.selectThread('c', thread);
      // A halted vCPU only executes once an interrupt is pending; bound the wait.
      await dbg.gdb.singleStep(3000);
      const after = await dbg.regs(thread);
      await dbg.setRegs(thread, saved);
      if (cpl(after) === 0 && after.rcx === gadget + 2n) return after.rip;
      if (++tries >= MAX_TRIES) break;
    }
  } finally {
    await dbg.setRegs(thread, saved);
  }
  throw new SyscallEntryError(
    `could not step into the kernel's syscall entry near rip 0x${saved.rip.toString(16)}`,
  );
}

const SYSCALL_BYTES = Buffer.from([0x0f, 0x05]);

/** `0f 05` pairs in executable pages near rip, nearest pages first. */
async function* syscallBytes(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  thread: string,
  regs: X86Regs,
): AsyncGenerator<bigint> {
  const base = regs.rip & ~0xfffn;
  for (let k = 0; k < SCAN_PAGES; k++) {
    for (const page of k === 0 ? [base] : [base + BigInt(k) * 0x1000n, base - BigInt(k) * 0x1000n]) {
      const t = await translate(mem, regs.cr3, regs.cr4, page).catch(() => null);
      if (!t?.executable) continue;
      let bytes: Buffer;
      try {
        // One byte past the page so that a pair straddling the boundary is found too.
        bytes = await dbg.readVirtual(thread, page, 0x1001);
      } catch {
        continue;
      }
      for (let i = bytes.indexOf(SYSCALL_BYTES); i >= 0; i = bytes.indexOf(SYSCALL_BYTES, i + 1)) {
        yield page + BigInt(i);
      }
    }
  }
}

/** The per-guest syscall-entry cache in the run directory: LSTAR and the 16 code bytes there. */
export interface SyscallEntryCache {
  /** LSTAR, hex with 0x. */
  lstar: string;
  /** The 16 bytes at LSTAR, hex: a different kernel (or a relocation) gives other bytes. */
  bytes: string;
}

const SYSCALL_ENTRY_FILE = 'syscall-entry.json';

/** The cache of this run directory, or undefined when there is none (or it is unreadable). */
export function readSyscallEntryCache(runDir: string): SyscallEntryCache | undefined {
  try {
    return JSON.parse(readFileSync(join(runDir, SYSCALL_ENTRY_FILE), 'utf8')) as SyscallEntryCache;
  } catch {
    return undefined;
  }
}

/** Writes the cache (0600): by the engine after a search, by a replay from the captured LSTAR. */
export function writeSyscallEntryCache(runDir: string, cache: SyscallEntryCache): void {
  writeFileSync(join(runDir, SYSCALL_ENTRY_FILE), JSON.stringify(cache), { mode: 0o600 });
}

/**
 * Where the guest kernel's syscall entry is: cached per QEMU process in the run
 * directory (it does not change while the guest runs), validated by the code bytes
 * found there, found afresh otherwise.
 */
export async function cachedSyscallEntry(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  runDir: string,
  journal?: Journal,
): Promise<bigint> {
  const cached = readSyscallEntryCache(runDir);
  const candidate = cached?.lstar ?? journal?.lstar;
  if (candidate) {
    try {
      const bytes = (await dbg.readVirtual(await dbg.currentThread(), BigInt(candidate), 16)).toString('hex');
      if (!cached || cached.bytes === bytes) return BigInt(candidate);
    } catch {
      // unmapped: find it again
    }
  }
  const lstar = await findSyscallEntry(dbg, mem);
  const bytes = (await dbg.readVirtual(await dbg.currentThread(), lstar, 16)).toString('hex');
  writeSyscallEntryCache(runDir, { lstar: `0x${lstar.toString(16)}`, bytes });
  return lstar;
}
