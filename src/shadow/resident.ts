/** The resident shadow's lifecycle: start one that outlives the attach, stop it, look at it. */
import { sysno } from '../abi/linux/syscalls.js';
import { learnGuestRam, openHostRam } from '../memory/guest-ram.js';
import { ProcessMemoryError } from '../memory/process-memory.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { JournalStore } from './journal.js';
import type { ShadowContext } from './root-context.js';
import { CONTROL, LAYOUT, SHADOW_STATE } from './layout.js';
import { RedirectSession, type SessionStats } from './session.js';
import { ShadowHandle, ShadowLostError, ShadowTamperedError } from './shadow.js';
import type { TransportChoice } from './transport.js';

/** Starts (or confirms) a resident shadow: later runs reuse it and skip the bootstrap. */
export async function startResidentShadow(
  guest: GuestEndpoints,
  opts: { transport?: TransportChoice; progress?: (m: string) => void; preferVictimPid?: number } = {},
): Promise<SessionStats> {
  const session = await RedirectSession.attach(guest, {
    transport: opts.transport,
    onProgress: opts.progress,
    keepResident: true,
    preferVictimPid: opts.preferVictimPid,
  });
  // One batch proves the shadow answers before it is left behind.
  await session.run([{ nr: sysno('getpid'), args: [] }]);
  await session.detach();
  return session.stats;
}

/** Makes the resident shadow exit; returns its pid, or undefined when there was none. */
export async function stopResidentShadow(
  guest: GuestEndpoints,
  opts: { progress?: (m: string) => void } = {},
): Promise<number | undefined> {
  const record = new JournalStore(guest.runDir).load()?.shadow;
  if (!record?.resident) return undefined;
  const session = await RedirectSession.attach(guest, { onProgress: opts.progress, keepResident: false });
  await session.detach();
  return record.pid;
}

export interface ResidentStatus {
  guest: string;
  resident: boolean;
  pid?: number;
  /** alive: answering checks; lost: gone; tampered: changed by someone else; unknown: no RAM file to look. */
  health?: 'alive' | 'lost' | 'tampered' | 'unknown';
  detail?: string;
  state?: string;
  batches?: number;
  wakes?: number;
  heartbeat?: number;
  /** The shadow's context as verified at the last attach (namespaces, seccomp, caps, cgroup, LSM). */
  context?: ShadowContext;
}

const STATE_NAMES = new Map(Object.entries(SHADOW_STATE).map(([k, v]) => [BigInt(v), k]));

/** Looks at the resident shadow without attaching (read-only, through the RAM file or QEMU's memory). */
export async function residentShadowStatus(guest: GuestEndpoints): Promise<ResidentStatus> {
  const record = new JournalStore(guest.runDir).load()?.shadow;
  if (!record?.resident) return { guest: guest.name, resident: false };
  const status: ResidentStatus = {
    guest: guest.name,
    resident: true,
    pid: record.pid,
    context: record.context,
  };
  let host: ReturnType<typeof openHostRam>;
  try {
    host = openHostRam(guest, await learnGuestRam(guest), false);
  } catch (err) {
    if (!(err instanceof ProcessMemoryError)) throw err;
    return { ...status, health: 'unknown', detail: err.message };
  }
  if (!host)
    return { ...status, health: 'unknown', detail: 'no shared RAM file or QEMU memory to read it through' };
  const mem = host.mem;
  try {
    const h = ShadowHandle.fromRecord(mem, record);
    await h.verify();
    const ctl = await h.read(LAYOUT.control, 0x200);
    const word = (o: number) => ctl.readBigUInt64LE(o);
    return {
      ...status,
      health: 'alive',
      state: STATE_NAMES.get(word(CONTROL.state)) ?? String(word(CONTROL.state)),
      batches: Number(word(CONTROL.batches)),
      wakes: Number(word(CONTROL.wakes)),
      heartbeat: Number(word(CONTROL.heartbeat)),
    };
  } catch (err) {
    if (err instanceof ShadowTamperedError) return { ...status, health: 'tampered', detail: err.message };
    if (err instanceof ShadowLostError) return { ...status, health: 'lost', detail: err.message };
    throw err;
  } finally {
    mem.close();
  }
}
