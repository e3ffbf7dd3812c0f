import type { InspectedGuest } from '../qemu/guest-endpoints.js';
import type { ResultTable } from '../output/table.js';
import { runPlugin, type PluginDefinition, type PluginRunner } from '../sdk/plugin.js';
import { SyscallApi } from '../sdk/syscall-api.js';
import { assertWriteAllowed, PolicyExecutor } from '../sdk/policy.js';
import type { SyscallExecutor } from '../sdk/syscall-types.js';
import type { HypervisorView } from '../sdk/hypervisor.js';
import type { RunLimits } from '../sdk/limits.js';
import type { ProcHints } from '../sdk/procfs.js';
import {
  RedirectSession,
  type AttachMemo,
  type SessionOptions,
  type SessionStats,
} from '../shadow/session.js';
import { PiggybackExecutor } from './piggyback.js';
import { applyShadowRows } from './shadow-rows.js';
import { createPolicyGate, revocable, RUNNER_POLICY_NAME } from './policy-gate.js';
import type { TransportChoice } from '../shadow/transport.js';
import { freezeReplayClone, type FreezeResult } from '../shadow/replay-freeze.js';

export interface PluginRequest {
  plugin: PluginDefinition;
  /** Raw option values for this plugin (validated by the SDK). */
  options: Record<string, unknown>;
  /**
   * How it runs, when not in this process (a plugin of an isolated pack: its child
   * process sends its batches to the executor this runner gives it). Default: runPlugin.
   */
  runner?: PluginRunner;
}

/** A plugin that threw: its table is missing, the other plugins' tables are kept. */
export interface PluginFailure {
  plugin: string;
  /** Position of its request in `requests`. */
  index: number;
  message: string;
  error: unknown;
}

export interface PluginsRun {
  /** Tables of the plugins that completed, in request order (failed plugins have none). */
  tables: ResultTable[];
  /** One entry per request, in request order: its table, or undefined where the plugin threw. */
  byRequest: (ResultTable | undefined)[];
  /** Plugins that threw; empty when every plugin completed. */
  failures: PluginFailure[];
  session: SessionStats;
  /** Milliseconds spent in each plugin's run (guest work and parsing). */
  pluginMs: Record<string, number>;
}

