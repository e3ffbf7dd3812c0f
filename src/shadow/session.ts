import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GdbPhysicalMemory } from '../memory/gdb-physical.js';
import { RamFileMemory, type PhysicalMemory } from '../memory/physical.js';
import { GdbClient } from '../qemu/gdb.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { cpl, decodeX86Regs } from '../qemu/x86-regs.js';
import { isReadOnlyCall } from '../sdk/policy.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';
import {
  decodeResults,
  encodeBatch,
  parseReturnValues,
  resultExtent,
  splitIntoBatches,
} from './batch-codec.js';
import { createShadow, findShadow, SHADOW_IDLE } from './bootstrap.js';
import { GuestDebugger } from './debugger.js';
import { GuestLock } from '../util/guest-lock.js';
import { hex, JournalStore, unhex, type Journal, type ShadowRecord } from './journal.js';
import { ENTRY, LAYOUT, SETUP_FAILED, SHADOW_COMM, SHADOW_STATE } from './layout.js';
import { ShadowHandle, ShadowLostError, ShadowTamperedError } from './shadow.js';
import { WakeLine } from './wake-line.js';
import { findSyscallEntry } from './syscall-entry.js';
import {
  DoorbellTransport,
  TrapTransport,
  type Transport,
  type TransportChoice,
  type TransportName,
} from './transport.js';
import { Victim } from './victim.js';

export interface SessionOptions {
  /** 'auto' = doorbell when the guest's RAM is shared with the host, trap otherwise. */
  transport?: TransportChoice;
  /** Progress lines (stderr in the CLI). */
  onProgress?: (message: string) => void;
  /** Per-batch timeout. */
  batchTimeoutMs?: number;
  /**
   * Keep the shadow alive after detach (a resident shadow) so the next attach skips the
   * bootstrap. An existing resident shadow is always reused when it is still itself.
   */
  keepResident?: boolean;
}

export interface SessionStats {
  /** Milliseconds from attach() start to the shadow being ready. */
  attachMs: number;
  batches: number;
  calls: number;
  /** Milliseconds spent inside run() (encode, ring, decode). */
  runMs: number;
  transport: TransportName;
  shadowPid: number;
  /** The task borrowed to fork the shadow (0 when a resident shadow was reused). */
  victimPid: number;
  /** A crash journal of an earlier vmi was replayed. */
  recovered: boolean;
  /** The shadow was a resident one, reused without a bootstrap. */
  reused: boolean;
  /** Times the shadow was found dead or tampered with and replaced. */
  rebootstraps: number;
  /** Whether the shadow sleeps on a wake-up line (else it naps). */
  wakeLine: boolean;
}

const SYSCALL_ENTRY_FILE = 'syscall-entry.json';

/** A shadow ready for batches, with what it takes to talk to it. */
interface Link {
  shadow: ShadowHandle;
  transport: Transport;
  /** Kept only for the trap transport (or memory through the gdbstub). */
  dbg?: GuestDebugger;
}

/**
 * One attachment to a guest through a shadow process: attach (replaying any crash
 * journal first, or reusing a resident shadow), run batches of syscalls, detach leaving
 * nothing behind (or the resident shadow, when asked). This is the SyscallExecutor that
 * plugins' syscalls end up in. A shadow that dies or is tampered with between batches is
 * detected before anything is written to it, and replaced.
 */
export class RedirectSession implements SyscallExecutor {
  private seq = 0n;
  readonly stats: SessionStats;
  private closed = false;
  private readonly progress: (m: string) => void;
  /** Leave the shadow running at detach: asked for, or it was resident already. */
  private readonly resident: boolean;
  /** The shadow record the journal holds (resident reuse): detach need not rewrite it. */
  private journaled?: string;

  private constructor(
    private readonly guest: GuestEndpoints,
    private readonly lock: GuestLock,
    private readonly journal: JournalStore,
    private readonly mem: PhysicalMemory,
    private link: Link,
    private readonly transportName: TransportName,
    private readonly wake: WakeLine | undefined,
    private readonly opts: SessionOptions,
    private lstar: string | undefined,
    stats: Pick<SessionStats, 'attachMs' | 'victimPid' | 'recovered' | 'reused'> & {
      wasResident: boolean;
      /** The resident shadow's record as the journal already holds it. */
      journaled?: string;
    },
  ) {
    this.journaled = stats.journaled;
    this.progress = opts.onProgress ?? (() => {});
    this.resident = opts.keepResident ?? stats.wasResident;
    this.stats = {
      attachMs: stats.attachMs,
      victimPid: stats.victimPid,
      recovered: stats.recovered,
      reused: stats.reused,
      transport: transportName,
      shadowPid: link.shadow.pid,
      batches: 0,
      calls: 0,
      runMs: 0,
      rebootstraps: 0,
      wakeLine: wake?.usable ?? false,
    };
  }

