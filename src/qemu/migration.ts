/**
 * Waiting for a QEMU migration to end. Both directions, the outgoing `migrate` of a
 * capture and the incoming `migrate-incoming` of a replay, report through query-migrate.
 */
import type { QmpClient } from './qmp.js';

export type MigrationEnd =
  { status: 'completed' } | { status: 'failed' | 'cancelled'; detail?: string } | { status: 'timeout' };

/** What query-migrate returns (the fields vmi reads). */
export type MigrateInfo = { status?: string; 'error-desc'?: string };

/** Polls query-migrate until the migration completes, fails or is cancelled, or `timeoutMs` passes. */
export async function waitForMigration(qmp: QmpClient, timeoutMs: number): Promise<MigrationEnd> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const st = await qmp.execute<MigrateInfo>('query-migrate');
    if (st.status === 'completed') return { status: 'completed' };
    if (st.status === 'failed' || st.status === 'cancelled') {
      return { status: st.status, detail: st['error-desc'] };
    }
    if (Date.now() > end) return { status: 'timeout' };
    await new Promise((r) => setTimeout(r, 1));
  }
}
