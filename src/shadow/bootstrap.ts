import { randomBytes } from 'node:crypto';
import { sysno } from '../abi/linux/syscalls.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { cpl } from '../qemu/x86-regs.js';
import { errnoName } from '../abi/linux/errno.js';
import { CatchTimeoutError, catchUserContext, stats as catchStats } from './catch-user.js';
import type { GuestDebugger } from './debugger.js';
import { hex, type JournalStore } from './journal.js';
import { CONTROL, ENTRY, LAYOUT, SHADOW_COMM } from './layout.js';
import { VictimRefusedError } from './root-context.js';
import { ShadowHandle } from './shadow.js';
import { STUB_CODE_HEX } from './stub/stub-code.js';
import { Victim } from './victim.js';

const PR_GET_SECCOMP = 21n;
const PROT_RWX = 7n;
const MAP_SHARED_ANON_POPULATE = 0x01n | 0x20n | 0x8000n;
/**
 * The shadow's idle policy. After a batch (or a wake-up by the line) it spins on the
 * doorbell for `spinCycles` TSC cycles (about 2 ms at 2.6 GHz), so dependent batches
 * answer in microseconds. While a host is attached the window is `attachedSpinCycles`
 * (~20 ms): a plugin's parsing between two batches must not cost a wake-up (~1.3 ms);
 * the host shortens it again when it leaves, and the shadow re-reads it as it spins (a
 * host that dies attached leaves the long window: ~20 ms of spin after the last batch).
 * Then it sleeps: with a wake-up line, in ppoll for up to 1 s (the host's byte ends it at
 * once); without one, in 1 ms naps for IDLE_LOOPS rounds, then in 20 ms naps.
 */
export const SHADOW_IDLE = {
  spinCycles: 5_000_000n,
  attachedSpinCycles: 50_000_000n,
  shortSleepNs: 1_000_000n,
  idleLoops: 1000n,
  lineTimeoutNs: 1_000_000_000n,
  longSleepNs: 20_000_000n,
} as const;

export class BootstrapError extends Error {}

/** A task the bootstrap borrowed and gave back unused, and why. */
export interface Refusal {
  /** Its PID as it sees itself (getpid: in a child PID namespace, the PID there). */
  pid: number;
  reason: string;
}

/** No task could host the shadow: the message lists every refused candidate. */
export class NoVictimError extends BootstrapError {
  constructor(
    message: string,
    readonly refusals: readonly Refusal[],
  ) {
    super(message);
  }
}

/** How many tasks one bootstrap borrows at most before it gives up. */
export const MAX_CANDIDATES = 8;
/** How long a preferred victim is waited for before any other root task will do. */
export const PREFER_WINDOW_MS = 5000;

export interface BootstrapOptions {
  lstar: bigint;
  /** Guest device node of the wake-up line (e.g. /dev/ttyS1), when the guest has one. */
  wakeDevice?: string;
  catchTimeoutMs: number;
  progress: (message: string) => void;
  /** The tasks refused so far in this attach and the address spaces never to borrow. */
  candidates: Candidates;
  /** Borrow this task first (its getpid(): the PID in its own PID namespace). */
  preferPid?: number;
}

/** The preferred victim was caught and refused: stop waiting for it. */
class PreferredRefused extends Error {}

/**
 * The tasks one bootstrap borrowed and gave back, with why, and the address spaces it
 * must not borrow (a shadow being replaced, every refused task). One instance serves the
 * checks at catch time, the mmap and fork, and the context check of the new shadow.
 */
export class Candidates {
  readonly refusals: Refusal[] = [];
  readonly avoid: bigint[];

  constructor(
    avoidCr3: readonly bigint[],
    private readonly progress: (message: string) => void,
  ) {
    this.avoid = [...avoidCr3];
  }

