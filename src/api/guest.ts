/**
 * The programmatic API: `openGuest(spec)` → a Guest that runs plugins and returns Arrow
 * tables, keeping its shadow resident in the guest between calls, until close().
 *
 * It is the CLI's path, not a copy of it: the guest is opened by the same targets
 * (src/targets: lab guest, foreign QEMU by QMP socket, capture replay) and every call is
 * one runPluginsOnGuest (src/runner/run-plugins.ts), as `vmi plugins run` does. What the
 * API adds is the lifetime: the attach of each call asks for a resident shadow, so the
 * second call skips the bootstrap (~0.3–1 s) and pays a re-check of the shadow (~5 ms; while
 * no other vmi took the guest in between, only its quick part, riding on the first batch),
 * and close() removes that shadow again (unless `keepShadow`). Between calls the guest is
 * not locked: `vmi` commands can inspect it meanwhile (and reuse the same shadow).
 * Reference: docs/api.md.
 */
import type { KeyObject } from 'node:crypto';
import type { Table as ArrowTable } from 'apache-arrow';
import { toArrow } from '../output/arrow-table.js';
import type { ResultTable } from '../output/table.js';
import { builtinPlugins } from '../plugins/index.js';
import type { InspectedGuest } from '../qemu/guest-endpoints.js';
import {
  runPluginsOnGuest,
  type AttachedSession,
  type PluginRequest,
  type PluginsRun,
  type RunOnGuestOptions,
} from '../runner/run-plugins.js';
import type { RunLimits } from '../sdk/limits.js';
import type { PluginDefinition } from '../sdk/plugin.js';
import type { ProcHints } from '../sdk/procfs.js';
import type { AttachMemo, SessionOptions } from '../shadow/session.js';
import { stopResidentShadow } from '../shadow/resident.js';
import { TRANSPORT_CHOICES, type TransportChoice } from '../shadow/transport.js';
import { openTarget, type OpenedTarget, type TargetSpec } from '../targets/index.js';
import { DEFAULT_LAB_NAME } from '../targets/lab.js';
import { ServerConnection, ServerGoneError, serverSocketPath } from '../serve/client.js';
import {
  decodeTable,
  ProtocolError,
  STATUS_TIMEOUT_MS,
  type RunSettings,
  type ServerStatus,
} from '../serve/protocol.js';

/**
 * Which guest: a lab guest by name (`'lab'` is the default one, booted when it is not
 * running; any other name must be running), a QEMU that vmi did not start by its QMP
 * socket, or a capture file (verified, then replayed in a disposable clone).
 */
export type GuestSpec =
  string | { lab: string } | { qmp: string } | { capture: string; trust?: readonly KeyObject[] };

export interface OpenGuestOptions {
  /** How batches reach the shadow: 'doorbell' (shared RAM), 'trap' (VM stopped), 'auto' (default). */
  transport?: TransportChoice;
  /** Progress lines (booting, attaching, bootstrapping a shadow); default: none. */
  progress?: (message: string) => void;
  /** Leave the resident shadow in the guest at close() (the next vmi reuses it). Default false. */
  keepShadow?: boolean;
  /** Borrow this task first when a shadow is created (its PID in its own PID namespace). */
  preferVictimPid?: number;
  /** Keep the shadow's own rows (marked in a VMI_SHADOW column); default: left out. */
  includeShadow?: boolean;
  /** Run even when the shadow's context is not the guest's verified root context. */
  acceptPartialContext?: boolean;
  /** Let plugins that declare write needs make those calls (default: read-only). */
  allowWrite?: boolean;
  /** Bounds on each plugin run (bytes read, rows, wall ms); defaults: DEFAULT_RUN_LIMITS. */
  runLimits?: Partial<RunLimits>;
  /**
   * While another vmi (or another Guest of this process) holds the guest: wait this long
   * for its turn, in ms (0: fail at once with GuestBusyError). Default 60 000. Each run
   * holds the guest only for its own duration, so several clients take turns.
   */
  lockWaitMs?: number;
  /**
   * Use a vmi server of this guest (`vmi serve`, or a `vmi watch` exposing it) when one is
   * running: calls then go through its socket and share its resident shadow (docs/serve.md).
   * Default true (VMI_SERVER=off in the environment turns it off); false always attaches here.
   * Through a server, plugins are named (built-ins), and the server's own options apply
   * (its transport and shadow lifetime; `keepShadow` and `close()` do not stop its shadow).
   */
  server?: boolean;
  /**
   * Keep the shadow spinning through each call (default true: fastest batches). false: it
   * sleeps whenever it has no batch and each batch wakes it (~1 ms more per batch, much
   * less guest CPU while the host parses); `vmi watch` uses false.
   */
  holdAwake?: boolean;
}

