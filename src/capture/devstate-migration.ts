/**
 * The migration of a capture's device state, in both directions: `migrate` out of the
 * source guest (capture create) and `migrate-incoming` into a replay clone. One wait,
 * with each direction's own messages; a timed-out outgoing migration is cancelled.
 */
import { waitForMigration } from '../qemu/migration.js';
import type { QmpClient } from '../qemu/qmp.js';
import { CaptureError, DEVSTATE_PART } from './manifest.js';

export type MigrationDirection = 'outgoing' | 'incoming';

/** Waits for the device-state migration to complete; a CaptureError otherwise. */
export async function awaitDevstateMigration(
  qmp: QmpClient,
  direction: MigrationDirection,
  timeoutMs: number,
): Promise<void> {
  const end = await waitForMigration(qmp, timeoutMs);
  if (end.status === 'completed') return;
  const outgoing = direction === 'outgoing';
  if (end.status === 'timeout') {
    if (outgoing) await qmp.execute('migrate_cancel').catch(() => undefined);
    throw new CaptureError(
      `${DEVSTATE_PART}: ${outgoing ? 'migration' : 'restore'} did not complete within ${timeoutMs} ms`,
    );
  }
  throw new CaptureError(
    outgoing
      ? `${DEVSTATE_PART}: migration ${end.status}: ${end.detail ?? 'no detail'}`
      : `${DEVSTATE_PART}: QEMU refused the device state: ${end.detail ?? end.status}`,
  );
}
