import { GuestConsole } from '../../../src/lab/console.js';
import type { LabGuest } from '../../../src/lab/lab.js';

/**
 * Runs one shell command in the guest over its serial console (ground truth from inside
 * the guest) and returns its output; a non-zero status is an error. The console takes
 * one client at a time, so it is closed again at once.
 */
export async function guestSh(guest: LabGuest, command: string): Promise<string> {
  const con = await GuestConsole.connect(guest.serialSocket);
  try {
    const r = await con.run(command, 60_000);
    if (r.status !== 0) throw new Error(`guest command failed (${r.status}): ${command}\n${r.output}`);
    return r.output;
  } finally {
    con.close();
  }
}
