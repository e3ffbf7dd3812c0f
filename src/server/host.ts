/**
 * Serving a guest: open it (an API Guest that never itself goes through a server), make
 * its shadow resident, and listen on the guest's server socket. Used by `vmi serve` and by
 * `vmi watch` (which exposes the guest it watches).
 */
import { openGuest, type Guest, type OpenGuestOptions } from '../api/guest.js';
import { DEFAULT_LAB_NAME } from '../lab/lab.js';
import { cliHandler, type RunPlanner, type ServedGuest } from './cli-request.js';
import { serverSocketPath } from '../serve/client.js';
import { clearStaleSocket, VmiServer } from './server.js';

export interface ServingGuest {
  guest: Guest;
  server: VmiServer;
  /** The shadow's pid after the warm-up run (with `warm`). */
  shadowPid?: number;
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
  return {
    guest,
    server,
    ...(shadowPid !== undefined ? { shadowPid } : {}),
    close: () =>
      (closing ??= (async () => {
        try {
          await server.close();
        } finally {
          await guest.close();
        }
      })()),
  };
}
