/**
 * The one shape of every way to reach a guest (src/targets/{lab,qmp,capture}.ts):
 * `open(spec) → { guest, close() }`. The runner sees a guest's endpoints and a close,
 * never whether it is a lab guest, a foreign QEMU or a replayed capture.
 */
import type { InspectedGuest } from '../qemu/guest-endpoints.js';

/** A guest ready to attach to; close() undoes what opening it did (safe to call twice). */
export interface OpenedTarget {
  guest: InspectedGuest;
  close(): Promise<void>;
}

export interface OpenTargetOptions {
  /** Progress lines (booting a lab guest, enabling a gdbstub, starting a replay clone). */
  progress?: (message: string) => void;
  /** How long to wait (ms) while another vmi holds a foreign guest (its setup lock). */
  lockWaitMs?: number;
}

/** Runs `fn` on an opened target and always closes it. */
export async function withTarget<T>(
  opening: Promise<OpenedTarget>,
  fn: (guest: InspectedGuest) => Promise<T>,
): Promise<T> {
  const target = await opening;
  try {
    return await fn(target.guest);
  } finally {
    await target.close();
  }
}

/** One guest of a multi-guest run: its name (known up front) and how to reach it. */
export interface GuestTarget {
  name: string;
  /** Resolves the guest's endpoints (may fail: a guest that is not running). */
  resolve: () => Promise<InspectedGuest>;
}
