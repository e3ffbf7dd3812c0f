/**
 * A session of the shadow engine: attach (replaying a crash journal, reusing a resident
 * shadow, or bootstrapping a new one), run batches, detach. Its parts live beside it:
 * link.ts (gdbstub, bootstrap, transport), recovery.ts (the crash journal),
 * syscall-entry.ts (the syscall-entry cache), shadow.ts (the handle and its journal record).
 */
import { existsSync } from 'node:fs';
import { AT_FDCWD, O_RDONLY, SIGKILL } from '../abi/linux/flags.js';
import { sysno } from '../abi/linux/syscalls.js';
import {
  gdbMemory,
  hasHostRam,
  learnGuestRam,
  openHostRam,
  type GuestRam,
  type HostRamKind,
} from '../memory/guest-ram.js';
import { ProcessMemoryError } from '../memory/process-memory.js';
import type { PhysicalMemory } from '../memory/physical.js';
import type { HypervisorView } from '../sdk/hypervisor.js';
import { HostKernelView } from './kernel-view.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { isReadOnlyCall } from '../sdk/policy.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';
import { GuestLock } from '../util/guest-lock.js';
import type { Flight } from './batch-pipe.js';
import { splitIntoBatches } from './batch-codec.js';
import { SHADOW_IDLE, type Refusal } from './bootstrap.js';
import type { GuestDebugger } from './debugger.js';
import { JournalStore, unhex, type ShadowRecord } from './journal.js';
import { SHADOW_COMM } from './layout.js';
import {
  bootstrapShadow,
  connectDebugger,
  hold,
  linkExecutor,
  makeTransport,
  newLink,
  DEFAULT_BATCH_TIMEOUT_MS,
  releaseDebugger,
  runOnLink,
  type Link,
} from './link.js';
import { contextRecheck, readShadowContext, type ShadowContext } from './root-context.js';
import { recoverJournal } from './recovery.js';
import { ShadowHandle, ShadowLostError, ShadowTamperedError } from './shadow.js';
import { DoorbellTransport, type TransportChoice, type TransportName } from './transport.js';
import { WakeLine } from './wake-line.js';

export interface SessionOptions {
  /**
   * 'auto' = doorbell when the host reaches the guest's RAM directly (a shared RAM file, or
   * QEMU's process memory), trap otherwise (also when QEMU's memory is refused at open).
   */
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
  /**
   * Keep the shadow spinning on the doorbell for the whole attach (SHADOW_IDLE's attached
   * window: no wake-up between a plugin's batches, but the shadow burns guest CPU while the
   * host parses). false: only the short window after each batch, then it sleeps and the
   * next batch wakes it through the line (~1 ms more per batch, far less guest CPU; what
   * `vmi watch` wants). Default true.
   */
  holdAwake?: boolean;
  /** Borrow this task first when a shadow is created (its PID in its own PID namespace). */
  preferVictimPid?: number;
  /**
   * Run plugins even when the shadow's context cannot be verified as the guest's root
   * context (the problems are recorded in stats.context). Off by default: no table then.
   */
  acceptPartialContext?: boolean;
  /**
   * While another vmi holds the guest: wait this long for its turn (ms; 0 refuses at once;
   * default DEFAULT_LOCK_WAIT_MS), saying once through onWait (default onProgress) who holds it.
   */
  lockWaitMs?: number;
  onWait?: (message: string) => void;
  /** Stops a wait for the guest. */
  signal?: AbortSignal;
  /**
   * Kept by a caller that attaches again and again (an API Guest, `vmi watch`, a vmi
   * server): what its last attach verified, read and updated by each attach and detach.
   * See AttachMemo.
   */
  reuse?: AttachMemo;
}

/**
 * What one attach leaves for the next attach of the same caller, so that the next one
 * skips re-establishing it when no other vmi has held the guest since (the generation of
 * the guest lock is then the one this caller wrote: src/util/guest-lock.ts).
 *
 * Skipped then: learning the RAM map again (QMP query-memory-devices + mtree, host side;
 * the map belongs to the QEMU process, which another vmi cannot change either) and the
 * full verify of the shadow's root context (69 calls in the guest), replaced by
 * contextRecheck (what a guest process can change from outside the shadow), which rides
 * at the end of the call's first read-only batch instead of costing a guest entry.
 * Kept, because the guest can act between two calls whatever vmi does:
 * - the journal read (cheap; it names the resident shadow: the memo applies only to that
 *   same record, byte for byte);
 * - the shadow's verify before and after every batch (host reads of its control page
 *   and code through its page tables: a shadow the guest killed, replaced or patched is
 *   found before anything is written to it, then replaced as before);
 * - contextRecheck (a changed cgroup, rlimit, nice, policy, affinity, or a /proc mounted
 *   over in its mount namespace: the shadow is retired and replaced, and the batch that
 *   carried the check runs again in the new one — it was read-only).
 * The skip relies on: every vmi counting itself in the lock's generation when it takes
 * the guest (a vmi from before this change would not; it is the same release here), and
 * on the guest not being able to write the host's run directory.
 */
