import { GdbClient, type StopReply } from '../qemu/gdb.js';
import { decodeX86Regs, encodeX86Regs, type X86Regs } from '../qemu/x86-regs.js';

export interface Stop {
  thread: string;
  regs: X86Regs;
  reply: StopReply;
}

/**
 * The gdbstub as the redirection engine uses it: hardware breakpoints it keeps track of
 * (so every one it armed is removed), registers per vCPU thread, and "continue until
 * some vCPU stops" that first steps a vCPU off an armed breakpoint it sits on (QEMU
 * would otherwise report the same breakpoint again without executing anything).
 */
export class GuestDebugger {
  private readonly armed = new Set<bigint>();
  private gThread?: string;
  private last?: { thread: string; rip: bigint };

  constructor(readonly gdb: GdbClient) {}

  get breakpoints(): bigint[] {
    return [...this.armed];
  }

  async addBreakpoint(addr: bigint): Promise<void> {
    if (this.armed.has(addr)) return;
    await this.gdb.insertBreakpoint(1, addr, 1);
    this.armed.add(addr);
  }

  async removeBreakpoint(addr: bigint): Promise<void> {
    if (!this.armed.has(addr)) return;
    await this.gdb.removeBreakpoint(1, addr, 1);
    this.armed.delete(addr);
  }

  async removeAllBreakpoints(): Promise<void> {
    for (const addr of [...this.armed]) await this.removeBreakpoint(addr);
  }

  async selectRegsThread(thread: string): Promise<void> {
    if (this.gThread === thread) return;
    await this.gdb.selectThread('g', thread);
    this.gThread = thread;
  }

  async regs(thread: string): Promise<X86Regs> {
    await this.selectRegsThread(thread);
    return decodeX86Regs(await this.gdb.readRegisters());
  }

  async setRegs(thread: string, regs: X86Regs): Promise<void> {
    await this.selectRegsThread(thread);
    await this.gdb.writeRegisters(encodeX86Regs(regs));
    if (this.last?.thread === thread) this.last = { thread, rip: regs.rip };
  }

  /** The thread that reported the current stop (QEMU's first vCPU when it named none). */
  async currentThread(): Promise<string> {
    if (this.last) return this.last.thread;
    const threads = await this.gdb.listThreads();
    if (threads.length === 0) throw new Error('gdbstub reports no vCPU threads');
    return threads[0];
  }

  /** Resumes the VM until some vCPU stops (a breakpoint); returns that vCPU and its registers. */
  async run(timeoutMs: number): Promise<Stop> {
    const early = await this.stepOffBreakpoint();
    if (early) return early;
    return this.stopped(await this.gdb.continueAndWait(timeoutMs));
  }

  private async stopped(reply: StopReply): Promise<Stop> {
    // After a stop QEMU resets its notion of the current thread to the one that stopped.
    this.gThread = undefined;
    const thread = reply.thread ?? (await this.gdb.listThreads())[0];
    const regs = await this.regs(thread);
    this.last = { thread, rip: regs.rip };
    return { thread, regs, reply };
  }

  /**
   * Steps the last-stopped vCPU off a breakpoint it sits on. The other vCPUs run during
   * the step; if one of them hits a breakpoint, that stop is returned as the next event.
   */
  private async stepOffBreakpoint(): Promise<Stop | undefined> {
    if (!this.last || !this.armed.has(this.last.rip)) return undefined;
    const { thread, rip } = this.last;
    // Single-step overrides breakpoints in QEMU's TCG, so the step leaves rip.
    await this.gdb.selectThread('c', thread);
    const reply = await this.gdb.singleStep(5000);
    const stop = await this.stopped(reply);
    if (stop.thread !== thread) return stop;
    if (stop.regs.rip === rip)
      throw new Error(`vCPU ${thread} did not leave breakpoint 0x${rip.toString(16)}`);
    return undefined;
  }

  /** Forget the last stop (e.g. after registers of that vCPU were rewritten off any breakpoint). */
  forgetLastStop(): void {
    this.last = undefined;
  }
}
