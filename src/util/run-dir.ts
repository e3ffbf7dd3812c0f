/**
 * The host's private runtime directories: /tmp/vmi-<uid> and below it one 0700 directory
 * per guest (lab guests, foreign QEMUs, replay clones) for its sockets, logs and journal.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';

/** A runtime directory that is not ours to use (a symlink, or another user's). */
export class RunDirError extends Error {
  override name = 'RunDirError';
}

function uid(): number {
  return process.getuid?.() ?? 0;
}

/** /tmp/vmi-<uid>: the private (0700) parent of every guest's runtime directory. */
export function runRoot(): string {
  return join(process.env.VMI_RUNTIME_ROOT ?? '/tmp', `vmi-${uid()}`);
}

/**
 * Creates a directory 0700 owned by us, refusing a symlink or someone else's directory
 * (both would let another user read guest memory or hijack the control sockets).
 */
export async function ensurePrivateDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  const st = await lstat(path);
  if (!st.isDirectory()) throw new RunDirError(`${path} is not a directory`);
  if (st.uid !== uid())
    throw new RunDirError(`${path} is owned by uid ${st.uid}, not by us: refusing to use it`);
  if ((st.mode & 0o077) !== 0) await chmod(path, 0o700);
}

/** A short random hex tag for unique file names. */
export function randomTag(bytes = 4): string {
  return randomBytes(bytes).toString('hex');
}
