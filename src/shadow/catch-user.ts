import { GdbTimeoutError } from '../qemu/gdb.js';
import { cpl, type X86Regs } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';

/** Syscalls that never return to the instruction after `syscall`. */
const NO_RETURN = new Set([
  15 /* rt_sigreturn */, 59 /* execve */, 60 /* exit */, 231 /* exit_group */, 322 /* execveat */,
]);

export interface UserContext {
  thread: string;
  /** Registers at the stop: CPL 3, rip just after the `syscall` the task made. */
  regs: X86Regs;
}

export class CatchTimeoutError extends Error {}

/** What the last catch cost (for diagnostics and the benchmark). */
export const stats = { entryStops: 0, returnStops: 0, refused: 0 };

/**
 * Stops some task in user mode without symbols or an agent: a breakpoint on the syscall
 * entry reveals, in rcx, where the caller resumes; a breakpoint there, filtered by the
 * caller's CR3 and RSP, stops that task back at CPL 3 right after its syscall returned.
 * Several callers are watched at once, so a task blocked in its syscall costs nothing.
 * `accept` may refuse a caught task (e.g. not root); it is then left exactly as it was.
 */
export async function catchUserContext(
  dbg: GuestDebugger,
  lstar: bigint,
  timeoutMs: number,
  accept: (ctx: UserContext) => Promise<boolean>,
): Promise<UserContext> {
  const deadline = Date.now() + timeoutMs;
  const waiting = new Map<string, bigint>(); // "cr3:rsp" -> return address
  const refused = new Set<bigint>(); // CR3s of tasks accept() turned down
  const armedReturns = new Set<bigint>();
  stats.entryStops = 0;
  stats.returnStops = 0;
  stats.refused = 0;
  await dbg.addBreakpoint(lstar);
  try {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new CatchTimeoutError(`no guest task returned to user mode within ${timeoutMs} ms`);
      let stop: Awaited<ReturnType<GuestDebugger['run']>>;
      try {
        stop = await dbg.run(left);
      } catch (err) {
        // The deadline passed while the VM ran (it was interrupted): a timeout like any other.
        if (err instanceof GdbTimeoutError)
          throw new CatchTimeoutError(`no guest task returned to user mode within ${timeoutMs} ms`);
        throw err;
      }
      const r = stop.regs;
      if (r.rip === lstar) {
        stats.entryStops++;
        if (NO_RETURN.has(Number(r.rax)) || refused.has(r.cr3)) continue;
        waiting.set(`${r.cr3}:${r.rsp}`, r.rcx);
        if (!armedReturns.has(r.rcx)) {
          await dbg.addBreakpoint(r.rcx);
          armedReturns.add(r.rcx);
        }
        continue;
      }
      stats.returnStops++;
      if (cpl(r) !== 3 || waiting.get(`${r.cr3}:${r.rsp}`) !== r.rip) continue; // someone else at that address
      // Quiet the guest while accept() looks at this task: only its return address stays armed.
      await dbg.removeBreakpoint(lstar);
      for (const a of armedReturns) if (a !== r.rip) await dbg.removeBreakpoint(a);
      armedReturns.clear();
      armedReturns.add(r.rip);
      waiting.clear();
      const ctx = { thread: stop.thread, regs: r };
      if (await accept(ctx)) return ctx;
      refused.add(r.cr3);
      stats.refused++;
      await dbg.addBreakpoint(lstar);
    }
  } finally {
    await dbg.removeBreakpoint(lstar);
    for (const a of armedReturns) await dbg.removeBreakpoint(a);
  }
}