  /** Records a refused task; throws NoVictimError once MAX_CANDIDATES were refused. */
  refuse(pid: number | bigint, cr3: bigint, reason: string): void {
    this.progress(`pid ${pid} refused: ${reason}; trying another task`);
    this.refusals.push({ pid: Number(pid), reason });
    this.avoid.push(cr3);
    if (this.refusals.length >= MAX_CANDIDATES) throw this.exhausted(`${this.refusals.length} refused`);
  }

  /** The one-line error naming every refused task. */
  exhausted(why: string): NoVictimError {
    const named = this.refusals.map((r) => `pid ${r.pid}: ${r.reason}`).join('; ');
    return new NoVictimError(`no guest task could host the shadow (${why}): ${named}`, this.refusals);
  }
}

/**
 * Creates the shadow process (ShadowContext's "shadow"): borrow a root user task (the
 * victim) for a few injected syscalls, give it a shared scratch mapping holding the stub,
 * let the stub fork the shadow off it, and put the victim back exactly as it was. Every
 * step is journaled before it changes the guest. A victim that refuses a step (a seccomp
 * filter, a refused mmap or fork) is restored untouched and another task is borrowed, up
 * to MAX_CANDIDATES within catchTimeoutMs. The VM is stopped on return.
 */
export async function createShadow(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  opts: BootstrapOptions,
): Promise<{ shadow: ShadowHandle; victimPid: number; victimCr3: bigint }> {
  const candidates = opts.candidates;
  const deadline = Date.now() + opts.catchTimeoutMs;
  let prefer = opts.preferPid;
  for (;;) {
    const left = deadline - Date.now();
    let caught: { victim: Victim; pid: bigint } | undefined;
    try {
      caught = await catchVictim(dbg, journal, opts, prefer, left);
    } catch (err) {
      if (err instanceof PreferredRefused) {
        prefer = undefined; // it was caught and refused: no need to wait out its window
        continue;
      }
      if (!(err instanceof CatchTimeoutError)) throw err;
      if (prefer !== undefined && left > PREFER_WINDOW_MS) {
        opts.progress(`pid ${prefer} made no syscall within ${PREFER_WINDOW_MS} ms; borrowing another task`);
        prefer = undefined;
        continue;
      }
      if (candidates.refusals.length > 0)
        throw candidates.exhausted('no other root task made a syscall in time');
      throw new NoVictimError(err.message, candidates.refusals);
    }
    prefer = undefined;
    try {
      const shadow = await borrow(dbg, mem, journal, opts, caught.victim, caught.pid);
      return { shadow, victimPid: Number(caught.pid), victimCr3: caught.victim.cr3 };
    } catch (err) {
      if (!(err instanceof VictimRefusedError)) throw err;
      candidates.refuse(caught.pid, caught.victim.cr3, err.reason);
    }
  }
}

/**
 * Catches a root task (not init) at CPL 3 and checks it with syscalls that change
 * nothing: getuid, getpid, prctl(PR_GET_SECCOMP). A seccomp-filtered task is refused
 * before anything else is injected (its filter could refuse or kill on later calls).
 */
