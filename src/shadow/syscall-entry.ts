import { translate } from '../memory/page-walk.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { cpl, withRegs, type X86Regs } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';

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