  static async attach(guest: GuestEndpoints, opts: SessionOptions = {}): Promise<RedirectSession> {
    const t0 = performance.now();
    const progress = opts.onProgress ?? (() => {});
    if (!guest.gdbSocket || !existsSync(guest.gdbSocket)) {
      throw new Error(`guest ${guest.name} has no gdbstub socket (${guest.gdbSocket ?? 'none'})`);
    }
    const want = opts.transport ?? 'auto';
    if (want === 'doorbell' && !guest.ramFile) {
      throw new Error(
        `the doorbell transport needs a shared RAM file; guest ${guest.name} has none (use --transport trap)`,
      );
    }
    const transportName: TransportName = want === 'auto' ? (guest.ramFile ? 'doorbell' : 'trap') : want;

    const lock = new GuestLock(guest.runDir, guest.name);
    lock.acquire();
    const journal = new JournalStore(guest.runDir);
    const wake = guest.wake ? new WakeLine(guest.wake.socket) : undefined;
    let mem: PhysicalMemory | undefined;
    let dbg: GuestDebugger | undefined;
    try {
      progress(`attaching to guest ${guest.name}`);
      if (wake) await wake.open();
      const previous = journal.load();
      const resident = previous?.shadow?.resident && !previous.victim ? previous.shadow : undefined;
      if (guest.ramFile) mem = new RamFileMemory(guest.ramFile, guest.ramSize);
      if (!mem || transportName === 'trap' || !resident) {
        dbg = await connectDebugger(guest.gdbSocket);
        mem ??= new GdbPhysicalMemory(dbg.gdb, guest.ramSize);
      }

      let link: Link | undefined;
      let reused = false;
      let tampered: number | undefined;
      if (resident) {
        const handle = shadowFromRecord(mem, resident);
        try {
          await handle.verify();
          link = { shadow: handle, transport: makeTransport(transportName, handle, dbg, wake), dbg };
          reused = true;
          progress(`reusing the resident shadow (pid ${handle.pid})`);
        } catch (err) {
          if (!(err instanceof ShadowLostError)) throw err;
          progress(`the resident shadow is unusable: ${err.message}; starting a new one`);
          if (err instanceof ShadowTamperedError) tampered = handle.pid;
          journal.save({ lstar: previous?.lstar });
        }
      } else if (previous) {
        dbg ??= await connectDebugger(guest.gdbSocket);
        await recover(dbg, mem, journal, previous, progress);
      }

      let victimPid = 0;
      let lstar = previous?.lstar;
      if (!link) {
        dbg ??= await connectDebugger(guest.gdbSocket);
        // Never borrow the unusable resident shadow as the victim.
        const avoid = resident ? [unhex(resident.cr3)] : [];
        const fresh = await bootstrapShadow(guest, dbg, mem, journal, transportName, wake, progress, avoid);
        link = fresh.link;
        victimPid = fresh.victimPid;
        lstar = fresh.lstar;
        dbg = link.dbg;
      } else if (transportName === 'doorbell' && dbg && guest.ramFile) {
        await dbg.gdb.detach();
        dbg = undefined;
      }
      await hold(link.shadow, wake);
      const session = new RedirectSession(guest, lock, journal, mem, link, transportName, wake, opts, lstar, {
        attachMs: performance.now() - t0,
        victimPid,
        recovered: previous !== undefined && !previous.shadow?.resident,
        reused,
        wasResident: resident !== undefined,
        journaled: reused ? JSON.stringify(resident) : undefined,
      });
      if (tampered !== undefined) await session.retire(tampered);
      return session;
    } catch (err) {
      // Leave the VM running and nothing armed; the journal (if any) stays for next time.
      if (dbg) await dbg.gdb.detach().catch(() => dbg?.gdb.close());
      wake?.close();
      mem?.close();
      lock.release();
      throw err;
    }
  }

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    if (this.closed) throw new Error('the redirection session is closed');
    const t0 = performance.now();
    const results: CallResult[] = [];
    for (const g of splitIntoBatches(calls)) {
      const part = calls.slice(g.start, g.end);
      let out: CallResult[];
      try {
        out = await this.runBatch(part, g.start);
      } catch (err) {
        // A shadow found dead or changed: replace it once and run the batch again, when
        // nothing of the batch reached the guest (found before the write) or when running
        // it twice changes nothing (read-only calls: a SIGKILL can land in mid-batch, and
        // a kill's return does not mean the process is gone yet). Otherwise some calls may
        // have run and others not: report, never guess.
        if (!(err instanceof ShadowLostError)) throw err;
        if (!err.beforeWrite && !part.every(isReadOnlyCall)) {
          throw new ShadowLostError(
            `${err.message} in the middle of a batch that changes the guest; not run again (some of its calls may have run)`,
          );
        }
        this.progress(`${err.message}; starting a new shadow`);
        await this.replaceShadow(err instanceof ShadowTamperedError ? this.link.shadow.pid : undefined);
        out = await this.runBatch(part, g.start);
      }
      results.push(...out);
    }
    this.stats.runMs += performance.now() - t0;
    return results;
  }

  private async runBatch(calls: readonly Call[], indexBase: number): Promise<CallResult[]> {
    const s = this.link.shadow;
    const batch = encodeBatch(calls, s.base, indexBase);
    try {
      await s.verify();
    } catch (err) {
      if (err instanceof ShadowLostError) err.beforeWrite = true;
      throw err;
    }
    await s.write(LAYOUT.entries, batch.entries);
    if (batch.input.length > 0) await s.write(LAYOUT.data, batch.input);
    await s.writeControl('count', BigInt(batch.count));
    this.seq = (await s.readControl('done')) + 1n;
    await this.link.transport.ring(this.seq, this.opts.batchTimeoutMs ?? 30_000);
    await s.verify();
    const rets = parseReturnValues(await s.read(LAYOUT.results, batch.count * 8), batch.count);
    const extent = resultExtent(batch, rets);
    const data =
      extent.end > extent.start
        ? await s.read(LAYOUT.data + extent.start, extent.end - extent.start)
        : Buffer.alloc(0);
    this.stats.batches += 1;
    this.stats.calls += calls.length;
    return decodeResults(batch, rets, data, extent.start);
  }

  /** Bootstraps a new shadow in place of a dead or tampered one. */
  private async replaceShadow(tamperedPid?: number): Promise<void> {
    this.journal.save({ lstar: this.lstar });
    const dbg = this.link.dbg ?? (await connectDebugger(this.guest.gdbSocket!));
    const fresh = await bootstrapShadow(
      this.guest,
      dbg,
      this.mem,
      this.journal,
      this.transportName,
      this.wake,
      this.progress,
      [this.link.shadow.cr3],
    );
    this.link = fresh.link;
    this.journaled = undefined;
    await hold(this.link.shadow, this.wake);
    this.stats.rebootstraps += 1;
    this.stats.shadowPid = fresh.link.shadow.pid;
    if (tamperedPid !== undefined) await this.retire(tamperedPid);
  }

  /**
   * Ends a tampered shadow with SIGKILL from the new one, if /proc still names it
   * vmi-shadow (a pid may have been reused by then). Its code can no longer be trusted to
   * obey the exit command.
   */
  private async retire(pid: number): Promise<void> {
    const comm = new TextEncoder().encode(`/proc/${pid}/comm\0`);
    const [, read] = await this.run([
      {
        nr: 257,
        args: [
          { kind: 'int', value: -100n },
          { kind: 'in', data: comm },
          { kind: 'int', value: 0n },
        ],
      },
      {
        nr: 0,
        args: [
          { kind: 'result', index: 0 },
          { kind: 'out', size: 64, keep: 'ret' },
          { kind: 'int', value: 64n },
        ],
      },
      { nr: 3, args: [{ kind: 'result', index: 0 }] },
    ]);
    if (new TextDecoder().decode(read.out[0]).trim() !== SHADOW_COMM) return;
    await this.run([
      {
        nr: 62,
        args: [
          { kind: 'int', value: BigInt(pid) },
          { kind: 'int', value: 9n },
        ],
      },
    ]);
    this.progress(`killed the tampered shadow (pid ${pid})`);
  }

  /**
   * Ends the session: the shadow exits (or, with keepResident, stays for the next
   * attach) and the guest is left as it was. Safe to call twice.
   */
  async detach(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const { shadow, transport, dbg } = this.link;
    try {
      if (this.resident) {
        await shadow.verify();
        await shadow.writeControl('spin', SHADOW_IDLE.spinCycles);
        // The journal is fsync'ed: rewriting an unchanged record cost ~2 ms per run.
        const record: ShadowRecord = { ...shadowRecord(shadow, this.transportName), resident: true };
        if (JSON.stringify(record) !== this.journaled)
          this.journal.save({ lstar: this.lstar, shadow: record });
      } else {
        try {
          await shadow.verify();
          await transport.dismiss(10_000);
        } catch (err) {
          if (!(err instanceof ShadowLostError)) throw err;
          this.progress(`warning: ${err.message}`);
        }
        this.journal.clear();
      }
    } finally {
      if (dbg) {
        await dbg.removeAllBreakpoints().catch(() => {});
        await dbg.gdb.detach().catch(() => dbg.gdb.close());
      }
      this.wake?.close();
      this.mem.close();
      this.lock.release();
    }
  }
}

