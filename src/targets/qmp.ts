/**
 * Attaching to a QEMU that vmi did not start, given only its QMP socket: the gdbstub is
 * switched on at run time through HMP (`gdbserver unix:…`) on a socket in a private
 * directory, and switched off again afterwards (`gdbserver none`), so the guest is left
 * as it was. There is no shared RAM file: when this user may ptrace QEMU, its RAM is read
 * and written inside the QEMU process (src/memory/process-memory.ts: host addresses asked
 * of QEMU, bytes checked against QEMU's own reading) and batches use the doorbell;
 * otherwise memory goes through the gdbstub and batches use the trap transport, and the
 * reason is reported.
 *
 * Run state: connecting a gdb client stops the VM and detaching resumes it, whatever it
 * was before. A guest that was paused before the attach is paused again (QMP `stop`)
 * before we leave, so its run state is as it was; it did run for the duration of the
 * attach (the redirected syscalls need its CPU). Guests in any other state (migrating,
 * shut down, panicked) are refused.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { GuestLock } from '../util/guest-lock.js';
import { ensurePrivateDir, runRoot } from '../util/run-dir.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { GdbClient } from '../qemu/gdb.js';
import { MAX_UNIX_PATH } from '../qemu/launcher.js';
import { QmpClient } from '../qemu/qmp.js';
import { queryRamMap } from '../qemu/ram-map.js';
import { probeProcessMemory } from '../memory/process-memory.js';
import { RamLayout } from '../memory/ram-layout.js';
import type { QemuRamHost } from '../qemu/ram-host.js';
import type { OpenedTarget, OpenTargetOptions } from './target.js';

export class ForeignGuestError extends Error {
  override name = 'ForeignGuestError';
}

/** Run states in which an attach makes sense. */
const USABLE_STATES = new Set(['running', 'paused', 'debug']);

export interface ForeignGuest {
  endpoints: GuestEndpoints;
  /** QEMU's run state before the attach (`running`, `paused`, ...). */
  initialStatus: string;
  /** True when vmi switched the gdbstub on (and so switches it off in close()). */
  ownsGdbstub: boolean;
  /** Switches the gdbstub off again, removes its socket and restores a paused state. */
  close(): Promise<void>;
}

/** The private run dir of a foreign guest, keyed by its QMP socket's absolute path (pure). */
export function foreignRunDir(qmpSocket: string, root: string = runRoot()): string {
  const key = createHash('sha256').update(resolve(qmpSocket)).digest('hex').slice(0, 16);
  return join(root, 'foreign', key);
}

/** A guest name from QEMU's `-name` (its `guest=` part), else from the QMP socket's file name (pure). */
export function foreignGuestName(qemuName: string | undefined, qmpSocket: string): string {
  const raw = qemuName?.trim() || basename(qmpSocket).replace(/\.(sock|socket|qmp)$/, '') || 'foreign';
  return raw.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 32);
}

/**
 * The unix socket path of an existing gdbstub from `query-chardev` (its chardev is
 * labelled `gdb`): undefined when there is none, null when it is not a unix socket (pure).
 */
export function existingGdbstub(
  chardevs: readonly { label: string; filename: string }[],
): string | null | undefined {
  const gdb = chardevs.find((c) => c.label === 'gdb');
  if (!gdb) return undefined;
  const m = /(?:^|:)unix:([^,]+)/.exec(gdb.filename);
  return m ? m[1] : null;
}

/**
 * QEMU 7.2 keeps `Qqemu.PhyMemMode` across gdb clients and across `gdbserver` restarts:
 * a client that read physical memory leaves the next one reading physical addresses
 * where it expects virtual ones. Set it back to virtual (the gdbstub's default). The
 * connect stops the VM for a moment; the detach resumes it.
 */
async function resetGdbMemoryMode(gdbSocket: string): Promise<void> {
  const gdb = await GdbClient.connect(gdbSocket, { timeoutMs: 5000 });
  try {
    await gdb.queryHaltReason();
    await gdb.setPhysicalMemoryMode(false);
  } finally {
    await gdb.detach().catch(() => gdb.close());
  }
}

async function queryStatus(qmp: QmpClient): Promise<string> {
  const st = await qmp.execute<{ status: string; running: boolean }>('query-status');
  return st.status;
}

/**
 * Prepares a foreign guest for an attach: QMP connect, run-state check, gdbstub on.
 * Always call close() afterwards (also after a failed run).
 */
