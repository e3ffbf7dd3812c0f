/**
 * Crash-journal recovery: what the next attach does when a vmi died without detaching.
 * It finishes and undoes whatever the dead vmi had injected into its borrowed task
 * (restoring its registers, unmapping the scratch region) and makes any shadow it left
 * exit, then clears the journal.
 */
import { sysno } from '../abi/linux/syscalls.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { cpl, decodeX86Regs } from '../qemu/x86-regs.js';
import { findShadow } from './bootstrap.js';
import type { GuestDebugger } from './debugger.js';
import { unhex, type Journal, type JournalStore } from './journal.js';
import { ENTRY, LAYOUT } from './layout.js';
import { ShadowHandle } from './shadow.js';
import { TrapTransport } from './transport.js';
import { Victim } from './victim.js';

/**
 * Replays the journal a dead vmi left: finish and undo whatever it had injected into its
 * victim, and make any shadow it left exit. Called with the VM stopped and no breakpoint
 * armed.
 */
export async function recoverJournal(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  j: Journal,
  progress: (m: string) => void,
): Promise<void> {
  progress('a previous vmi did not detach cleanly: replaying its journal');
  if (j.victim) {
    const v = j.victim;
    const marker = unhex(v.marker);
    const saved = decodeX86Regs(Buffer.from(v.savedRegs, 'hex'));
    const gadgetEnd = unhex(v.gadget) + 2n;
    const stops = [gadgetEnd];
    if (v.scratch) stops.push(unhex(v.scratch) + BigInt(ENTRY.bootstrapDone));
    for (const s of stops) await dbg.addBreakpoint(s);
    const deadline = Date.now() + 5000;
    let found: { thread: string; rax: bigint; rip: bigint } | undefined;
    try {
      while (!found && Date.now() < deadline) {
        const { thread, regs } = await dbg.run(Math.max(1, deadline - Date.now())).catch(() => ({
          thread: '',
          regs: undefined,
        }));
        if (
          regs &&
          stops.includes(regs.rip) &&
          regs.cr3 === saved.cr3 &&
          cpl(regs) === 3 &&
          regs.r15 === marker
        ) {
          found = { thread, rax: regs.rax, rip: regs.rip };
        }
      }
    } finally {
      await dbg.removeAllBreakpoints();
    }
    if (found) {
      const victim = new Victim(dbg, found.thread, saved, marker);
      await victim.arm();
      let scratch = v.scratch ? unhex(v.scratch) : undefined;
      if (!scratch && v.pendingMmap && found.rip === gadgetEnd && BigInt.asIntN(64, found.rax) > 0n)
        scratch = found.rax;
      if (scratch) await victim.syscall(sysno('munmap'), [scratch, BigInt(LAYOUT.size)]);
      await victim.restore();
      await dbg.removeAllBreakpoints();
      dbg.forgetLastStop();
      progress('restored the borrowed task');
    } else {
      progress('the borrowed task was already restored');
    }
  }
  if (j.shadow) {
    const s = j.shadow;
    const base = unhex(s.base);
    const marker = unhex(s.marker);
    let shadow: ShadowHandle | undefined;
    try {
      if (s.pid > 0) {
        shadow = ShadowHandle.fromRecord(mem, s);
        await shadow.verify();
      } else {
        shadow = await findShadow(dbg, mem, base, marker, -1n, 3000);
      }
    } catch {
      shadow = undefined;
    }
    if (shadow) {
      await new TrapTransport(dbg, shadow).dismiss(5000);
      await dbg.removeAllBreakpoints();
      progress(`made the leftover shadow (pid ${shadow.pid}) exit`);
    }
  }
  journal.clear();
}