/**
 * Keeps the shadow awake while a host is attached (a long spin window: no wake-up between
 * a plugin's batches), and wakes it now if it sleeps, so that its wake-up overlaps the
 * host's own work instead of delaying the first batch. The shadow was verified just before.
 */
async function hold(shadow: ShadowHandle, wake: WakeLine | undefined): Promise<void> {
  await shadow.writeControl('spin', SHADOW_IDLE.attachedSpinCycles);
  if ((await shadow.readControl('state')) === BigInt(SHADOW_STATE.sleeping)) wake?.poke();
}

async function connectDebugger(gdbSocket: string): Promise<GuestDebugger> {
  const gdb = await GdbClient.connect(gdbSocket, { timeoutMs: 5000 });
  // '?' also makes QEMU drop every breakpoint a crashed client left armed.
  await gdb.queryHaltReason();
  // QEMU keeps the memory addressing mode a previous client left: start from virtual.
  await gdb.setPhysicalMemoryMode(false);
  return new GuestDebugger(gdb);
}

function makeTransport(
  name: TransportName,
  shadow: ShadowHandle,
  dbg: GuestDebugger | undefined,
  wake: WakeLine | undefined,
): Transport {
  if (name === 'doorbell') return new DoorbellTransport(shadow, wake);
  if (!dbg) throw new Error('the trap transport needs the gdbstub');
  return new TrapTransport(dbg, shadow, wake);
}

