/**
 * The session's line to its shadow: connecting the gdbstub, bootstrapping a new shadow
 * (finding the syscall entry first) in the guest's root context, choosing its transport,
 * running one batch on it, and keeping it awake while a host is attached.
 */
import { GdbPhysicalMemory } from '../memory/gdb-physical.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { GdbClient } from '../qemu/gdb.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';
import { splitIntoBatches } from './batch-codec.js';
import { BatchPipe } from './batch-pipe.js';
import { Candidates, createShadow, SHADOW_IDLE, type Refusal } from './bootstrap.js';
import { GuestDebugger } from './debugger.js';
import { hex, type JournalStore } from './journal.js';
import { SETUP_FAILED, SHADOW_STATE } from './layout.js';
import { establishRootContext, VictimRefusedError, type ShadowContext } from './root-context.js';
import type { ShadowHandle } from './shadow.js';
import { cachedSyscallEntry } from './syscall-entry.js';
import { DoorbellTransport, TrapTransport, type Transport, type TransportName } from './transport.js';
import type { WakeLine } from './wake-line.js';

/** A shadow ready for batches, with what it takes to talk to it. */
export interface Link {
  shadow: ShadowHandle;
  transport: Transport;
  /** Kept only for the trap transport (or memory through the gdbstub). */
  dbg?: GuestDebugger;
  /** The batches in flight on this shadow (every batch goes through it). */
  pipe: BatchPipe;
}

/** How long a batch may take by default (SessionOptions.batchTimeoutMs), in ms. */
export const DEFAULT_BATCH_TIMEOUT_MS = 30_000;

/** A link to `shadow` over `transport`. */
export function newLink(shadow: ShadowHandle, transport: Transport, dbg?: GuestDebugger): Link {
  return { shadow, transport, dbg, pipe: new BatchPipe(shadow, transport) };
}

/**
 * Keeps the shadow awake while a host is attached (a long spin window: no wake-up between
 * a plugin's batches), and wakes it now if it sleeps, so that its wake-up overlaps the
 * host's own work instead of delaying the first batch. The shadow was verified just before.
 */
export async function hold(shadow: ShadowHandle, wake: WakeLine | undefined): Promise<void> {
  await shadow.writeControl('spin', SHADOW_IDLE.attachedSpinCycles);
  if ((await shadow.readControl('state')) !== BigInt(SHADOW_STATE.sleeping)) return;
  // Asleep: the poke goes out now, on a line connected first.
  await wake?.pokeWhenUp();
}

export async function connectDebugger(gdbSocket: string): Promise<GuestDebugger> {
  const gdb = await GdbClient.connect(gdbSocket, { timeoutMs: 5000 });
  // '?' also makes QEMU drop every breakpoint a crashed client left armed.
  await gdb.queryHaltReason();
  // QEMU keeps the memory addressing mode a previous client left: start from virtual.
  await gdb.setPhysicalMemoryMode(false);
  return new GuestDebugger(gdb);
}

/** Lets the VM go: no breakpoint left armed, detached (or at least disconnected). */
export async function releaseDebugger(dbg: GuestDebugger): Promise<void> {
  await dbg.removeAllBreakpoints().catch(() => {});
  await dbg.gdb.detach().catch(() => dbg.gdb.close());
}

export function makeTransport(
  name: TransportName,
  shadow: ShadowHandle,
  dbg: GuestDebugger | undefined,
  wake: WakeLine | undefined,
): Transport {
  if (name === 'doorbell') return new DoorbellTransport(shadow, wake);
  if (!dbg) throw new Error('the trap transport needs the gdbstub');
  return new TrapTransport(dbg, shadow, wake);
}

/**
 * Runs one batch on a shadow (at most one batch's worth of calls): checks the shadow is
 * still itself before anything is written, writes the entries and inputs, rings, reads back.
 */
export async function runOnLink(
  link: Link,
  calls: readonly Call[],
  indexBase: number,
  timeoutMs = DEFAULT_BATCH_TIMEOUT_MS,
): Promise<CallResult[]> {
  return link.pipe.run(calls, indexBase, timeoutMs);
}

/** The engine's own batches (context set-up and checks), outside any plugin policy. */
export function linkExecutor(link: Link, timeoutMs?: number): SyscallExecutor {
  return {
    run: async (calls) => {
      const out: CallResult[] = [];
      for (const g of splitIntoBatches(calls))
        out.push(...(await runOnLink(link, calls.slice(g.start, g.end), g.start, timeoutMs)));
      return out;
    },
  };
}