export interface RunOnGuestOptions {
  transport?: TransportChoice;
  progress?: (message: string) => void;
  /** `--allow-write`: let plugins that declare `needs` make their declared calls. */
  allowWrite?: boolean;
  /** `--victim-pid`: borrow this task first when a shadow is created. */
  preferVictimPid?: number;
  /**
   * `--include-shadow`: keep the shadow's own rows (marked in a VMI_SHADOW column) instead
   * of leaving them out of every table (shadow-rows.ts).
   */
  includeShadow?: boolean;
  /** `--accept-partial-context`: run even if the shadow's root context does not verify. */
  acceptPartialContext?: boolean;
  /** `--max-read`, `--plugin-timeout`: bounds on each plugin run (defaults: DEFAULT_RUN_LIMITS). */
  runLimits?: Partial<RunLimits>;
  /**
   * Leave the shadow in the guest at detach (a resident shadow), so the next run on this
   * guest reuses it and skips the bootstrap (the API keeps one between calls). Default:
   * the shadow exits, unless it was resident already.
   */
  keepResident?: boolean;
  /** SessionOptions.holdAwake: false lets the shadow sleep between batches (less guest CPU). */
  holdAwake?: boolean;
  /**
   * `--wait`: how long to wait (ms) while another vmi holds the guest (default 60 s; 0
   * refuses at once); `onWait` hears once who holds it (the CLI prints it always).
   */
  lockWaitMs?: number;
  onWait?: (message: string) => void;
  /** SessionOptions.reuse: what the caller's last attach verified (an API Guest keeps one). */
  reuse?: AttachMemo;
  /** What the caller keeps between runs on this guest for the plugins' /proc reads (an API Guest keeps one). */
  procHints?: ProcHints;
  /** How to attach (default RedirectSession.attach); tests pass a fake executor here. */
  attach?: (guest: InspectedGuest, opts: SessionOptions) => Promise<AttachedSession>;
  /**
   * Ends the run early (`vmi plugins run` on SIGINT/SIGTERM): a wait for the guest stops,
   * the SDK throws before the plugin's next guest entry, no further plugin starts, and the
   * session detaches as usual; the run then rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

/** What runPluginsOnGuest needs of a session: an executor with stats and a detach. */
export type AttachedSession = SyscallExecutor & {
  readonly stats: SessionStats;
  detach(): Promise<void>;
  /** The hypervisor's view of the guest kernel, when the session has one. */
  hypervisor?(): HypervisorView;
};

/**
 * Runs several plugins against one live guest through a single attach: one shadow
 * serves them all, and it is gone again when this returns (or throws). A plugin that
 * throws is recorded in `failures` and the next one runs.
 */
export async function runPluginsOnGuest(
  guest: InspectedGuest,
  requests: readonly PluginRequest[],
  opts: RunOnGuestOptions = {},
): Promise<PluginsRun> {
  // Refuse write plugins before attaching: nothing reaches the guest.
  for (const req of requests) assertWriteAllowed(req.plugin, opts.allowWrite ?? false);
  const attach = opts.attach ?? ((g, o) => RedirectSession.attach(g, o));
  const session = await attach(guest, {
    transport: opts.transport,
    onProgress: opts.progress,
    preferVictimPid: opts.preferVictimPid,
    acceptPartialContext: opts.acceptPartialContext,
    ...(opts.keepResident !== undefined ? { keepResident: opts.keepResident } : {}),
    ...(opts.holdAwake !== undefined ? { holdAwake: opts.holdAwake } : {}),
    ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}),
    ...(opts.onWait ? { onWait: opts.onWait } : {}),
    ...(opts.reuse ? { reuse: opts.reuse } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const byRequest: (ResultTable | undefined)[] = [];
  const failures: PluginFailure[] = [];
  const pluginMs: Record<string, number> = {};
  try {
    // A replay clone shows the captured instant: its tasks are frozen before any plugin reads it.
    const freeze = guest.captureId ? await freezeClone(session, opts.progress) : undefined;
    // uname rides along with the first plugin's first batch: no guest entry of its own.
    // The engine checks every batch against the running plugin's needs as well (policy-gate.ts).
    const gate = createPolicyGate(session);
    const carrier = new PiggybackExecutor(gate.executor);
    const identityPending = guestIdentity(carrier.rider, guest);
    const collected: { table: ResultTable; at: string }[] = [];
    const hypervisor = session.hypervisor?.();
    // Every shadow that served this run (a dead or changed one is replaced mid-run).
    const shadowPids = new Set<number>([session.stats.shadowPid]);
    for (const [index, req] of requests.entries()) {
      opts.signal?.throwIfAborted();
      const t0 = performance.now();
      let table: ResultTable;
      const grant = opts.allowWrite ? req.plugin.needs : undefined;
      gate.enter(req.plugin.name, grant);
      const lane = revocable(carrier, req.plugin.name);
      try {
        ({ table } = await (req.runner ?? runPlugin)(req.plugin, {
          // Every plugin's calls pass the read-only policy (plus its declared needs with --allow-write).
          executor: new PolicyExecutor(lane.executor, { plugin: req.plugin.name, grant }),
          options: req.options,
          progress: opts.progress,
          runLimits: opts.runLimits,
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(freeze && 'view' in freeze ? { frozen: freeze.view } : {}),
          ...(hypervisor ? { hypervisor } : {}),
          // Not on a frozen replay clone: its listing is the captured instant's.
          ...(opts.procHints && !freeze ? { procHints: opts.procHints } : {}),
          // The trap transport stops the VM once per batch and runs one at a time: whole
          // batches, not the half-batch slices that chaining wants.
          ...(session.stats.transport === 'trap' ? { chains: false } : {}),
        }));
      } catch (error) {
        lane.revoke();
        // One plugin's failure costs its own table, never the others'.
        pluginMs[req.plugin.name] = performance.now() - t0;
        const message = error instanceof Error ? error.message : String(error);
        failures.push({ plugin: req.plugin.name, index, message, error });
        byRequest.push(undefined);
        continue;
      }
      lane.revoke();
      shadowPids.add(session.stats.shadowPid);
      pluginMs[req.plugin.name] = performance.now() - t0;
      collected.push({ table, at: new Date().toISOString() });
      byRequest.push(table);
    }
    opts.signal?.throwIfAborted();
    gate.enter(RUNNER_POLICY_NAME);
    await carrier.flush();
    const identity = await identityPending;
    for (const { table, at } of collected) {
      applyShadowRows(table, [...shadowPids], opts.includeShadow ?? false);
      table.metadata = {
        ...table.metadata,
        guest: guest.name,
        ...identity,
        ...(guest.captureId ? { 'capture.id': guest.captureId } : {}),
        'collection.time': at,
        'collection.transport': session.stats.transport,
        'collection.memory': session.stats.memory,
        ...contextMetadata(session.stats),
        ...(freeze ? { 'replay.frozen': freezeSummary(freeze) } : {}),
        source: guest.captureId ? 'capture' : 'live',
      };
    }
  } finally {
    await session.detach();
  }
  const tables = byRequest.filter((t): t is ResultTable => t !== undefined);
  return { tables, byRequest, failures, session: session.stats, pluginMs };
}

/**
 * Freezes a replay clone (src/shadow/replay-freeze.ts). A clone that cannot be frozen
 * (no cgroup v2, a shadow outside the root cgroup) is read unfrozen, and says so in every
 * table's metadata and on the progress line.
 */
async function freezeClone(
  session: SyscallExecutor,
  progress?: (message: string) => void,
): Promise<FreezeResult | { error: string }> {
  try {
    const f = await freezeReplayClone(session);
    progress?.(`replay clone frozen: ${freezeSummary(f)}`);
    return f;
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    progress?.(`replay clone NOT frozen (its tasks run on while plugins read it): ${error}`);
    return { error };
  }
}

/** `replay.frozen` metadata: how the clone was frozen, or why not. */
function freezeSummary(f: FreezeResult | { error: string }): string {
  if ('error' in f) return `no: ${f.error}`;
  return (
    `${f.settled ? 'yes' : 'partly (not every cgroup reported frozen)'}: cgroup v2 freezer on ${f.frozenCgroups.join(', ')}; ` +
    `${f.moved.length} tasks moved there from the root cgroup (reported as /); states as read before the freeze; ` +
    `${f.ms.toFixed(0)} ms`
  );
}

/**
 * The context the shadow ran in (see src/shadow/root-context.ts), so that a table says
 * whose view of the guest it is: namespaces, seccomp, capabilities, cgroup, LSM label, and
 * whether it was verified as the guest's root context or accepted as partial.
 */
export function contextMetadata(stats: SessionStats): Record<string, string> {
  const c = stats.context;
  if (!c) return {};
  return {
    'shadow.context': c.complete ? 'root (verified)' : `partial (accepted): ${c.problems.join('; ')}`,
    'shadow.namespaces': Object.values(c.namespaces).join(' '),
    'shadow.seccomp': String(c.seccomp),
    'shadow.capabilities': `eff=${c.capabilities.effective} prm=${c.capabilities.permitted} bnd=${c.capabilities.bounding}`,
    'shadow.cgroup': c.cgroup.join(' '),
    'shadow.lsm': c.lsm,
    ...(stats.victimPid > 0 ? { 'shadow.victim_pid': String(stats.victimPid) } : {}),
    ...(stats.refusals.length > 0
      ? { 'shadow.refused': stats.refusals.map((r) => `pid ${r.pid}: ${r.reason}`).join('; ') }
      : {}),
  };
}

/**
 * Who the guest says it is (uname): the tables' metadata names the kernel that answered,
 * not what the caller believed was booted.
 */
async function guestIdentity(
  session: SyscallExecutor,
  guest: InspectedGuest,
): Promise<Record<string, string>> {
  try {
    const u = await new SyscallApi(session).uname();
    return { 'kernel.release': u.release, 'kernel.version': u.version, hostname: u.nodename };
  } catch {
    return guest.kernelRelease ? { 'kernel.release': guest.kernelRelease } : {};
  }
}