async function catchVictim(
  dbg: GuestDebugger,
  journal: JournalStore,
  opts: BootstrapOptions,
  prefer: number | undefined,
  timeoutMs: number,
): Promise<{ victim: Victim; pid: bigint }> {
  const marker = randomBytes(8).readBigUInt64LE(0) | 1n;
  const lstar = hex(opts.lstar);
  opts.progress(
    prefer === undefined ? 'waiting for a root task to return to user mode' : `waiting for pid ${prefer}`,
  );
  // The accepted Victim is kept: its injected getuid/getpid may have moved the task to
  // another vCPU, and only that object knows where it is now.
  let accepted: { victim: Victim; pid: bigint } | undefined;
  const wait = prefer === undefined ? timeoutMs : Math.min(timeoutMs, PREFER_WINDOW_MS);
  await catchUserContext(dbg, opts.lstar, wait, async (c) => {
    if (opts.candidates.avoid.includes(c.regs.cr3)) return false;
    const v = new Victim(dbg, c.thread, c.regs, marker);
    journal.save({ lstar, victim: victimRecord(v) });
    try {
      const uid = await v.syscall(sysno('getuid'));
      const pid = await v.syscall(sysno('getpid'));
      // Root for /proc access; never init, whose death would panic the guest.
      if (uid !== 0n || pid <= 1n || (prefer !== undefined && pid !== BigInt(prefer))) return false;
      const seccomp = await v.syscall(sysno('prctl'), [PR_GET_SECCOMP]);
      if (seccomp !== 0n) {
        const reason =
          seccomp < 0n ? `prctl(PR_GET_SECCOMP) failed (errno ${-seccomp})` : `seccomp mode ${seccomp}`;
        opts.candidates.refuse(pid, c.regs.cr3, reason);
        if (prefer !== undefined) throw new PreferredRefused();
        return false;
      }
      accepted = { victim: v, pid };
      return true;
    } finally {
      await v.restore();
      if (!accepted) journal.save({ lstar });
    }
  });
  return accepted!;
}

/** The scratch mapping, the stub, the fork: from a caught victim to a running shadow. */
async function borrow(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  opts: BootstrapOptions,
  victim: Victim,
  victimPid: bigint,
): Promise<ShadowHandle> {
  const lstar = hex(opts.lstar);
  const marker = victim.marker;
  await victim.arm();
  opts.progress(
    `borrowing pid ${victimPid} to start the shadow (${catchStats.entryStops} entry stops, ${catchStats.returnStops} return stops, ${catchStats.refused} refused)`,
  );
  journal.save({ lstar, victim: { ...victimRecord(victim), pendingMmap: true } });
  const scratchRet = await victim.syscall(sysno('mmap'), [
    0n,
    BigInt(LAYOUT.size),
    PROT_RWX,
    MAP_SHARED_ANON_POPULATE,
    BigInt.asUintN(64, -1n),
    0n,
  ]);
  if (scratchRet < 0n) {
    await victim.restore();
    await dbg.removeAllBreakpoints();
    dbg.forgetLastStop();
    journal.save({ lstar });
    throw new VictimRefusedError(`mmap of the scratch region refused (${errnoName(Number(-scratchRet))})`);
  }
  const base = scratchRet;
  const shadowRecord = {
    pid: 0,
    cr3: '0x0',
    cr4: '0x0',
    base: hex(base),
    marker: hex(marker),
    transport: 'trap' as const,
  };
  journal.save({ lstar, victim: { ...victimRecord(victim), scratch: hex(base) }, shadow: shadowRecord });

  // Code goes in through the gdbstub (virtual, in the victim's address space) before it
  // ever runs, so TCG never holds a stale translation of it.
  const code = Buffer.from(STUB_CODE_HEX, 'hex');
  await dbg.writeVirtual(victim.thread, base, code);
  await dbg.writeVirtual(victim.thread, base + BigInt(LAYOUT.control), controlPage(marker, opts.wakeDevice));
  if (!(await dbg.readVirtual(victim.thread, base, code.length)).equals(code)) {
    throw new BootstrapError('the stub read back differently from what was written');
  }

  opts.progress('forking the shadow');
  await victim.runCode(
    base + BigInt(ENTRY.bootstrap),
    base + BigInt(LAYOUT.victimStackTop),
    base + BigInt(ENTRY.bootstrapDone),
  );
  const bootResult = BigInt.asIntN(
    64,
    (
      await dbg.readVirtual(victim.thread, base + BigInt(LAYOUT.control + CONTROL.bootResult), 8)
    ).readBigUInt64LE(0),
  );
  const unmapped = await victim.syscall(sysno('munmap'), [base, BigInt(LAYOUT.size)]);
  await victim.restore();
  await dbg.removeAllBreakpoints();
  dbg.forgetLastStop();
  journal.save({ lstar, shadow: shadowRecord });
  if (unmapped !== 0n)
    opts.progress(`warning: munmap of the scratch region in pid ${victimPid} returned ${unmapped}`);
  if (bootResult < 0n) {
    journal.save({ lstar });
    // e.g. EAGAIN from a cgroup whose pids.max is reached: the victim cannot fork at all.
    throw new VictimRefusedError(`clone refused (${errnoName(Number(-bootResult))})`);
  }

  const shadow = await findShadow(dbg, mem, base, marker, victim.cr3, 5000);
  journal.save({
    lstar,
    shadow: { ...shadowRecord, pid: shadow.pid, cr3: hex(shadow.cr3), cr4: hex(shadow.cr4) },
  });
  return shadow;
}