export interface AttachMemo {
  /** The lock generation this caller wrote at its last attach that detached cleanly. */
  generation?: string;
  /** The guest's RAM map then. */
  ram?: GuestRam;
  /** The resident shadow's record (JSON) as its detach left it in the journal. */
  shadow?: string;
  /** Its context as fully verified. */
  context?: ShadowContext;
}

export interface SessionStats {
  /** Milliseconds from attach() start to the shadow being ready. */
  attachMs: number;
  batches: number;
  calls: number;
  /** Milliseconds spent inside run() (encode, ring, decode). */
  runMs: number;
  transport: TransportName;
  /** Where the host reads guest RAM: a shared file, QEMU's process memory, or the gdbstub. */
  memory: MemoryKind;
  /** Why the doorbell was not used although asked for by 'auto' (one line), if it was refused. */
  fallback?: string;
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
  /** The shadow's context as verified inside the guest (namespaces, seccomp, caps, cgroup, LSM). */
  context?: ShadowContext;
  /** Tasks borrowed and given back unused while creating the shadow, with the reason. */
  refusals: Refusal[];
  /** Milliseconds spent establishing and verifying the context (or re-verifying a resident one). */
  contextMs: number;
  /**
   * How the shadow's context was checked at this attach: 'fresh' (established and verified
   * by a bootstrap), 'full' (a resident shadow re-verified whole), 'quick' (one this caller
   * verified and no other vmi held since: contextRecheck, with the first batch).
   */
  contextCheck: 'fresh' | 'full' | 'quick';
}

/** Where a session reads guest RAM from. */
export type MemoryKind = HostRamKind | 'gdbstub';

/** What attach() hands the session it built. */
interface SessionParts extends Pick<
  SessionStats,
  | 'attachMs'
  | 'victimPid'
  | 'recovered'
  | 'reused'
  | 'context'
  | 'refusals'
  | 'contextMs'
  | 'memory'
  | 'fallback'
  | 'contextCheck'
> {
  guest: GuestEndpoints;
  lock: GuestLock;
  journal: JournalStore;
  mem: PhysicalMemory;
  link: Link;
  transportName: TransportName;
  wake: WakeLine | undefined;
  opts: SessionOptions;
  /** LSTAR as the journal holds it. */
  lstar: string | undefined;
  /** An existing resident shadow was found (it stays resident unless told otherwise). */
  wasResident: boolean;
  /** The resident shadow's record as the journal already holds it. */
  journaled?: string;
}

/** The quick context re-check still to run with the session's first batch. */
interface PendingRecheck {
  verified: ShadowContext;
}

/**
 * One attachment to a guest through a shadow process: attach (replaying any crash
 * journal first, or reusing a resident shadow), run batches of syscalls, detach leaving
 * nothing behind (or the resident shadow, when asked). This is the SyscallExecutor that
 * plugins' syscalls end up in. A shadow that dies or is tampered with between batches is
 * detected before anything is written to it, and replaced.
 */
export class RedirectSession implements SyscallExecutor {
  readonly stats: SessionStats;
  private closed = false;
  private readonly progress: (m: string) => void;
  /** Leave the shadow running at detach: asked for, or it was resident already. */
  private readonly resident: boolean;
  /** The shadow record the journal holds (resident reuse): detach need not rewrite it. */
  private journaled?: string;

  private readonly guest: GuestEndpoints;
  private readonly lock: GuestLock;
  private readonly journal: JournalStore;
  private readonly mem: PhysicalMemory;
  private link: Link;
  private readonly transportName: TransportName;
  private readonly wake: WakeLine | undefined;
  private readonly opts: SessionOptions;
  private readonly lstar: string | undefined;
  private readonly memo: AttachMemo | undefined;
  private recheck: PendingRecheck | undefined;

