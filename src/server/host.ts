/**
 * Serving a guest: open it (an API Guest that never itself goes through a server), make
 * its shadow resident, and listen on the guest's server socket. Used by `vmi serve` and by
 * `vmi watch` (which exposes the guest it watches).
 */
import { openGuest, type Guest, type OpenGuestOptions } from '../api/guest.js';
import { DEFAULT_LAB_NAME, findLabGuest } from '../lab/lab.js';
import { cliHandler, type RunPlanner, type ServedGuest } from './cli-request.js';
import { serverSocketPath } from '../serve/client.js';
import { clearStaleSocket, VmiServer } from './server.js';

export interface ServingGuest {
  guest: Guest;
  server: VmiServer;
  /** The shadow's pid after the warm-up run (with `warm`). */
  shadowPid?: number;
  /**
   * Starts looking (every GONE_POLL_MS, until close()) whether a served lab guest still
   * runs; resolves with a one-line reason once it does not (`vmi lab down`, QEMU exited).
   * Never rejects; never resolves for a foreign QEMU. Only `vmi serve` asks: a watch finds
   * its guest gone through its own snapshots.
   */
  whenGone(): Promise<string>;
  /** Stops the server (the request in flight finishes), then closes the guest. */
  close(): Promise<void>;
}

/** A GuestSpec of a lab name or a QMP socket as what a server serves. */
export function servedGuest(spec: string | { lab: string } | { qmp: string }): ServedGuest {
  if (typeof spec === 'string') return { lab: spec };
  return spec;
}

/**
 * Opens the guest and serves it. With `warm`, one cheap plugin run first bootstraps (or
 * re-checks) the resident shadow, so the first client pays no bootstrap. Throws
 * ServerRunningError when another server already serves this guest.
 */
export async function serveGuest(
  served: ServedGuest,
  opts: {
    /** Parses `plugins run` command lines (the command's own parser). */
    planner: RunPlanner;
    kind: 'serve' | 'watch';
    guestOptions: OpenGuestOptions;
    warm: boolean;
    log?: (line: string) => void;
  },
): Promise<ServingGuest> {
  const socketPath = serverSocketPath('lab' in served ? { lab: served.lab || DEFAULT_LAB_NAME } : served);
  // Refuse before touching the guest when another server already serves it.
  await clearStaleSocket(socketPath);
  const guest = await openGuest('lab' in served ? served.lab : served, {
    ...opts.guestOptions,
    server: false,
  });
  let server: VmiServer;
  let shadowPid: number | undefined;
  try {
    if (opts.warm) shadowPid = (await guest.runAll([{ plugin: 'banner' }])).timing.shadowPid;
    server = await VmiServer.listen({
      socketPath,
      guest,
      kind: opts.kind,
      cli: cliHandler(opts.planner, guest, served, opts.log),
      ...(opts.log ? { log: opts.log } : {}),
    });
  } catch (e) {
    await guest.close().catch(() => undefined);
    throw e;
  }
  let closing: Promise<void> | undefined;
  const stopWatching = new AbortController();
  return {
    guest,
    server,
    ...(shadowPid !== undefined ? { shadowPid } : {}),
    whenGone: () => guestGone(served, stopWatching.signal),
    close: () =>
      (closing ??= (async () => {
        stopWatching.abort();
        try {
          await server.close();
        } finally {
          await guest.close();
        }
      })()),
  };
}

/** How often a server looks whether its guest is still there, ms. */
export const GONE_POLL_MS = 1000;

/** See ServingGuest.gone; stops polling (and never resolves) once `signal` aborts. */
function guestGone(served: ServedGuest, signal: AbortSignal): Promise<string> {
  // Only a lab guest's own state counts (its guest.json and QEMU, as `vmi lab list` sees
  // them): the socket file may be moved aside for a moment without the guest going away.
  // A foreign QEMU that exits shows at the next request instead.
  if (!('lab' in served)) return new Promise(() => undefined);
  const name = served.lab || DEFAULT_LAB_NAME;
  return new Promise((resolve) => {
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void findLabGuest(name)
        .catch(() => true) // unreadable state: not known to be gone
        .then((running) => {
          busy = false;
          if (running || signal.aborted) return;
          clearInterval(timer);
          resolve(`lab guest ${name} is no longer running (vmi lab down?)`);
        });
    }, GONE_POLL_MS);
    timer.unref();
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  });
}
