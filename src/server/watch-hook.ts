/**
 * `vmi watch` serves the guests it watches (docs/serve.md): a vmi server per lab guest, so that ad-hoc `vmi plugins run` calls on them share the watch's resident
 * shadow instead of queueing for the guest. The watch itself never goes through a server
 * (VMI_SERVER=off in its process: it must not become a client of its own socket).
 */
import type { GuestSpec } from '../api/guest.js';
import { TargetError } from '../api/index.js';
import type { TransportChoice } from '../shadow/transport.js';
import type { RunPlanner } from './cli-request.js';
import { serveGuest, type ServingGuest } from './host.js';
import { ServerRunningError } from './server.js';

export interface ExposeOptions {
  /** Parses `plugins run` command lines (the command's own parser). */
  planner: RunPlanner;
  keepShadow: boolean;
  transport: TransportChoice;
  /** The watch's stop: the servers stop accepting at once (the run in flight finishes). */
  signal: AbortSignal;
  status: (line: string) => void;
}

/** Starts serving every lab or QMP guest of the watch; close() stops them (idempotent). */
export function exposeWatchedGuests(
  specs: readonly GuestSpec[],
  opts: ExposeOptions,
): { close(): Promise<void> } {
  process.env.VMI_SERVER = 'off';
  const serving: Promise<ServingGuest | undefined>[] = specs.flatMap((spec) => {
    // Lab guests only: a foreign QEMU's QMP socket takes one client, and the watch holds it.
    const lab = typeof spec === 'string' ? spec : 'lab' in spec ? spec.lab : undefined;
    if (lab === undefined) return [];
    const served = { lab };
    return [
      serveGuest(served, {
        planner: opts.planner,
        kind: 'watch',
        // The watch's shadow and this server's are the same resident shadow; whoever
        // closes last with keepShadow false removes it.
        guestOptions: { transport: opts.transport, keepShadow: opts.keepShadow },
        warm: false,
      }).then(
        (s) => {
          opts.status(`serving ${s.guest.name} to other vmi processes at ${s.server.socketPath}`);
          return s;
        },
        (e: Error) => {
          // A guest that is not running is the watch's own error, said once by it.
          if (!(e instanceof ServerRunningError) && !(e instanceof TargetError))
            opts.status(`not serving ${JSON.stringify(spec)}: ${e.message}`);
          return undefined;
        },
      ),
    ];
  });
  const stopAll = async (): Promise<void> => {
    for (const s of await Promise.all(serving)) await s?.server.close();
  };
  opts.signal.addEventListener('abort', () => void stopAll(), { once: true });
  let closing: Promise<void> | undefined;
  return {
    close: () =>
      (closing ??= (async () => {
        for (const s of await Promise.all(serving)) await s?.close().catch(() => undefined);
      })()),
  };
}