/** How long one bootstrap looks for a task to borrow, all candidates together. */
const CATCH_TIMEOUT_MS = 20_000;

/** What the shadow's context needs of the session's options. */
export interface ContextOptions {
  /** Borrow this task first (its PID in its own PID namespace). */
  preferVictimPid?: number;
  /** Keep a shadow whose root context does not verify (recorded as partial). */
  acceptPartialContext?: boolean;
  batchTimeoutMs?: number;
}

/**
 * Creates a new shadow in the guest's root context (src/shadow/root-context.ts); for the
 * doorbell transport the gdbstub is let go afterwards. A victim whose context cannot
 * become the root context is refused: its shadow exits and another task is borrowed
 * (at most MAX_CANDIDATES, within CATCH_TIMEOUT_MS for all of them).
 */
export async function bootstrapShadow(
  guest: GuestEndpoints,
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  transportName: TransportName,
  wake: WakeLine | undefined,
  progress: (m: string) => void,
  opts: ContextOptions,
  avoidCr3: readonly bigint[] = [],
): Promise<{
  link: Link;
  victimPid: number;
  lstar: string;
  context: ShadowContext;
  refusals: Refusal[];
  contextMs: number;
}> {
  // The shadow is told at its creation whether it has a wake-up line: know it first.
  await wake?.open();
  const lstar = await cachedSyscallEntry(dbg, mem, guest.runDir, journal.load());
  const lstarHex = hex(lstar);
  const candidates = new Candidates(avoidCr3, progress);
  let current: GuestDebugger | undefined = dbg;
  const deadline = Date.now() + CATCH_TIMEOUT_MS;
  for (;;) {
    current ??= await connectDebugger(guest.gdbSocket!);
    let created: Awaited<ReturnType<typeof createShadow>>;
    try {
      created = await createShadow(current, mem, journal, {
        lstar,
        catchTimeoutMs: Math.max(1, deadline - Date.now()),
        progress,
        candidates,
        preferPid: candidates.refusals.length === 0 ? opts.preferVictimPid : undefined,
        wakeDevice: wake?.usable ? guest.wake?.device : undefined,
      });
    } catch (err) {
      // A connection made here after a refusal is ours to let go (the caller detaches its
      // own): a client that leaves without detaching leaves the VM stopped.
      if (current !== dbg) await releaseDebugger(current);
      throw err;
    }
    const { shadow, victimPid, victimCr3 } = created;
    const setup = await shadow.readControl('setup');
    if (setup & BigInt(SETUP_FAILED.wakeLine))
      progress('warning: the shadow could not open its wake-up line; it naps instead');
    let kept: GuestDebugger | undefined = current;
    if (transportName === 'doorbell' && !(mem instanceof GdbPhysicalMemory)) {
      // The VM runs freely from here on: batches go through the RAM file only.
      await current.removeAllBreakpoints();
      await current.gdb.detach();
      kept = undefined;
      current = undefined;
    }
    journal.save({ lstar: lstarHex, shadow: shadow.toRecord(transportName) });
    const link = newLink(shadow, makeTransport(transportName, shadow, kept, wake), kept);
    try {
      const t0 = performance.now();
      await hold(shadow, wake); // awake between the context batches
      const context = await establishRootContext(
        linkExecutor(link, opts.batchTimeoutMs),
        opts.acceptPartialContext,
      );
      const contextMs = performance.now() - t0;
      progress(
        `shadow ready (pid ${shadow.pid}), transport ${transportName}; root context ${context.complete ? 'verified' : `INCOMPLETE: ${context.problems.join('; ')}`} in ${contextMs.toFixed(1)} ms`,
      );
      return { link, victimPid, lstar: lstarHex, context, refusals: candidates.refusals, contextMs };
    } catch (err) {
      // Refused or unverifiable: this shadow must not serve plugins. It exits; the guest is
      // left as it was (a refused victim was restored before its shadow ran).
      await shadow
        .verify()
        .then(() => link.transport.dismiss(10_000))
        .catch(() => {});
      journal.save({ lstar: lstarHex });
      let failure = err;
      if (err instanceof VictimRefusedError) {
        try {
          candidates.refuse(victimPid, victimCr3, err.reason);
          continue;
        } catch (exhausted) {
          failure = exhausted;
        }
      }
      if (kept) await releaseDebugger(kept);
      throw failure;
    }
  }
}