/** One plugin to run: a built-in's name or a plugin definition (definePlugin), with its options. */
export interface PluginCall {
  plugin: string | PluginDefinition;
  /** Option values by option name (as in `plugins run NAME --opt v`); checked by the SDK. */
  options?: Record<string, unknown>;
}

/** What one plugin produced. */
export interface PluginResult {
  plugin: string;
  /**
   * The table as Apache Arrow (built on first access): typed columns, field metadata
   * `vmi.type` / `vmi.description`, schema metadata `vmi.*` (= `metadata` + plugin, errors).
   */
  readonly arrow: ArrowTable;
  /** The same table as plain cells (numbers, bigints, strings, Dates, absent values). */
  table: ResultTable;
  /** guest, kernel.release, hostname, collection.time (ISO), collection.transport, shadow.*, source. */
  metadata: Record<string, string>;
  /** Problems that cost rows (the table is still complete for everything else). */
  errors: string[];
}

/** Timing of one call, in milliseconds. */
export interface CallTiming {
  /** Attach: re-checking a resident shadow, or bootstrapping one (first call, or a lost shadow). */
  attachMs: number;
  /** Per plugin: its run (guest work and parsing). */
  pluginMs: Record<string, number>;
  /** From the call to its results, detach included. */
  totalMs: number;
  /** Of the attach: re-checking (or, fresh, establishing) the shadow's root context. */
  contextMs: number;
  /** Inside the guest round trips: encode, ring, wait, decode (without the plugins' parsing). */
  runMs: number;
  /** Guest entries (batches) and syscalls the call made. */
  batches: number;
  calls: number;
  /** The call reused a resident shadow (no bootstrap). */
  reused: boolean;
  /**
   * How the shadow's context was checked: 'fresh' (bootstrapped), 'full' (a resident
   * shadow re-verified whole), 'quick' (this Guest's own last call verified it and no
   * other vmi held the guest since: the part a guest process can change, checked with the
   * first batch; docs/api.md).
   */
  contextCheck: 'fresh' | 'full' | 'quick';
  /** The shadow's PID in the guest. */
  shadowPid: number;
}

/** Several plugins through one attach. */
export interface GuestRun {
  /** One entry per call, in order: its result, or undefined where the plugin failed. */
  results: (PluginResult | undefined)[];
  /** Plugins that threw (each costs its own result only). */
  failures: { plugin: string; index: number; message: string; error: unknown }[];
  timing: CallTiming;
}

/** The plugin name is not a built-in plugin. */
export class UnknownPluginError extends Error {
  override name = 'UnknownPluginError';
}

/** A plugin that threw (run() of a single plugin); `cause` is its error. */
export class PluginRunError extends Error {
  override name = 'PluginRunError';
}

/** The guest was closed: no more calls. */
export class GuestClosedError extends Error {
  override name = 'GuestClosedError';
}

/** Test seam: how each call attaches (default: the shadow engine). */
export interface GuestInternals {
  attach?: (guest: InspectedGuest, opts: SessionOptions) => Promise<AttachedSession>;
  stopShadow?: (guest: InspectedGuest) => Promise<unknown>;
}

/** A server that this Guest sends its calls to (openGuest found one for the guest). */
export interface RemoteBackend {
  conn: ServerConnection;
  name: string;
  serverPid: number;
  /** What openGuest was asked for: opened here if the server goes away. */
  spec: GuestSpec;
}

/** A guest opened for plugin runs. Calls are serialized; close() once done. */
export class Guest {
  private closed = false;
  /** The tail of the call queue: one attach at a time (the engine holds one lock per guest). */
  private queue: Promise<unknown> = Promise.resolve();
  /** A call has attached: there may be a resident shadow of ours to remove at close(). */
  private attached = false;
  /**
   * A call of this Guest bootstrapped the resident shadow. One it found is removed at
   * close() too, unless a live vmi server (`vmi serve`, `vmi watch`) of the guest is using it.
   */
  private ownsShadow = false;
  /** What openGuest was asked for (to find a server of the guest at close()). */
  private spec: GuestSpec | undefined;
  /** What the last call verified, for the next one while no other vmi takes the guest. */
  private readonly memo: AttachMemo = {};
  /** The last process listing, read ahead from by the next run's readProcesses (ProcHints). */
  private readonly procHints: ProcHints = {};

