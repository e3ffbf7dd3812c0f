/**
 * A `vmi plugins run …` command line served by a vmi server: parsed by the command itself
 * (PluginsRun.plan, given by the command that starts the server, so flags, plugin options and errors are exactly the command's), run on
 * the server's Guest, summarised as the command would (summarizeRun). The client prints
 * the outcome with the command's own tail (src/cli/emit-run.ts).
 *
 * Command lines the server does not serve fall back (the client runs the command itself):
 * --list, --help, --capture, several guests, another guest than the server's, and any
 * command line the parser refuses (so that its error reads exactly as without a server).
 */
import { resolve } from 'node:path';
import type { Guest } from '../api/guest.js';
import type { RunPlan } from '../cli/run-plan.js';
import { DEFAULT_LAB_NAME } from '../lab/lab.js';
import { summarizeRun } from '../runner/inspect.js';
import type { CliOutcome } from '../serve/protocol.js';
import type { CliHandler } from './server.js';

/** Which guest a server holds, as a command line would name it. */
export type ServedGuest = { lab: string } | { qmp: string };

/** Parses a `plugins run` command line as the command does: `new PluginsRun(argv, config).plan()`. */
export type RunPlanner = (argv: string[]) => Promise<RunPlan>;

export function cliHandler(
  planner: RunPlanner,
  guest: Guest,
  served: ServedGuest,
  log?: (line: string) => void,
): CliHandler {
  return async ({ argv, cwd }, progress) => {
    const started = performance.now();
    const home = process.cwd();
    // Relative paths of the command line (-o, --qmp, --yara-file …) are the client's.
    process.chdir(cwd);
    try {
      let plan;
      try {
        plan = await planner([...argv]);
      } catch (e) {
        return { fallback: `command line not served: ${(e as Error).message}` };
      }
      if ('list' in plan) return { fallback: '--list' };
      const { target, requests, options } = await plan.prepare(progress);
      const mismatch = notThisGuest(target, served);
      if (mismatch) return { fallback: mismatch };
      const { timing, bootProgress: _boot, ...runOptions } = options;
      const parsedMs = performance.now() - started;
      const run = await guest.runRequests(requests, runOptions);
      log?.(
        `  parse ${parsedMs.toFixed(1)} ms, attach ${run.session.attachMs.toFixed(1)} ms, ` +
          Object.entries(run.pluginMs)
            .map(([n, ms]) => `${n} ${ms.toFixed(1)} ms`)
            .join(', '),
      );
      const r = summarizeRun(run, { timing }, started);
      const out: CliOutcome = {
        tables: r.tables,
        problems: r.problems,
        notes: r.notes,
        exitCode: r.exitCode,
        format: plan.format,
        mode: plan.mode,
        // resolve() drops a trailing '/', which means "a directory" to writeOutput.
        ...(plan.output !== undefined
          ? { output: resolve(cwd, plan.output) + (/\/$/.test(plan.output) ? '/' : '') }
          : {}),
      };
      return out;
    } finally {
      process.chdir(home);
    }
  };
}

/** Why a command line's target is not the served guest, or undefined when it is. */
function notThisGuest(
  target: { kind: string; guests?: readonly string[]; allGuests?: boolean; socket?: string },
  served: ServedGuest,
): string | undefined {
  if (target.kind === 'lab') {
    if (target.allGuests || (target.guests?.length ?? 0) > 1) return 'several guests';
    const name = target.guests?.[0] ?? DEFAULT_LAB_NAME;
    return 'lab' in served && served.lab === name ? undefined : `guest ${name} is not the served guest`;
  }
  if (target.kind === 'qmp' && target.socket !== undefined)
    return 'qmp' in served && resolve(served.qmp) === resolve(target.socket)
      ? undefined
      : 'another QMP socket';
  return `${target.kind} targets are not served`;
}
