import { cpl } from '../qemu/x86-regs.js';
import type { GuestDebugger } from './debugger.js';
import { ENTRY, SHADOW_STATE } from './layout.js';
import { ShadowLostError, type ShadowHandle } from './shadow.js';
import type { WakeLine } from './wake-line.js';
import { CONTROL, LAYOUT } from './layout.js';
import { translate } from '../memory/page-walk.js';

/** The ways batches reach the shadow (see DoorbellTransport and TrapTransport). */
export const TRANSPORT_NAMES = ['doorbell', 'trap'] as const;
export type TransportName = (typeof TRANSPORT_NAMES)[number];

/** What a caller may ask for: a transport, or 'auto' (doorbell with a shared RAM file, else trap). */
export const TRANSPORT_CHOICES = ['auto', ...TRANSPORT_NAMES] as const;
export type TransportChoice = (typeof TRANSPORT_CHOICES)[number];

/**
 * How the host makes the shadow run the batch already written into its pages, and
 * learns that it finished. The batch itself is written and read the same way for both.
 */
export interface Transport {
  readonly name: TransportName;
  /** Rings the doorbell with sequence number `seq` and waits for the shadow to finish it. */
  ring(seq: bigint, timeoutMs: number): Promise<void>;
  /**
   * Rings batch `seq` and returns without waiting (`ring` split in two): the shadow runs
   * it right after the batch before, if that one still runs. Only a transport that lets
   * the VM run between batches has it (doorbell); `finish` then waits for it.
   */
  start?(seq: bigint): Promise<void>;
  /** Waits until the shadow has finished batch `seq` (and every batch before it). */
  finish?(seq: bigint, timeoutMs: number): Promise<void>;
  /** Makes the shadow exit (it unmaps nothing: its exit frees all of its memory). */
  dismiss(timeoutMs: number): Promise<void>;
}

export class TransportTimeoutError extends Error {}

/**
 * trap: the VM stays stopped between batches. Ring, resume, and wait for the shadow to
 * hit the breakpoint at the end of its batch loop. Works with any QEMU that has a
 * gdbstub, including guests without shared RAM.
 */
export class TrapTransport implements Transport {
  readonly name = 'trap';

  constructor(
    private readonly dbg: GuestDebugger,
    private readonly shadow: ShadowHandle,
    private readonly wake?: WakeLine,
  ) {}

  async ring(seq: bigint, timeoutMs: number): Promise<void> {
    await this.shadow.writeControl('doorbell', seq);
    // The VM is stopped: the byte waits in QEMU and interrupts the guest when it runs.
    this.wake?.poke();
    await this.runUntil(this.shadow.base + BigInt(ENTRY.batchEnd), timeoutMs, 'batch');
    if ((await this.shadow.readControl('done')) !== seq) {
      throw new ShadowLostError(
        `shadow (pid ${this.shadow.pid}) stopped at the end of a batch it did not finish`,
      );
    }
  }

  async dismiss(timeoutMs: number): Promise<void> {
    await this.shadow.writeControl('command', 1n);
    this.wake?.poke();
    await this.dbg.removeBreakpoint(this.shadow.base + BigInt(ENTRY.batchEnd));
    await this.runUntil(this.shadow.base + BigInt(ENTRY.exitPoint), timeoutMs, 'exit', false);
  }

  /**
   * Runs the VM until the shadow reaches `addr`. The batch-end breakpoint stays armed
   * between batches (the session removes it at detach): QEMU's TCG throws away all its
   * translated code whenever a breakpoint is inserted or removed, and re-translating the
   * guest kernel after every batch made this transport several times slower.
   */
  private async runUntil(addr: bigint, timeoutMs: number, what: string, keepArmed = true): Promise<void> {
    await this.dbg.addBreakpoint(addr);
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0)
          throw new TransportTimeoutError(`shadow did not reach its ${what} end within ${timeoutMs} ms`);
        const { regs } = await this.dbg.run(left);
        if (regs.rip === addr && regs.cr3 === this.shadow.cr3 && cpl(regs) === 3) return;
      }
    } finally {
      if (!keepArmed) await this.dbg.removeBreakpoint(addr);
    }
  }
}