function shadowRecord(shadow: ShadowHandle, transport: TransportName): ShadowRecord {
  return {
    pid: shadow.pid,
    cr3: hex(shadow.cr3),
    cr4: hex(shadow.cr4),
    base: hex(shadow.base),
    marker: hex(shadow.marker),
    transport,
  };
}

function shadowFromRecord(mem: PhysicalMemory, r: ShadowRecord): ShadowHandle {
  return new ShadowHandle(mem, unhex(r.base), unhex(r.cr3), unhex(r.cr4), unhex(r.marker), r.pid);
}

/** Creates a new shadow; for the doorbell transport the gdbstub is let go afterwards. */
async function bootstrapShadow(
  guest: GuestEndpoints,
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  transportName: TransportName,
  wake: WakeLine | undefined,
  progress: (m: string) => void,
  avoidCr3: readonly bigint[] = [],
): Promise<{ link: Link; victimPid: number; lstar: string }> {
  const lstar = await syscallEntry(dbg, mem, guest.runDir, journal.load());
  const { shadow, victimPid } = await createShadow(dbg, mem, journal, {
    lstar,
    catchTimeoutMs: 20_000,
    progress,
    avoidCr3,
    wakeDevice: wake?.usable ? guest.wake?.device : undefined,
  });
  const setup = await shadow.readControl('setup');
  if (setup & BigInt(SETUP_FAILED.wakeLine))
    progress('warning: the shadow could not open its wake-up line; it naps instead');
  progress(`shadow ready (pid ${shadow.pid}), transport ${transportName}`);
  let kept: GuestDebugger | undefined = dbg;
  if (transportName === 'doorbell' && !(mem instanceof GdbPhysicalMemory)) {
    // The VM runs freely from here on: batches go through the RAM file only.
    await dbg.removeAllBreakpoints();
    await dbg.gdb.detach();
    kept = undefined;
  }
  const lstarHex = hex(lstar);
  journal.save({ lstar: lstarHex, shadow: shadowRecord(shadow, transportName) });
  return {
    link: { shadow, transport: makeTransport(transportName, shadow, kept, wake), dbg: kept },
    victimPid,
    lstar: lstarHex,
  };
}

/**
 * Where the guest kernel's syscall entry is: cached per QEMU process in the run
 * directory (it does not change while the guest runs), validated by the code bytes
 * found there, found afresh otherwise.
 */
async function syscallEntry(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  runDir: string,
  journal?: Journal,
): Promise<bigint> {
  const file = join(runDir, SYSCALL_ENTRY_FILE);
  let cached: { lstar: string; bytes: string } | undefined;
  try {
    cached = JSON.parse(readFileSync(file, 'utf8')) as { lstar: string; bytes: string };
  } catch {
    cached = undefined;
  }
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
  writeFileSync(file, JSON.stringify({ lstar: `0x${lstar.toString(16)}`, bytes }), { mode: 0o600 });
  return lstar;
}

/**
 * Replays the journal a dead vmi left: finish and undo whatever it had injected into its
 * victim, and make any shadow it left exit. Called with the VM stopped and no breakpoint
 * armed.
 */
async function recover(
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
      if (scratch) await victim.syscall(11, [scratch, BigInt(LAYOUT.size)]);
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
        shadow = new ShadowHandle(mem, base, unhex(s.cr3), unhex(s.cr4), marker, s.pid);
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
