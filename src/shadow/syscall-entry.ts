import { cpl, withRegs } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';

/** How far from the stopped rip to look for `0f 05` bytes (both directions). */
const SCAN_PAGES = 4096;

export class SyscallEntryError extends Error {}

/**
 * Finds the guest kernel's syscall entry point (MSR_LSTAR, which the gdbstub does not
 * expose) without symbols: point a stopped vCPU at any `0f 05` bytes in mapped memory
 * near its rip, single-step that `syscall`, read rip (= LSTAR), and put every register
 * back. The bytes need not be a real instruction boundary: only the CPU decodes them.
 */
export async function findSyscallEntry(dbg: GuestDebugger): Promise<bigint> {
  const thread = await dbg.currentThread();
  const saved = await dbg.regs(thread);
  const gadget = await findSyscallBytes(dbg, saved.rip);
  try {
    await dbg.setRegs(thread, withRegs(saved, { rip: gadget }));
    await dbg.gdb.selectThread('c', thread);
    // A halted vCPU only executes once an interrupt is pending; bound the wait.
    await dbg.gdb.singleStep(3000);
    const after = await dbg.regs(thread);
    if (cpl(after) !== 0 || after.rcx !== gadget + 2n) {
      throw new SyscallEntryError(
        `stepping a syscall at 0x${gadget.toString(16)} did not enter the kernel's syscall entry (rip 0x${after.rip.toString(16)})`,
      );
    }
    return after.rip;
  } finally {
    await dbg.setRegs(thread, saved);
  }
}

async function findSyscallBytes(dbg: GuestDebugger, rip: bigint): Promise<bigint> {
  const base = rip & ~0xfffn;
  for (let k = 0; k < SCAN_PAGES; k++) {
    for (const page of k === 0 ? [base] : [base + BigInt(k) * 0x1000n, base - BigInt(k) * 0x1000n]) {
      let bytes: Buffer;
      try {
        // One byte past the page so that a pair straddling the boundary is found too.
        bytes = await dbg.gdb.readMemory(page, 0x1001);
      } catch {
        continue;
      }
      const i = bytes.indexOf(Buffer.from([0x0f, 0x05]));
      if (i >= 0) return page + BigInt(i);
    }
  }
  throw new SyscallEntryError(
    `no syscall instruction bytes within ${SCAN_PAGES} pages of rip 0x${rip.toString(16)}`,
  );
}