  private constructor(parts: SessionParts) {
    ({
      guest: this.guest,
      lock: this.lock,
      journal: this.journal,
      mem: this.mem,
      link: this.link,
      transportName: this.transportName,
      wake: this.wake,
      opts: this.opts,
      lstar: this.lstar,
      journaled: this.journaled,
    } = parts);
    this.memo = parts.opts.reuse;
    if (parts.contextCheck === 'quick' && parts.context) this.recheck = { verified: parts.context };
    this.progress = parts.opts.onProgress ?? (() => {});
    this.resident = parts.opts.keepResident ?? parts.wasResident;
    this.stats = {
      attachMs: parts.attachMs,
      victimPid: parts.victimPid,
      recovered: parts.recovered,
      reused: parts.reused,
      transport: parts.transportName,
      memory: parts.memory,
      ...(parts.fallback ? { fallback: parts.fallback } : {}),
      shadowPid: parts.link.shadow.pid,
      batches: 0,
      calls: 0,
      runMs: 0,
      rebootstraps: 0,
      wakeLine: parts.wake?.usable ?? false,
      context: parts.context,
      refusals: parts.refusals,
      contextMs: parts.contextMs,
      contextCheck: parts.contextCheck,
    };
  }

  static async attach(guest: GuestEndpoints, opts: SessionOptions = {}): Promise<RedirectSession> {
    const t0 = performance.now();
    const progress = opts.onProgress ?? (() => {});
    if (!guest.gdbSocket || !existsSync(guest.gdbSocket)) {
      // A lab guest stopped (vmi lab down) since it was opened takes its sockets with it.
      throw new Error(
        guest.gdbSocket
          ? `guest ${guest.name} is not running any more: its gdbstub socket ${guest.gdbSocket} is gone (stopped with vmi lab down?)`
          : `guest ${guest.name} has no gdbstub socket`,
      );
    }
    const want = opts.transport ?? 'auto';
    if (want === 'doorbell' && !hasHostRam(guest)) {
      throw new Error(
        `the doorbell transport needs a shared RAM file or access to QEMU's memory; guest ${guest.name} has neither` +
          `${guest.qemuRamRefused ? ` (${guest.qemuRamRefused})` : ''} (use --transport trap)`,
      );
    }
    let transportName: TransportName = want === 'auto' ? (hasHostRam(guest) ? 'doorbell' : 'trap') : want;
    let fallback = want === 'auto' ? guest.qemuRamRefused : undefined;
    let memory: MemoryKind = 'gdbstub';

    const lock = new GuestLock(guest.runDir, guest.name);
    await lock.acquire({
      ...(opts.lockWaitMs !== undefined ? { waitMs: opts.lockWaitMs } : {}),
      onWait: opts.onWait ?? progress,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    // No other vmi held the guest since this caller's last detach (AttachMemo).
    const memo = opts.reuse;
    const quiet = memo?.generation !== undefined && lock.generationBefore === memo.generation;
    if (memo) {
      // Valid again only once this attach detaches cleanly.
      if (!quiet) memo.ram = memo.shadow = memo.context = undefined;
      memo.generation = undefined;
    }
    const journal = new JournalStore(guest.runDir);
    const wake = guest.wake ? new WakeLine(guest.wake.socket) : undefined;
    let mem: PhysicalMemory | undefined;
    let dbg: GuestDebugger | undefined;
    try {
      progress(`attaching to guest ${guest.name}`);
      const previous = journal.load();
      const resident = previous?.shadow?.resident && !previous.victim ? previous.shadow : undefined;
      // The line connects while the attach goes on (a new shadow's bootstrap waits for it;
      // a shadow that sleeps between batches is poked at every batch). A resident shadow
      // kept awake is usually still spinning from the last run: its line connects at the
      // first poke, if one is needed (WakeLine.poke).
      if (!resident || opts.holdAwake === false) wake?.begin();
      // Where RAM is (q35 splits it at 2 GiB, pc at 3 GiB once it is big enough).
      const ram = quiet && memo?.ram ? memo.ram : await learnGuestRam(guest);
      if (memo) memo.ram = ram;
      try {
        const host = openHostRam(guest, ram);
        mem = host?.mem;
        if (host) memory = host.kind;
      } catch (err) {
        // QEMU's memory was proven at attach but cannot be opened now (ptrace rights, QEMU
        // gone): 'auto' falls back to the trap transport and says so.
        if (!(err instanceof ProcessMemoryError) || want !== 'auto') throw err;
        fallback = err.message;
        transportName = 'trap';
      }
      if (fallback && transportName === 'trap')
        progress(`QEMU's memory is not usable: ${fallback}; using the trap transport`);
      if (!mem || transportName === 'trap' || !resident) {
        dbg = await connectDebugger(guest.gdbSocket);
        mem ??= gdbMemory(dbg.gdb, ram);
      }

      let link: Link | undefined;
      let context: ShadowContext | undefined;
      let contextMs = 0;
      const refusals: Refusal[] = [];
      let reused = false;
      let tampered: number | undefined;
      let contextCheck: SessionStats['contextCheck'] = 'fresh';
      if (resident) {
        const handle = ShadowHandle.fromRecord(mem, resident);
        try {
          await handle.verify();
          const candidate = newLink(handle, makeTransport(transportName, handle, dbg, wake), dbg);
          // Its context was verified when it was made; check it again (a guest root user
          // can still enter its namespaces) — whole, unless this caller verified this very
          // shadow and no other vmi held the guest since: then the part a guest process
          // can change rides with the first batch (AttachMemo).
          if (quiet && memo?.context && memo.shadow === JSON.stringify(resident)) {
            context = memo.context;
            contextCheck = 'quick';
          } else {
            const tc = performance.now();
            context = await readShadowContext(linkExecutor(candidate, opts.batchTimeoutMs));
            contextMs = performance.now() - tc;
            contextCheck = 'full';
          }
          if (!context.complete && !opts.acceptPartialContext)
            throw new ShadowTamperedError(
              `the resident shadow's context changed: ${context.problems.join('; ')}`,
            );
          link = candidate;
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
        await recoverJournal(dbg, mem, journal, previous, progress);
      }

      let victimPid = 0;
      let lstar = previous?.lstar;
      if (!link) {
        dbg ??= await connectDebugger(guest.gdbSocket);
        // Never borrow the unusable resident shadow as the victim.
        const avoid = resident ? [unhex(resident.cr3)] : [];
        const fresh = await bootstrapShadow(
          guest,
          dbg,
          mem,
          journal,
          transportName,
          wake,
          progress,
          opts,
          avoid,
        );
        link = fresh.link;
        victimPid = fresh.victimPid;
        lstar = fresh.lstar;
        dbg = link.dbg;
        context = fresh.context;
        contextMs = fresh.contextMs;
        refusals.push(...fresh.refusals);
      } else if (transportName === 'doorbell' && dbg && memory !== 'gdbstub') {
        await dbg.gdb.detach();
        dbg = undefined;
      }
      if (opts.holdAwake !== false) await hold(link.shadow, wake);
      else await sleepBetweenBatches(link);
      const session = new RedirectSession({
        guest,
        lock,
        journal,
        mem,
        link,
        transportName,
        memory,
        fallback,
        wake,
        opts,
        lstar,
        attachMs: performance.now() - t0,
        victimPid,
        recovered: previous !== undefined && !previous.shadow?.resident,
        reused,
        wasResident: resident !== undefined,
        context,
        refusals,
        contextMs,
        contextCheck: reused ? contextCheck : 'fresh',
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

  /** The hypervisor's view of the guest kernel (host-side page walks of guest RAM). */
  hypervisor(): HypervisorView {
    return new HostKernelView(
      this.mem,
      this.link.shadow.cr3,
      this.link.shadow.cr4,
      this.stats.memory,
      this.guest.qmpSocket,
    );
  }

  /**
   * Runs `calls` in the shadow, as batches, and returns one result per call. Runs are
   * written to the shadow in the order they were asked for, one at a time (two runs
   * interleaved on it would overwrite each other's batches: seen as empty results on a real
   * guest when a plugin awaited two SDK reads at once). A run of one batch lets the next run
   * in once its batch is rung, where the transport chains (BatchPipe): the next batch is
   * then written and rung while this one runs, and the guest goes from one to the other
   * without waiting for the host.
   */
  run(calls: readonly Call[]): Promise<CallResult[]> {
    return this.inTurn((letNextIn) => this.runNow(calls, letNextIn));
  }

  /**
   * Runs `fn` when the runs before it have let it in (they ended, or their batch was
   * rung); the run after it gets in when `fn` calls letNextIn or ends.
   */
  private inTurn<T>(fn: (letNextIn: () => void) => Promise<T>): Promise<T> {
    let next!: () => void;
    const before = this.turn;
    // Settles to nothing: the queue must not keep the last batch's results alive.
    this.turn = new Promise<void>((resolve) => (next = () => resolve()));
    const mine = before.then(() => fn(next));
    mine.then(next, next);
    return mine;
  }

  /** Resolves when the last run asked for so far has let the next one in. */
  private turn: Promise<void> = Promise.resolve();

  private async runNow(calls: readonly Call[], letNextIn: () => void): Promise<CallResult[]> {
    if (this.closed) throw new Error('the redirection session is closed');
    // stats.runMs is wall time with at least one run under way (chained runs overlap).
    if (this.running++ === 0) this.runningSince = performance.now();
    try {
      return await this.runGroups(calls, letNextIn);
    } finally {
      if (--this.running === 0) this.stats.runMs += performance.now() - this.runningSince;
    }
  }

  private running = 0;
  private runningSince = 0;

  private async runGroups(calls: readonly Call[], letNextIn: () => void): Promise<CallResult[]> {
    const groups = splitIntoBatches(calls);
    if (groups.length === 1 && this.link.pipe.chains) {
      if (!this.recheck) return this.runChained(calls, letNextIn);
      // The quick re-check rides at the end of a read-only batch that still fits whole.
      const ride = calls.every(isReadOnlyCall)
        ? contextRecheck(this.recheck.verified, calls.length)
        : undefined;
      if (ride && splitIntoBatches([...calls, ...ride.calls]).length === 1)
        return this.runChained(calls, letNextIn, ride);
    }
    const results: CallResult[] = [];
    for (const g of groups) {
      const part = calls.slice(g.start, g.end);
      let out: CallResult[];
      try {
        out = this.recheck ? await this.runWithRecheck(part, g.start) : await this.runBatch(part, g.start);
      } catch (err) {
        out = await this.recover(err, part, g.start, this.link);
      }
      results.push(...out);
    }
    return results;
  }

  /**
   * One batch, written and rung in this run's turn; the next run is let in before this
   * one's end is waited for. A failure found after that is recovered in a turn of its own,
   * after the runs let in meanwhile (whose batches went to the same shadow).
   *
   * With `ride`, the quick re-check of the shadow's context rides at the end of the batch;
   * until its outcome is known (the `verdict`), runs let in behind it may only read: they
   * return their results once it held, and are run again on a new shadow if it did not
   * (they ran in the same suspect context). A run that changes the guest waits for it.
   */
  private async runChained(
    calls: readonly Call[],
    letNextIn: () => void,
    ride?: ReturnType<typeof contextRecheck>,
  ): Promise<CallResult[]> {
    const readOnly = ride !== undefined || calls.every(isReadOnlyCall);
    if (this.verdict && !readOnly) await this.verdict.catch(() => undefined);
    const ahead = this.verdict;
    const link = this.link;
    let flight: Flight;
    try {
      flight = await link.pipe.submit(ride ? [...calls, ...ride.calls] : calls, 0);
    } catch (err) {
      return this.recover(err, calls, 0, link);
    }
    let verdict: { held: () => void; failed: (err: unknown) => void } | undefined;
    if (ride) {
      // Consumed only once its batch is in the guest (a batch refused before that keeps it).
      this.recheck = undefined;
      const outcome = new Promise<void>((held, failed) => (verdict = { held, failed }));
      const clear = (): void => {
        if (this.verdict === outcome) this.verdict = undefined;
      };
      outcome.then(clear, clear);
      this.verdict = outcome;
    }
    letNextIn();
    let out: CallResult[];
    try {
      out = await link.pipe.complete(flight, this.opts.batchTimeoutMs ?? DEFAULT_BATCH_TIMEOUT_MS);
      if (ride) {
        const problems = ride.problems(out);
        out = out.slice(0, calls.length);
        this.judgeRecheck(problems, false);
        verdict!.held();
      }
    } catch (err) {
      verdict?.failed(err);
      return this.inTurn(() => this.recover(err, calls, 0, link));
    }
    // The re-check ahead found the context changed, or lost the shadow: this batch ran in
    // the same shadow, so it is run again like a batch whose shadow was lost.
    const failed = ahead
      ? await ahead.then(
          () => undefined,
          (err: unknown) => err,
        )
      : undefined;
    if (failed instanceof ShadowLostError) {
      const err = new ShadowLostError(`a batch ahead of this one failed: ${failed.message}`);
      return this.inTurn(() => this.recover(err, calls, 0, link));
    }
    this.stats.batches += 1;
    this.stats.calls += calls.length;
    return out;
  }

  /** The outcome of a quick re-check whose batch is still in flight (runChained). */
  private verdict?: Promise<void>;

  /**
   * A shadow found dead or changed: replace it once and run the batch again, when nothing
   * of the batch reached the guest (found before the write) or when running it twice
   * changes nothing (read-only calls: a SIGKILL can land in mid-batch, and a kill's return
   * does not mean the process is gone yet). Otherwise some calls may have run and others
   * not: report, never guess. `link` is the one the batch went to: when an earlier
   * recovery replaced it already, the batch only runs again.
   */
  private async recover(
    err: unknown,
    part: readonly Call[],
    indexBase: number,
    link: Link,
  ): Promise<CallResult[]> {
    if (!(err instanceof ShadowLostError)) throw err;
    if (!err.beforeWrite && !part.every(isReadOnlyCall)) {
      throw new ShadowLostError(
        `${err.message} in the middle of a batch that changes the guest; not run again (some of its calls may have run)`,
      );
    }
    if (this.link === link) {
      this.progress(`${err.message}; starting a new shadow`);
      await this.replaceShadow(err instanceof ShadowTamperedError ? link.shadow.pid : undefined);
    }
    return this.runBatch(part, indexBase);
  }

  /**
   * The first batch of a session whose context is re-checked quickly (AttachMemo): the
   * re-check's calls ride at the end of the batch when it is read-only and the whole still
   * fits one batch, else they run alone first. Problems found: ShadowTamperedError (the
   * caller replaces the shadow and runs the batch again; nothing of it changed the guest),
   * unless partial contexts are accepted (then they are recorded in stats.context).
   */
  private async runWithRecheck(part: readonly Call[], indexBase: number): Promise<CallResult[]> {
    const { verified } = this.recheck!;
    this.recheck = undefined;
    const local = part.map((c) => ({
      ...c,
      args: c.args.map((a) => (a.kind === 'result' ? { ...a, index: a.index - indexBase } : a)),
    }));
    const ride = contextRecheck(verified, local.length);
    const joined = [...local, ...ride.calls];
    const fits = part.every(isReadOnlyCall) && splitIntoBatches(joined).length === 1;
    let out: CallResult[];
    let problems: string[];
    if (fits) {
      const all = await this.runBatch(joined, 0);
      problems = ride.problems(all);
      out = all.slice(0, local.length);
    } else {
      const alone = contextRecheck(verified);
      const rs = await this.runBatch(alone.calls, 0);
      problems = alone.problems(rs);
      out = [];
    }
    // Run alone, the check came before any of the batch reached the guest.
    this.judgeRecheck(problems, !fits);
    return fits ? out : this.runBatch(part, indexBase);
  }

  /**
   * What the quick re-check found: ShadowTamperedError (`beforeWrite` when nothing of the
   * batch it rode on reached the guest), unless partial contexts are accepted: then the
   * problems are recorded in stats.context.
   */
  private judgeRecheck(problems: readonly string[], beforeWrite: boolean): void {
    if (problems.length === 0) return;
    if (!this.opts.acceptPartialContext) {
      const err = new ShadowTamperedError(`the resident shadow's context changed: ${problems.join('; ')}`);
      err.beforeWrite = beforeWrite;
      throw err;
    }
    const seen = this.stats.context;
    if (seen) this.stats.context = { ...seen, complete: false, problems: [...seen.problems, ...problems] };
  }

  private async runBatch(calls: readonly Call[], indexBase: number): Promise<CallResult[]> {
    const out = await runOnLink(
      this.link,
      calls,
      indexBase,
      this.opts.batchTimeoutMs ?? DEFAULT_BATCH_TIMEOUT_MS,
    );
    this.stats.batches += 1;
    this.stats.calls += calls.length;
    return out;
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
      this.opts,
      [this.link.shadow.cr3],
    );
    this.link = fresh.link;
    this.recheck = undefined;
    if (this.opts.holdAwake === false) await sleepBetweenBatches(this.link);
    this.stats.context = fresh.context;
    this.stats.contextMs = fresh.contextMs;
    this.stats.refusals.push(...fresh.refusals);
    this.journaled = undefined;
    if (this.opts.holdAwake !== false) await hold(this.link.shadow, this.wake);
    this.stats.rebootstraps += 1;
    this.stats.shadowPid = fresh.link.shadow.pid;
    if (tamperedPid !== undefined) await this.retire(tamperedPid);
  }

  /**
   * Ends a tampered shadow with SIGKILL from the new one, if /proc still names it
   * vmi-shadow (a pid may have been reused by then). Its code can no longer be trusted to
   * obey the exit command. Runs its batches directly, not through the queue of `run`: it is
   * called from inside a run (replacing a shadow) and would otherwise wait for itself.
   */
  private async retire(pid: number): Promise<void> {
    const comm = new TextEncoder().encode(`/proc/${pid}/comm\0`);
    const [, read] = await this.runBatch(
      [
        {
          nr: sysno('openat'),
          args: [
            { kind: 'int', value: BigInt(AT_FDCWD) },
            { kind: 'in', data: comm },
            { kind: 'int', value: BigInt(O_RDONLY) },
          ],
        },
        {
          nr: sysno('read'),
          args: [
            { kind: 'result', index: 0 },
            { kind: 'out', size: 64, keep: 'ret' },
            { kind: 'int', value: 64n },
          ],
        },
        { nr: sysno('close'), args: [{ kind: 'result', index: 0 }] },
      ],
      0,
    );
    if (new TextDecoder().decode(read.out[0]).trim() !== SHADOW_COMM) return;
    await this.runBatch(
      [
        {
          nr: sysno('kill'),
          args: [
            { kind: 'int', value: BigInt(pid) },
            { kind: 'int', value: BigInt(SIGKILL) },
          ],
        },
      ],
      0,
    );
    this.progress(`killed the tampered shadow (pid ${pid})`);
  }

  /**
   * Ends the session: the shadow exits (or, with keepResident, stays for the next
   * attach) and the guest is left as it was. Safe to call twice.
   */
  async detach(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Runs asked for before now end first (a run let the next one in when its batch was
    // rung, so the queue alone does not say that its batch has ended).
    await this.turn;
    await this.link.pipe.idle();
    const { shadow, transport, dbg } = this.link;
    try {
      if (this.resident) {
        await shadow.verify();
        // A caller that lets the shadow sleep (holdAwake false) keeps it sleeping at once
        // (sleepBetweenBatches); others leave the usual window for a command that follows.
        await shadow.writeControl('spin', this.opts.holdAwake === false ? 0n : SHADOW_IDLE.spinCycles);
        // The journal is fsync'ed: rewriting an unchanged record cost ~2 ms per run.
        const record: ShadowRecord = {
          ...shadow.toRecord(this.transportName),
          resident: true,
          context: this.stats.context,
        };
        const json = JSON.stringify(record);
        if (json !== this.journaled) this.journal.save({ lstar: this.lstar, shadow: record });
        // Verified by this caller, and valid while no other vmi takes the guest (AttachMemo).
        // Not when the check riding on the first batch never ran (no batch was made).
        // When no batch ran, the re-check still pending is the next attach's.
        const verified = this.recheck?.verified ?? this.stats.context;
        if (this.memo && verified?.complete) {
          this.memo.generation = this.lock.generation;
          this.memo.shadow = json;
          this.memo.context = verified;
        }
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
      if (dbg) await releaseDebugger(dbg);
      this.wake?.close();
      this.mem.close();
      this.lock.release();
    }
  }
}

/**
 * holdAwake false (`vmi watch`): the shadow sleeps as soon as a batch is done (spin window
 * 0) and each batch wakes it through the line at once (DoorbellTransport.eagerWake). The
 * window it would otherwise spin after each batch — 5M TSC cycles, while the host parses —
 * was ~6 ms of the shadow's ~16 ms of guest CPU per quiet watch tick (bench/tick-cost.mjs,
 * /proc/PID/schedstat); a wake-up costs ~1 ms of latency per batch instead.
 */
async function sleepBetweenBatches(link: Link): Promise<void> {
  await link.shadow.writeControl('spin', 0n);
  if (link.transport instanceof DoorbellTransport) link.transport.eagerWake = true;
}

// Frozen: code loaded into this process (a pack) cannot replace its methods to reach the guest.
Object.freeze(RedirectSession.prototype);