/** A shadow still asleep this long after a poke lost it (a race with its going to sleep): poke again. */
const REPOKE_MS = 20;

/** Sleeps the calling thread for a short while without a timer (sub-millisecond waits). */
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function pause(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * How long the doorbell's poll sleeps between two looks at the done word, by how long it
 * has waited (ms): not at all for the first 50 µs (a hot shadow answers a small batch in
 * microseconds; the poll only lets the event loop run between looks), then 50 µs until
 * 2 ms (a small batch is answered within them), then 200 µs (a big batch takes tens of ms:
 * finer steps only burn a host core that QEMU or the host's parsing needs, for at most
 * 0.2 ms less latency), 1 ms after a second. The spin is bounded by time, not looks: a
 * hundred looks with an event-loop turn each took ~2 ms of host CPU per batch, some 40%
 * of a resident pslist's host CPU at 117 processes, taken from the core QEMU's vCPU
 * needed (bench/README.md, "Host CPU").
 */
export function pollStepMs(waitedMs: number): number {
  if (waitedMs < POLL_SPIN_MS) return 0;
  if (waitedMs < 2) return 0.05;
  return waitedMs < 1000 ? 0.2 : 1;
}

/** How long the poll looks without sleeping (pollStepMs). */
export const POLL_SPIN_MS = 0.05;

/** Lets queued callbacks and I/O run (a setImmediate turn of the event loop). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * doorbell: the VM never stops. The host writes the doorbell word through the shared RAM
 * file and polls the done word, re-checking the shadow's identity while it waits.
 */
export class DoorbellTransport implements Transport {
  readonly name = 'doorbell';
  /**
   * Poke a sleeping shadow at every batch, even right after an earlier poke. Set by a
   * session that lets the shadow sleep at once after each batch (SessionOptions.holdAwake
   * false, spin window 0): its shadow is asleep again by the next batch, and holding the
   * poke back for REPOKE_MS would cost each further batch of a call that long.
   */
  eagerWake = false;

  constructor(
    private readonly shadow: ShadowHandle,
    private readonly wake?: WakeLine,
  ) {}

  async ring(seq: bigint, timeoutMs: number): Promise<void> {
    await this.start(seq);
    await this.finish(seq, timeoutMs);
  }

  async start(seq: bigint): Promise<void> {
    const s = this.shadow;
    await s.writeControl('doorbell', seq);
    // A busy shadow looks at the doorbell again when its batch ends; a sleeping one is
    // poked, on a line that is up first (begun at attach, or now).
    if ((await s.readControl('state')) === BigInt(SHADOW_STATE.sleeping))
      await this.wake?.pokeWhenUp(this.eagerWake ? 0 : REPOKE_MS);
  }

  async finish(seq: bigint, timeoutMs: number): Promise<void> {
    const s = this.shadow;
    // One page walk per batch; the tight loop then reads the two words directly.
    const ctl = await translate(s.mem, s.cr3, s.cr4, s.base + BigInt(LAYOUT.control));
    if (!ctl) throw new ShadowLostError(`shadow (pid ${s.pid}) is gone: its control page is unmapped`);
    const cell = Buffer.alloc(8);
    const donePaddr = ctl.paddr + BigInt(CONTROL.done);
    const statePaddr = ctl.paddr + BigInt(CONTROL.state);
    // The words are compared as two 32-bit halves, read without a promise where the
    // memory allows: the poll looks hundreds of times a run, and a BigInt and a few
    // promises per look were a tenth of a resident pslist's garbage.
    const mem = s.mem;
    const readSync = mem.readIntoSync?.bind(mem);
    const is = (lo: number, hi: number) => cell.readUInt32LE(0) === lo && cell.readUInt32LE(4) === hi;
    // done has reached seq: the shadow runs the batches rung in turn, and a later one may
    // have ended too by the time this looks.
    const reached = (lo: number, hi: number) => {
      const h = cell.readUInt32LE(4);
      return h > hi || (h === hi && cell.readUInt32LE(0) >= lo);
    };
    const look = async (paddr: bigint): Promise<void> => mem.readInto(paddr, cell, 0, 8);
    const seqLo = Number(BigInt.asUintN(32, seq));
    const seqHi = Number(BigInt.asUintN(32, seq >> 32n));
    const sleeping = SHADOW_STATE.sleeping;
    let nextPoke = Date.now() + REPOKE_MS;
    // A wake-up lost to a race costs at most one re-poke, not the line's timeout.
    const rePoke = (): void => {
      if (!is(sleeping, 0)) return;
      this.wake?.poke();
      nextPoke = Date.now() + REPOKE_MS;
    };
    await this.poll(
      readSync
        ? () => {
            readSync(donePaddr, cell, 0, 8);
            if (reached(seqLo, seqHi)) return true;
            if (Date.now() > nextPoke) {
              readSync(statePaddr, cell, 0, 8);
              rePoke();
            }
            return false;
          }
        : async () => {
            await look(donePaddr);
            if (reached(seqLo, seqHi)) return true;
            if (Date.now() > nextPoke) {
              await look(statePaddr);
              rePoke();
            }
            return false;
          },
      timeoutMs,
      'batch',
    );
  }

  async dismiss(timeoutMs: number): Promise<void> {
    await this.shadow.writeControl('command', 1n);
    this.wake?.poke();
    // Once it exits its page tables go away: that, too, is the answer.
    const exited = async (): Promise<boolean> => {
      try {
        await this.shadow.verify();
        return (await this.shadow.readControl('state')) === BigInt(SHADOW_STATE.exiting);
      } catch (err) {
        if (err instanceof ShadowLostError) return true;
        throw err;
      }
    };
    await this.poll(exited, timeoutMs, 'exit');
  }

  private async poll(done: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    // One clock for the steps, the heartbeat and the timeout (sub-millisecond: the spin
    // window is 50 µs).
    const start = performance.now();
    let lastBeat = -1n;
    let lastBeatAt = start;
    for (let i = 0; ; i++) {
      const d = done();
      if (d === true || (d !== false && (await d))) return;
      const now = performance.now();
      // The stub bumps the heartbeat in its idle loop and before every call of a batch.
      // Spin briefly (a hot shadow answers in microseconds), then sleep in short steps:
      // a host core spinning longer steals time from QEMU on a small machine. Between
      // two looks the event loop runs, from the first look on, so the host's own work
      // (the next batch being built, a plugin parsing what an earlier batch returned)
      // overlaps the guest's: a hundred looks in a row kept the batch read ahead behind
      // a listing waiting ~0.6 ms, while the guest ran out of work.
      const step = pollStepMs(now - start);
      if (step > 0) pause(step);
      await yieldToEventLoop();
      if (i % 1024 === 1023) {
        await this.shadow.verify();
        const beat = await this.shadow.readControl('heartbeat');
        if (beat !== lastBeat) {
          lastBeat = beat;
          lastBeatAt = now;
        } else if (now - lastBeatAt > Math.min(timeoutMs, 3000)) {
          throw new ShadowLostError(
            `shadow (pid ${this.shadow.pid}) stopped responding (no heartbeat for ${Math.round(now - lastBeatAt)} ms)`,
          );
        }
      }
      if (now - start > timeoutMs)
        throw new TransportTimeoutError(`shadow did not finish its ${what} within ${timeoutMs} ms`);
    }
  }
}

// Frozen: code loaded into this process (a pack) cannot replace their methods to reach the guest.
Object.freeze(TrapTransport.prototype);
Object.freeze(DoorbellTransport.prototype);
