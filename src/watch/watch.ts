/**
 * `vmi watch` without the CLI: opens each guest through the API, runs one watch loop per
 * guest concurrently, and closes every guest when the watch ends (the signal aborts, the
 * reader of the events went away, or a guest failed for good). Closing removes the
 * resident shadow unless `keepShadow`.
 */
import { openGuest, type GuestSpec, type OpenGuestOptions } from '../api/index.js';
import { OutputClosedError } from '../output/sink.js';
import type { WatchEvent } from './events.js';
import { makeClock } from './events.js';
import type { SourceName } from './sources.js';
import { watchLoop, type WatchedGuest, type WatchLoopStats } from './watcher.js';

export const MIN_INTERVAL_MS = 50;
export const MAX_INTERVAL_MS = 1000;

export interface WatchOptions {
  guests: readonly GuestSpec[];
  /** Snapshot interval, ms (MIN_INTERVAL_MS..MAX_INTERVAL_MS). */
  intervalMs: number;
  sources?: readonly SourceName[];
  /** Leave each guest's resident shadow in place at the end. */
  keepShadow?: boolean;
  /** Whole plugins at every tick instead of incremental snapshots (watcher.ts). */
  fullSnapshots?: boolean;
  transport?: OpenGuestOptions['transport'];
  /** Ends the watch (SIGINT, SIGTERM). */
  signal: AbortSignal;
  emit(event: WatchEvent): Promise<void>;
  status?(message: string): void;
  /** Test seam: how a guest is opened (default: openGuest). */
  open?: (spec: GuestSpec, opts: OpenGuestOptions) => Promise<WatchedGuest & { close(): Promise<void> }>;
}

export interface WatchOutcome {
  /** The guest as named on the command line. */
  guest: string;
  stats?: WatchLoopStats;
  error?: Error;
}

export interface WatchResult {
  outcomes: WatchOutcome[];
  /** The reader of the events went away (EPIPE): not a failure. */
  outputClosed: boolean;
}

/**
 * Passes each distinct message once: every snapshot attaches, and its "attaching",
 * "reusing the resident shadow (pid N)" lines would repeat at every tick; a new shadow
 * (a new pid) still shows.
 */
export function firstTimes(fn: (message: string) => void): (message: string) => void {
  const seen = new Set<string>();
  return (m) => {
    if (seen.has(m)) return;
    seen.add(m);
    fn(m);
  };
}

/** A GuestSpec as the user named it, for status lines before the guest is open. */
export function specLabel(spec: GuestSpec): string {
  if (typeof spec === 'string') return spec;
  if ('lab' in spec) return spec.lab;
  if ('qmp' in spec) return spec.qmp;
  return spec.capture;
}

export async function watchGuests(opts: WatchOptions): Promise<WatchResult> {
  if (!(opts.intervalMs >= MIN_INTERVAL_MS && opts.intervalMs <= MAX_INTERVAL_MS)) {
    throw new RangeError(`interval ${opts.intervalMs} ms: from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS} ms`);
  }
  // One end for all guests: the caller's signal, or the events' reader going away.
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  opts.signal.addEventListener('abort', onAbort, { once: true });
  if (opts.signal.aborted) stop.abort();
  let outputClosed = false;
  const emit = async (e: WatchEvent): Promise<void> => {
    try {
      await opts.emit(e);
    } catch (err) {
      if (err instanceof OutputClosedError) {
        outputClosed = true;
        stop.abort();
        return;
      }
      throw err;
    }
  };
  const open = opts.open ?? openGuest;
  const now = makeClock();
  try {
    const outcomes = await Promise.all(
      opts.guests.map(async (spec): Promise<WatchOutcome> => {
        const label = specLabel(spec);
        let guest: (WatchedGuest & { close(): Promise<void> }) | undefined;
        try {
          guest = await open(spec, {
            keepShadow: opts.keepShadow ?? false,
            // The shadow sleeps while vmi parses: a watch's ticks are cheap for the guest.
            holdAwake: false,
            ...(opts.transport ? { transport: opts.transport } : {}),
            ...(opts.status ? { progress: firstTimes((m: string) => opts.status?.(`${label}: ${m}`)) } : {}),
          });
          opts.status?.(`${label}: watching every ${opts.intervalMs} ms`);
          const stats = await watchLoop(guest, {
            intervalMs: opts.intervalMs,
            ...(opts.sources ? { sources: opts.sources } : {}),
            signal: stop.signal,
            ...(opts.fullSnapshots ? { fullSnapshots: true } : {}),
            emit,
            ...(opts.status ? { status: opts.status } : {}),
            now,
          });
          return { guest: label, stats };
        } catch (err) {
          // Reported by the caller with the outcomes (the command: `vmi: error: guest NAME: …`).
          const error = err instanceof Error ? err : new Error(String(err));
          return { guest: label, error };
        } finally {
          if (guest) {
            await guest.close().catch((err: unknown) => {
              opts.status?.(
                `${label}: detaching failed: ${err instanceof Error ? err.message : String(err)}`,
              );
            });
          }
        }
      }),
    );
    return { outcomes, outputClosed };
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
  }
}

/**
 * `--interval` as the user writes it: `250ms`, `0.5s`, `1s`, or a bare number of
 * milliseconds. Throws RangeError outside MIN_INTERVAL_MS..MAX_INTERVAL_MS or when unparsable.
 */
export function parseInterval(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$/.exec(text);
  if (!m) throw new RangeError(`--interval '${text}': a duration such as 100ms, 0.5s or 1s`);
  const ms = Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  if (!(ms >= MIN_INTERVAL_MS && ms <= MAX_INTERVAL_MS)) {
    throw new RangeError(`--interval '${text}': from ${MIN_INTERVAL_MS} ms to ${MAX_INTERVAL_MS / 1000} s`);
  }
  return Math.round(ms);
}
