/**
 * Running the same plugins on several guests at once: one attach per guest, all
 * concurrently, then one table per plugin with a leading GUEST column. A guest that
 * fails costs its own rows only; the others' results are kept.
 */
import type { ColumnSpec, RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import type { GuestTarget } from '../targets/target.js';
import {
  runPluginsOnGuest,
  type PluginRequest,
  type PluginsRun,
  type RunOnGuestOptions,
} from './run-plugins.js';

export const GUEST_COLUMN: ColumnSpec = {
  name: 'GUEST',
  type: 'utf8',
  description: 'Guest the row was read from',
};

export interface GuestOutcome {
  guest: string;
  run?: PluginsRun;
  error?: Error;
  /** Wall-clock milliseconds from resolve to detach for this guest. */
  ms: number;
}

export interface MultiGuestRun {
  /** One merged table per requested plugin, in request order. */
  tables: ResultTable[];
  outcomes: GuestOutcome[];
  /** True when some but not all guests failed. */
  partial: boolean;
  /** True when every guest failed. */
  failed: boolean;
}

/**
 * Merges per-guest results into one table per plugin: GUEST first, then the plugin's
 * columns; rows (and tree depths) concatenated in guest order; errors prefixed with the
 * guest's name. Failed guests contribute nothing here (pure).
 */
export function mergeGuestTables(
  requests: readonly PluginRequest[],
  outcomes: readonly GuestOutcome[],
): ResultTable[] {
  const ok = outcomes.filter((o): o is GuestOutcome & { run: PluginsRun } => o.run !== undefined);
  return requests.map((req, index) => {
    const parts = ok.map((o) => ({ guest: o.guest, table: o.run.byRequest[index] }));
    const first = parts.find((p) => p.table)?.table;
    const columns: ColumnSpec[] = [GUEST_COLUMN, ...(first?.columns ?? req.plugin.columns)];
    const rows: RowValue[][] = [];
    const errors: string[] = [];
    const anyDepths = parts.some((p) => p.table?.depths);
    const depths: number[] = [];
    const releases = new Set<string>();
    for (const { guest, table } of parts) {
      if (!table) continue;
      for (const r of table.rows) rows.push([guest, ...r]);
      if (anyDepths) depths.push(...(table.depths ?? table.rows.map(() => 0)));
      for (const e of table.errors) errors.push(`guest ${guest}: ${e}`);
      const rel = table.metadata['kernel.release'];
      if (rel) releases.add(rel);
    }
    const metadata: Record<string, string> = {
      ...(first?.metadata ?? {}),
      guest: parts.map((p) => p.guest).join(','),
    };
    if (releases.size > 0) metadata['kernel.release'] = [...releases].join(',');
    else delete metadata['kernel.release'];
    // Each guest had its own shadow: `a=812,b=90` (shadow-rows.ts).
    const shadows = parts.filter((p) => p.table?.metadata['shadow.pid']);
    if (shadows.length > 0) {
      metadata['shadow.pid'] = shadows.map((p) => `${p.guest}=${p.table!.metadata['shadow.pid']}`).join(',');
    }
    return {
      plugin: first?.plugin ?? req.plugin.name,
      columns,
      rows,
      ...(anyDepths ? { depths } : {}),
      errors,
      metadata,
    };
  });
}

/** Runs the plugins on every target concurrently and merges the results. */
export async function runPluginsOnGuests(
  targets: readonly GuestTarget[],
  requests: readonly PluginRequest[],
  opts: RunOnGuestOptions = {},
): Promise<MultiGuestRun> {
  const outcomes = await Promise.all(
    targets.map(async (t): Promise<GuestOutcome> => {
      const t0 = performance.now();
      const progress = opts.progress ? (m: string) => opts.progress?.(`${t.name}: ${m}`) : undefined;
      try {
        const guest = await t.resolve();
        const run = await runPluginsOnGuest(guest, requests, { ...opts, progress });
        return { guest: t.name, run, ms: performance.now() - t0 };
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        return { guest: t.name, error, ms: performance.now() - t0 };
      }
    }),
  );
  const failures = outcomes.filter((o) => o.error).length;
  return {
    tables: mergeGuestTables(requests, outcomes),
    outcomes,
    partial: failures > 0 && failures < outcomes.length,
    failed: failures === outcomes.length && outcomes.length > 0,
  };
}