  /** @internal use openGuest */
  constructor(
    private target: OpenedTarget | undefined,
    private readonly opts: OpenGuestOptions = {},
    private readonly internals: GuestInternals = {},
    private remote?: RemoteBackend,
  ) {}

  /** The guest's name (lab guest name, QEMU's -name, or the capture's guest). */
  get name(): string {
    return this.remote ? this.remote.name : this.opened.guest.name;
  }

  /** The pid of the vmi server the calls go through, or undefined when they run here. */
  get serverPid(): number | undefined {
    return this.remote?.serverPid;
  }

  private get opened(): OpenedTarget {
    if (!this.target) throw new Error('internal: a remote Guest has no target of its own');
    return this.target;
  }

  /** Runs one plugin; throws PluginRunError if it fails, UnknownPluginError for a bad name. */
  async run(plugin: string | PluginDefinition, options: Record<string, unknown> = {}): Promise<PluginResult> {
    const r = await this.runAll([{ plugin, options }]);
    const f = r.failures[0];
    if (f) throw new PluginRunError(`${f.plugin}: ${f.message}`, { cause: f.error });
    return r.results[0]!;
  }

  /** Runs several plugins through one attach; one plugin's failure costs its own result. */
  runAll(calls: readonly PluginCall[]): Promise<GuestRun> {
    return this.runAllWith(calls, {});
  }

  /**
   * @internal runAll with a client's settings in place of this Guest's own (the vmi server
   * applies those a `run` request carries: src/serve/protocol.ts RunSettings).
   */
  async runAllWith(calls: readonly PluginCall[], settings: RunSettings): Promise<GuestRun> {
    if (this.closed) throw new GuestClosedError(`guest ${this.name} is closed`);
    const requests = calls.map((c) => ({ plugin: resolvePlugin(c.plugin), options: c.options ?? {} }));
    if (this.remote) {
      const remote = this.remote;
      const named = requests.map((r) => {
        if (!builtinPlugins.includes(r.plugin))
          throw new UnknownPluginError(
            `${r.plugin.name}: through the vmi server of ${remote.name} only built-in plugins run by name; open the guest with { server: false } to run a plugin definition`,
          );
        return { plugin: r.plugin.name, options: r.options };
      });
      // The options that shape a run travel with it: the server applies them to this
      // request as this process would (its transport and shadow stay the server's).
      const sent = this.remoteSettings();
      return this.serialized(async () => {
        // An earlier call in the queue may have left the server already.
        if (this.remote === remote) {
          try {
            return decodeGuestRun(
              await remote.conn.request({ op: 'run', calls: named, ...(sent ? { settings: sent } : {}) }),
            );
          } catch (e) {
            // The server went away (killed, stopped): go on here, as the CLI does. A call
            // that may write is not run a second time.
            if (!(e instanceof ServerGoneError) || this.opts.allowWrite) throw e;
            await this.leaveServer(remote, e);
          }
        }
        return this.runHere(requests, settings);
      });
    }
    return this.serialized(() => this.runHere(requests, settings));
  }

  /** Whether a vmi server of another process answers for this guest now (it uses the shadow). */
  private async anotherServerServes(): Promise<boolean> {
    if (!this.spec) return false;
    const found = await findServer(this.spec);
    if (!found) return false;
    found.conn.close();
    return found.serverPid !== process.pid;
  }

  /** @internal openGuest records what it opened. */
  openedFrom(spec: GuestSpec): this {
    this.spec = spec;
    return this;
  }

  /** Opens the guest in this process after its server went away. */
  private async leaveServer(remote: RemoteBackend, why: ServerGoneError): Promise<void> {
    remote.conn.close();
    this.opts.progress?.(`${why.message}: opening the guest here`);
    const progress = this.opts.progress;
    this.target = await openTarget(targetSpec(remote.spec), progress ? { progress } : {});
    this.remote = undefined;
  }

  /** One call in this process, on this Guest's own target. */
  private async runHere(requests: readonly PluginRequest[], settings: RunSettings): Promise<GuestRun> {
    const t0 = performance.now();
    const run = await runPluginsOnGuest(this.opened.guest, requests, {
      ...this.runOptions(),
      ...settings,
      ...(settings.runLimits || this.opts.runLimits
        ? { runLimits: { ...this.opts.runLimits, ...settings.runLimits } }
        : {}),
    });
    this.attached = true;
    if (!run.session.reused) this.ownsShadow = true;
    return toGuestRun(run, performance.now() - t0);
  }

