import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import type { ResultTable } from '../output/table.js';
import { runPlugin, type PluginDefinition } from '../sdk/plugin.js';
import { RedirectSession, type SessionStats } from '../shadow/session.js';
import type { TransportName } from '../shadow/transport.js';

export interface PluginRequest {
  plugin: PluginDefinition;
  /** Raw option values for this plugin (validated by the SDK). */
  options: Record<string, unknown>;
}

export interface PluginsRun {
  tables: ResultTable[];
  session: SessionStats;
  /** Milliseconds spent in each plugin's run (guest work and parsing). */
  pluginMs: Record<string, number>;
}

export interface RunOnGuestOptions {
  transport?: TransportName | 'auto';
  progress?: (message: string) => void;
}

/**
 * Runs several plugins against one live guest through a single attach: one shadow
 * serves them all, and it is gone again when this returns (or throws).
 */
/** A guest to inspect: its endpoints, plus what the caller knows of it for metadata. */
export type InspectedGuest = GuestEndpoints & { kernelRelease?: string; captureId?: string };

export async function runPluginsOnGuest(
  guest: InspectedGuest,
  requests: readonly PluginRequest[],
  opts: RunOnGuestOptions = {},
): Promise<PluginsRun> {
  const session = await RedirectSession.attach(guest, {
    transport: opts.transport,
    onProgress: opts.progress,
  });
  const tables: ResultTable[] = [];
  const pluginMs: Record<string, number> = {};
  try {
    for (const req of requests) {
      const t0 = performance.now();
      const { table } = await runPlugin(req.plugin, {
        executor: session,
        options: req.options,
        progress: opts.progress,
      });
      pluginMs[req.plugin.name] = performance.now() - t0;
      table.metadata = {
        ...table.metadata,
        guest: guest.name,
        ...(guest.kernelRelease ? { 'kernel.release': guest.kernelRelease } : {}),
        ...(guest.captureId ? { 'capture.id': guest.captureId } : {}),
        'collection.time': new Date().toISOString(),
        'collection.transport': session.stats.transport,
        source: guest.captureId ? 'capture' : 'live',
      };
      tables.push(table);
    }
  } finally {
    await session.detach();
  }
  return { tables, session: session.stats, pluginMs };
}