function victimRecord(v: Victim) {
  return {
    thread: v.thread,
    cr3: hex(v.saved.cr3),
    rsp: hex(v.saved.rsp),
    gadget: hex(v.gadget),
    savedRegs: v.saved.raw.toString('hex'),
    marker: hex(v.marker),
  };
}

function writeTimespec(buf: Buffer, offset: number, ns: bigint): void {
  buf.writeBigUInt64LE(ns / 1_000_000_000n, offset);
  buf.writeBigUInt64LE(ns % 1_000_000_000n, offset + 8);
}

/** The control page as the host initialises it before the stub first runs. */
function controlPage(marker: bigint, wakeDevice?: string): Buffer {
  const ctl = Buffer.alloc(0x200);
  ctl.writeBigUInt64LE(marker, CONTROL.marker);
  ctl.writeBigUInt64LE(BigInt(LAYOUT.size), CONTROL.size);
  writeTimespec(ctl, CONTROL.timespec, SHADOW_IDLE.shortSleepNs);
  writeTimespec(ctl, CONTROL.idleTs, wakeDevice ? SHADOW_IDLE.lineTimeoutNs : SHADOW_IDLE.longSleepNs);
  ctl.writeBigUInt64LE(SHADOW_IDLE.spinCycles, CONTROL.spin);
  ctl.writeBigUInt64LE(SHADOW_IDLE.idleLoops, CONTROL.idleLoops);
  if (wakeDevice) {
    if (Buffer.byteLength(wakeDevice) > 63)
      throw new BootstrapError(`wake device path too long: ${wakeDevice}`);
    ctl.write(wakeDevice, CONTROL.wakePath, 'latin1');
  }
  ctl.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, CONTROL.sigset);
  ctl.write(SHADOW_COMM, CONTROL.name, 'latin1');
  ctl.write('/', CONTROL.root, 'latin1');
  return ctl;
}

/**
 * Waits for the new shadow at the top of its loop (its rbx holds the scratch base) and
 * learns its address space. The victim has unmapped the scratch region by then, so a
 * task with another CR3 carrying the marker there can only be the shadow.
 */
export async function findShadow(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  base: bigint,
  marker: bigint,
  notCr3: bigint,
  timeoutMs: number,
): Promise<ShadowHandle> {
  const at = base + BigInt(ENTRY.shadowLoop);
  await dbg.addBreakpoint(at);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new BootstrapError(`the shadow did not reach its loop within ${timeoutMs} ms`);
      const { regs } = await dbg.run(left);
      if (regs.rip !== at || cpl(regs) !== 3 || regs.rbx !== base || regs.cr3 === notCr3) continue;
      const probe = new ShadowHandle(mem, base, regs.cr3, regs.cr4, marker, 0);
      // An older shadow whose region sits at the same address (one being replaced, still
      // spinning) stops here too: only the new one carries this marker.
      if ((await probe.readControl('marker').catch(() => undefined)) !== marker) continue;
      const pid = Number(await probe.readControl('pid'));
      const shadow = new ShadowHandle(mem, base, regs.cr3, regs.cr4, marker, pid);
      await shadow.verify();
      return shadow;
    }
  } finally {
    await dbg.removeBreakpoint(at);
  }
}