  /**
   * @internal The vmi server's path for a `plugins run` command line: its requests (pack
   * runners included) with the command's own options, in this Guest's queue; the shadow
   * stays resident. Returns the runner's result, as `vmi plugins run` reports it.
   */
  runRequests(requests: readonly PluginRequest[], options: RunOnGuestOptions): Promise<PluginsRun> {
    return this.serialized(async () => {
      const run = await runPluginsOnGuest(this.opened.guest, requests, {
        ...this.runOptions(),
        ...options,
        keepResident: true,
      });
      this.attached = true;
      if (!run.session.reused) this.ownsShadow = true;
      return run;
    });
  }

  /**
   * Detaches for good: removes the resident shadow (unless `keepShadow`), then closes the
   * target (a capture's clone is destroyed; a lab or foreign guest keeps running). Safe
   * to call twice; waits for a call in flight.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    if (this.remote) {
      // The server's shadow is the server's: only the connection ends here.
      this.remote.conn.close();
      return;
    }
    const target = this.opened;
    try {
      // A replay clone is thrown away whole: no shadow to stop in it.
      if (
        this.attached &&
        !this.opts.keepShadow &&
        !target.guest.captureId &&
        (this.ownsShadow || !(await this.anotherServerServes()))
      ) {
        const stop =
          this.internals.stopShadow ?? ((g) => stopResidentShadow(g, { progress: this.opts.progress }));
        await stop(target.guest);
      }
    } finally {
      await target.close();
    }
  }

  /** This Guest's options that a server applies per request; undefined when all default. */
  private remoteSettings(): RunSettings | undefined {
    const o = this.opts;
    const out: RunSettings = {
      ...(o.runLimits ? { runLimits: { ...o.runLimits } } : {}),
      ...(o.includeShadow !== undefined ? { includeShadow: o.includeShadow } : {}),
      ...(o.acceptPartialContext !== undefined ? { acceptPartialContext: o.acceptPartialContext } : {}),
      ...(o.allowWrite !== undefined ? { allowWrite: o.allowWrite } : {}),
    };
    return Object.keys(out).length > 0 ? out : undefined;
  }

  private runOptions(): RunOnGuestOptions {
    const o = this.opts;
    return {
      keepResident: true,
      ...(o.transport ? { transport: o.transport } : {}),
      ...(o.progress ? { progress: o.progress } : {}),
      ...(o.preferVictimPid !== undefined ? { preferVictimPid: o.preferVictimPid } : {}),
      ...(o.includeShadow ? { includeShadow: true } : {}),
      ...(o.acceptPartialContext ? { acceptPartialContext: true } : {}),
      ...(o.allowWrite ? { allowWrite: true } : {}),
      ...(o.runLimits ? { runLimits: o.runLimits } : {}),
      ...(o.lockWaitMs !== undefined ? { lockWaitMs: o.lockWaitMs } : {}),
      ...(o.holdAwake !== undefined ? { holdAwake: o.holdAwake } : {}),
      ...(this.internals.attach ? { attach: this.internals.attach } : {}),
      reuse: this.memo,
      procHints: this.procHints,
    };
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new GuestClosedError(`guest ${this.name} is closed`));
    const next = this.queue.then(fn, fn);
    // The tail settles to nothing: holding the last run's result (its tables, their
    // strings and file bytes) until the next call ended made the garbage collector copy
    // it at every collection in between.
    this.queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }
}

/**
 * Opens a guest. Errors: the lab's TargetError (no running lab guest of that name),
 * ForeignGuestError (QMP socket missing, guest not running), capture verification errors;
 * nothing is attached yet (the first call attaches).
 */
export async function openGuest(spec: GuestSpec, opts: OpenGuestOptions = {}): Promise<Guest> {
  targetSpec(spec); // a bad spec throws before anything is opened
  if (opts.transport !== undefined && !TRANSPORT_CHOICES.includes(opts.transport))
    throw new TypeError(
      `openGuest: transport must be one of ${TRANSPORT_CHOICES.join(', ')}; got ${String(opts.transport)}`,
    );
  const remote =
    opts.server === false || process.env.VMI_SERVER === 'off' ? undefined : await findServer(spec);
  if (remote) {
    opts.progress?.(
      `through the vmi server of ${remote.name} (pid ${remote.serverPid}, ${remote.conn.path})`,
    );
    return new Guest(undefined, opts, {}, remote);
  }
  const target = await openTarget(targetSpec(spec), opts.progress ? { progress: opts.progress } : {});
  return new Guest(target, opts).openedFrom(spec);
}

