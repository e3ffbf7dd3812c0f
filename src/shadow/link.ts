/**
 * The session's line to its shadow: connecting the gdbstub, bootstrapping a new shadow
 * (finding the syscall entry first), choosing its transport, and keeping it awake while
 * a host is attached.
 */
import { GdbPhysicalMemory } from '../memory/gdb-physical.js';
import type { PhysicalMemory } from '../memory/physical.js';
import { GdbClient } from '../qemu/gdb.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { createShadow, SHADOW_IDLE } from './bootstrap.js';
import { GuestDebugger } from './debugger.js';
import { hex, type JournalStore } from './journal.js';
import { SETUP_FAILED, SHADOW_STATE } from './layout.js';
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
}

/**
 * Keeps the shadow awake while a host is attached (a long spin window: no wake-up between
 * a plugin's batches), and wakes it now if it sleeps, so that its wake-up overlaps the
 * host's own work instead of delaying the first batch. The shadow was verified just before.
 */
export async function hold(shadow: ShadowHandle, wake: WakeLine | undefined): Promise<void> {
  await shadow.writeControl('spin', SHADOW_IDLE.attachedSpinCycles);
  if ((await shadow.readControl('state')) === BigInt(SHADOW_STATE.sleeping)) wake?.poke();
}

export async function connectDebugger(gdbSocket: string): Promise<GuestDebugger> {
  const gdb = await GdbClient.connect(gdbSocket, { timeoutMs: 5000 });
  // '?' also makes QEMU drop every breakpoint a crashed client left armed.
  await gdb.queryHaltReason();
  // QEMU keeps the memory addressing mode a previous client left: start from virtual.
  await gdb.setPhysicalMemoryMode(false);
  return new GuestDebugger(gdb);
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

/** Creates a new shadow; for the doorbell transport the gdbstub is let go afterwards. */
export async function bootstrapShadow(
  guest: GuestEndpoints,
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  transportName: TransportName,
  wake: WakeLine | undefined,
  progress: (m: string) => void,
  avoidCr3: readonly bigint[] = [],
): Promise<{ link: Link; victimPid: number; lstar: string }> {
  const lstar = await cachedSyscallEntry(dbg, mem, guest.runDir, journal.load());
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
  journal.save({ lstar: lstarHex, shadow: shadow.toRecord(transportName) });
  return {
    link: { shadow, transport: makeTransport(transportName, shadow, kept, wake), dbg: kept },
    victimPid,
    lstar: lstarHex,
  };
}
