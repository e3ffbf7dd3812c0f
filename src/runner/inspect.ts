import type { KeyObject } from 'node:crypto';
import type { ResultTable } from '../output/table.js';
import { openTarget, withTarget, type TargetSpec } from '../targets/index.js';
import { resolveLiveTargets } from '../targets/lab.js';
import { runPluginsOnGuests } from './multi-guest.js';
import {
  runPluginsOnGuest,
  type PluginRequest,
  type PluginsRun,
  type RunOnGuestOptions,
} from './run-plugins.js';

/** Which guest(s) an invocation inspects. */
export type InspectTarget =
  | { kind: 'lab'; guests: readonly string[]; allGuests: boolean }
  | { kind: 'qmp'; socket: string }
  | { kind: 'capture'; path: string; trust?: readonly KeyObject[] };

export interface InspectOptions extends RunOnGuestOptions {
  /** Adds timing lines to the result's notes. */
  timing?: boolean;
  /** Progress of booting the default lab guest (shown even when `progress` is not). */
  bootProgress?: (message: string) => void;
}

/** What an invocation produced, ready for a command to print. */
export interface InspectResult {
  tables: ResultTable[];
  /**
   * One entry per request, in request order: its table (with a leading GUEST column when
   * several guests were inspected), or undefined where the plugin failed on a single guest.
   */
  byRequest: (ResultTable | undefined)[];
  /** One line each, for `vmi: error: …` (a failed plugin or guest). */
  problems: string[];
  /** One line each, for `vmi: …` (timings). */
  notes: string[];
  /** 0 = complete, 3 = partial (some plugin or guest failed), 1 = nothing produced. */
  exitCode: 0 | 1 | 3;
}

const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, ' ');

/**
 * Runs plugin requests against a target: one live lab guest (booted on demand when it
 * is the default one), several lab guests concurrently, a foreign QEMU by its QMP socket,
 * or a capture replayed in a disposable clone.
 */
export async function inspect(
  target: InspectTarget,
  requests: readonly PluginRequest[],
  opts: InspectOptions = {},
): Promise<InspectResult> {
  const started = performance.now();
  if (target.kind === 'lab' && (target.allGuests || target.guests.length > 1)) {
    const targets = await resolveLiveTargets({ guests: [...target.guests], allGuests: target.allGuests });
    const multi = await runPluginsOnGuests(targets, requests, opts);
    const problems: string[] = [];
    const notes: string[] = [];
    for (const o of multi.outcomes) {
      if (o.error) problems.push(`guest ${o.guest}: ${oneLine(o.error.message)}`);
      else if (opts.timing) notes.push(`guest ${o.guest}: ${o.ms.toFixed(1)} ms`);
      for (const f of o.run?.failures ?? [])
        problems.push(`guest ${o.guest}: ${f.plugin}: ${oneLine(f.message)}`);
    }
    if (opts.timing) notes.push(`total ${(performance.now() - started).toFixed(1)} ms`);
    const exitCode = multi.failed ? 1 : problems.length > 0 ? 3 : 0;
    return { tables: multi.tables, byRequest: multi.tables, problems, notes, exitCode };
  }

  // One guest: open it (whatever kind), run, close. Booting the default lab guest has its own progress.
  const spec: TargetSpec = target.kind === 'lab' ? { kind: 'lab', guest: target.guests[0] } : target;
  const progress = target.kind === 'lab' ? (opts.bootProgress ?? opts.progress) : opts.progress;
  const openOpts = { progress, ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}) };
  const run: PluginsRun = await withTarget(openTarget(spec, openOpts), (guest) =>
    runPluginsOnGuest(guest, requests, opts),
  );
  return summarizeRun(run, opts, started);
}

/**
 * What `vmi plugins run` reports for one guest's run: the problems (failed plugins), the
 * notes (the trap fall-back; timings with `timing`) and the exit code. Shared with the vmi
 * server (src/serve), so a command served there reports exactly the same lines.
 * `started` is the performance.now() at which the command's work began.
 */
export function summarizeRun(run: PluginsRun, opts: { timing?: boolean }, started: number): InspectResult {
  // A plugin that threw costs its own table: the others are still returned.
  const problems = run.failures.map((f) => `${f.plugin}: ${oneLine(f.message)}`);
  const notes: string[] = [];
  // The doorbell was possible in principle but refused (no ptrace rights over QEMU...):
  // said on every run, not only with --timing, since it costs the user speed.
  if (run.session.fallback) notes.push(`transport trap, not doorbell: ${oneLine(run.session.fallback)}`);
  if (opts.timing) {
    const s = run.session;
    const plugins = Object.entries(run.pluginMs)
      .map(([n, ms]) => `${n} ${ms.toFixed(1)} ms`)
      .join(', ');
    notes.push(
      `attach ${s.attachMs.toFixed(1)} ms (${s.transport}, memory ${s.memory}, shadow pid ${s.shadowPid}, borrowed pid ${s.victimPid}); ` +
        `${plugins}; ${s.batches} batches, ${s.calls} syscalls; total ${(performance.now() - started).toFixed(1)} ms`,
    );
  }
  const exitCode = problems.length === 0 ? 0 : run.tables.length > 0 ? 3 : 1;
  return { tables: run.tables, byRequest: run.byRequest, problems, notes, exitCode };
}