/**
 * The running vmi server of a lab guest or a foreign QEMU, connected; undefined when there
 * is none (no socket, a stale one, or a server that does not answer status).
 */
async function findServer(spec: GuestSpec): Promise<RemoteBackend | undefined> {
  const t = targetSpec(spec);
  if (t.kind === 'capture') return undefined;
  const path = serverSocketPath(t.kind === 'lab' ? { lab: t.guest ?? DEFAULT_LAB_NAME } : { qmp: t.socket });
  const conn = await ServerConnection.connect(path).catch(() => undefined);
  if (!conn) return undefined;
  try {
    const status = (await conn.request({ op: 'status' }, undefined, STATUS_TIMEOUT_MS))
      .status as ServerStatus;
    conn.unref();
    return { conn, name: status.guest, serverPid: status.pid, spec };
  } catch {
    conn.close();
    return undefined;
  }
}

/** A `run` reply of a vmi server as a GuestRun (tables checked as they are decoded). */
function decodeGuestRun(reply: Record<string, unknown>): GuestRun {
  const { results, failures, timing } = reply as {
    results: unknown[];
    failures: { plugin: string; index: number; message: string }[];
    timing: CallTiming;
  };
  if (!Array.isArray(results) || !Array.isArray(failures) || typeof timing !== 'object')
    throw new ProtocolError('a malformed run reply');
  return {
    results: results.map((r) => (r ? pluginResult(decodeTable((r as { table: unknown }).table)) : undefined)),
    failures: failures.map((f) => ({ ...f, error: new PluginRunError(f.message) })),
    timing,
  };
}

/** The targets layer's spec for a GuestSpec. */
export function targetSpec(spec: GuestSpec): TargetSpec {
  // Checked here too: a program in plain JavaScript gets no help from the types.
  const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
  if (str(spec)) return { kind: 'lab', guest: spec };
  if (typeof spec === 'object' && spec !== null) {
    if ('lab' in spec && str(spec.lab)) return { kind: 'lab', guest: spec.lab };
    if ('qmp' in spec && str(spec.qmp)) return { kind: 'qmp', socket: spec.qmp };
    if ('capture' in spec && str(spec.capture))
      return { kind: 'capture', path: spec.capture, ...(spec.trust ? { trust: spec.trust } : {}) };
  }
  throw new TypeError(
    `openGuest: the guest must be a lab guest's name, { lab: NAME }, { qmp: SOCKET } or { capture: FILE }; got ${describeValue(spec)}`,
  );
}

function describeValue(v: unknown): string {
  if (v === null || typeof v !== 'object') return String(v === '' ? "''" : v);
  return `an object with ${Object.keys(v).length > 0 ? `keys ${Object.keys(v).join(', ')}` : 'no keys'}`;
}

/** A built-in plugin by name, or the definition itself. */
export function resolvePlugin(plugin: string | PluginDefinition): PluginDefinition {
  if (typeof plugin === 'object' && plugin !== null && typeof plugin.run === 'function') return plugin;
  if (typeof plugin !== 'string')
    throw new UnknownPluginError(
      `a plugin is a built-in's name or a plugin definition (definePlugin); got ${describeValue(plugin)}`,
    );
  const found = builtinPlugins.find((p) => p.name === plugin || p.volatilityName === plugin);
  if (!found) {
    throw new UnknownPluginError(
      `no built-in plugin named '${plugin}' (built-ins: ${builtinPlugins.map((p) => p.name).join(', ')})`,
    );
  }
  return found;
}

function toGuestRun(run: PluginsRun, totalMs: number): GuestRun {
  return {
    results: run.byRequest.map((t) => (t ? pluginResult(t) : undefined)),
    failures: run.failures.map((f) => ({ ...f })),
    timing: {
      attachMs: run.session.attachMs,
      pluginMs: { ...run.pluginMs },
      totalMs,
      contextMs: run.session.contextMs,
      runMs: run.session.runMs,
      batches: run.session.batches,
      calls: run.session.calls,
      reused: run.session.reused,
      contextCheck: run.session.contextCheck,
      shadowPid: run.session.shadowPid,
    },
  };
}

function pluginResult(table: ResultTable): PluginResult {
  let arrow: ArrowTable | undefined;
  return {
    plugin: table.plugin,
    table,
    metadata: table.metadata,
    errors: table.errors,
    get arrow() {
      return (arrow ??= toArrow(table));
    },
  };
}