export async function openForeignGuest(
  qmpSocket: string,
  opts: {
    progress?: (m: string) => void;
    /** Do not look for the guest's RAM inside the QEMU process (memory via the gdbstub only). */
    noProcessMemory?: boolean;
    /** Wait this long (ms) for another vmi to let go of the guest (guest-lock.ts). */
    lockWaitMs?: number;
  } = {},
): Promise<ForeignGuest> {
  const qmpPath = resolve(qmpSocket);
  if (!existsSync(qmpPath)) throw new ForeignGuestError(`no QMP socket at ${qmpPath}`);
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(qmpPath, { timeoutMs: 5000 });
  } catch (e) {
    throw new ForeignGuestError(`cannot connect to QMP at ${qmpPath}: ${(e as Error).message}`);
  }
  const runDir = foreignRunDir(qmpPath);
  let lock: GuestLock | undefined;
  let ownsGdbstub = false;
  let gdbSocket = join(runDir, 'gdb.sock');
  let initialStatus: string | undefined;
  try {
    initialStatus = await queryStatus(qmp);
    if (!USABLE_STATES.has(initialStatus)) {
      throw new ForeignGuestError(
        `the guest at ${qmpPath} is ${initialStatus}: only a running or paused guest can be inspected`,
      );
    }
    const nameInfo = await qmp
      .execute<{ name?: string }>('query-name')
      .catch(() => ({}) as { name?: string });
    const name = foreignGuestName(nameInfo.name, qmpPath);
    const mem = await qmp.execute<{ 'base-memory': number; 'plugged-memory'?: number }>(
      'query-memory-size-summary',
    );
    const ramSize = Number(mem['base-memory']);
    // Where its RAM is (asked here: QMP takes one client at a time, and this one holds it).
    const ram = (await queryRamMap(qmp)).ranges;
    // Its RAM inside the QEMU process, if this user may read it (else: trap, and why).
    let qemuRam: QemuRamHost | undefined;
    let qemuRamRefused: string | undefined;
    if (!opts.noProcessMemory) {
      try {
        qemuRam = await probeProcessMemory(qmp, qmpPath, new RamLayout(ram));
        opts.progress?.(`guest RAM: inside QEMU (pid ${qemuRam.pid}), checked against QEMU's own reading`);
      } catch (e) {
        qemuRamRefused = (e as Error).message;
      }
    }

    await ensurePrivateDir(runRoot());
    await ensurePrivateDir(join(runRoot(), 'foreign'));
    await ensurePrivateDir(runDir);
    if (Buffer.byteLength(gdbSocket) > MAX_UNIX_PATH)
      throw new ForeignGuestError(`socket path too long: ${gdbSocket}`);
    // Held for the whole run: a second vmi must not switch the stub under the first one.
    // The session's own lock lives in runDir, so this one goes one level down.
    mkdirSync(join(runDir, 'setup'), { recursive: true, mode: 0o700 });
    lock = new GuestLock(join(runDir, 'setup'), name);
    await lock.acquire({
      ...(opts.lockWaitMs !== undefined ? { waitMs: opts.lockWaitMs } : {}),
      ...(opts.progress ? { onWait: opts.progress } : {}),
    });

    const chardevs = await qmp.execute<{ label: string; filename: string }[]>('query-chardev');
    const existing = existingGdbstub(chardevs);
    if (existing === null) {
      throw new ForeignGuestError(
        `the guest at ${qmpPath} already has a gdbstub that is not a unix socket; vmi will not replace it`,
      );
    }
    if (existing !== undefined && existing !== gdbSocket) {
      // Someone's own unix gdbstub: use it, and leave it on afterwards.
      opts.progress?.(`using the guest's existing gdbstub ${existing}`);
      gdbSocket = existing;
    } else {
      // Ours (possibly left by a vmi that died): (re)start it on a fresh socket. A stub
      // still on that socket is stopped first: QEMU refuses a second gdbserver chardev of
      // the same name ("duplicate yank instance") and the guest would stay unusable.
      if (existing === gdbSocket) await qmp.hmp('gdbserver none');
      rmSync(gdbSocket, { force: true });
      const out = await qmp.hmp(`gdbserver unix:${gdbSocket},server=on,wait=off`);
      if (!existsSync(gdbSocket)) {
        throw new ForeignGuestError(`could not enable the gdbstub: ${out.trim() || 'no socket appeared'}`);
      }
      ownsGdbstub = true;
      opts.progress?.(`gdbstub enabled on ${gdbSocket}`);
    }
    await resetGdbMemoryMode(gdbSocket);

    // The engine needs the guest's CPUs (it catches a task in user mode); a paused guest
    // is resumed for the run and paused again in close().
    if (initialStatus !== 'running') {
      opts.progress?.(`guest is ${initialStatus}: resuming it for the run`);
      await qmp.execute('cont');
    }
    const endpoints: GuestEndpoints = {
      name,
      qmpSocket: qmpPath,
      gdbSocket,
      ramSize,
      ram,
      runDir,
      ...(qemuRam ? { qemuRam } : {}),
      ...(qemuRamRefused ? { qemuRamRefused } : {}),
    };
    let closed = false;
    const heldLock = lock;
    const status = initialStatus;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      try {
        await resetGdbMemoryMode(gdbSocket).catch(() => undefined);
        if (ownsGdbstub) {
          await qmp.hmp('gdbserver none').catch(() => '');
          rmSync(gdbSocket, { force: true });
        }
        // We (and the gdb detach) resumed the VM: pause it again if that is how we found it.
        if (status !== 'running' && (await queryStatus(qmp).catch(() => '')) === 'running') {
          await qmp.execute('stop').catch(() => undefined);
        }
      } finally {
        qmp.close();
        heldLock.release();
      }
    };
    return { endpoints, initialStatus: status, ownsGdbstub, close };
  } catch (e) {
    if (initialStatus !== undefined && initialStatus !== 'running')
      await qmp.execute('stop').catch(() => undefined);
    if (ownsGdbstub) {
      await qmp.hmp('gdbserver none').catch(() => '');
      rmSync(gdbSocket, { force: true });
    }
    qmp.close();
    lock?.release();
    throw e;
  }
}

/** A foreign QEMU, by its QMP socket. */
export interface QmpTargetSpec {
  socket: string;
}

/** A foreign guest as a target; close() leaves the guest as it was. */
export async function open(spec: QmpTargetSpec, opts: OpenTargetOptions = {}): Promise<OpenedTarget> {
  const foreign = await openForeignGuest(spec.socket, opts);
  return { guest: foreign.endpoints, close: () => foreign.close() };
}
