import { cpl, withRegs, type X86Regs } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';

export class InjectionError extends Error {}

/**
 * A user task caught right after a `syscall` instruction, borrowed to run injected
 * syscalls. Its own `syscall` (at rip - 2) is the gadget, so no byte of the guest is
 * written. While borrowed, r15 holds a random marker (r15 survives syscalls), which tells
 * a crash recovery whether the task is still in injected state.
 */
export class Victim {
  readonly gadget: bigint;
  private current: X86Regs;

  constructor(
    private readonly dbg: GuestDebugger,
    public thread: string,
    readonly saved: X86Regs,
    readonly marker: bigint,
  ) {
    this.gadget = saved.rip - 2n;
    this.current = saved;
  }

  get cr3(): bigint {
    return this.saved.cr3;
  }

  /** Arms the breakpoint that ends each injected syscall. */
  async arm(): Promise<void> {
    await this.dbg.addBreakpoint(this.gadget + 2n);
  }

  /** Runs one syscall in the victim and returns the raw result (negative = -errno). */
  async syscall(nr: number, args: readonly bigint[] = [], timeoutMs = 5000): Promise<bigint> {
    const [rdi = 0n, rsi = 0n, rdx = 0n, r10 = 0n, r8 = 0n, r9 = 0n] = args;
    await this.start(withRegs(this.saved, { rax: BigInt(nr), rdi, rsi, rdx, r10, r8, r9, rip: this.gadget }));
    const stop = await this.waitAt(this.gadget + 2n, timeoutMs, `syscall ${nr}`);
    return BigInt.asIntN(64, stop.rax);
  }

  /** Runs code at `rip` with stack `rsp` until the victim reaches `until`. */
  async runCode(rip: bigint, rsp: bigint, until: bigint, timeoutMs = 5000): Promise<X86Regs> {
    await this.dbg.addBreakpoint(until);
    try {
      await this.start(withRegs(this.saved, { rip, rsp }));
      return await this.waitAt(until, timeoutMs, `code at 0x${rip.toString(16)}`);
    } finally {
      await this.dbg.removeBreakpoint(until);
    }
  }

  /**
   * Puts every register of the task back exactly as it was when it was caught (on the
   * vCPU it runs on now; that vCPU's own state stays as it is).
   */
  async restore(): Promise<void> {
    await this.dbg.setTaskRegs(this.thread, this.saved);
    this.current = this.saved;
  }

  private async start(regs: X86Regs): Promise<void> {
    this.current = withRegs(regs, { r15: this.marker });
    await this.dbg.setTaskRegs(this.thread, this.current);
  }

  /**
   * Lets the VM run until this victim (same CR3 and RSP, CPL 3) stops at `addr`. Other
   * tasks that hit the same address are let go.
   */
  private async waitAt(addr: bigint, timeoutMs: number, what: string): Promise<X86Regs> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new InjectionError(`${what} in the victim did not complete within ${timeoutMs} ms`);
      const stop = await this.dbg.run(left);
      const r = stop.regs;
      if (r.rip === addr && r.cr3 === this.saved.cr3 && cpl(r) === 3 && r.r15 === this.marker) {
        this.thread = stop.thread;
        this.current = r;
        return r;
      }
    }
  }
}
