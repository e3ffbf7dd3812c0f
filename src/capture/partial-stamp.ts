/**
 * Proof that a partial capture directory, and the paused-guest marker inside it, were
 * written by vmi running as this user. A sweep of stale partials acts on a directory
 * (removing it, its /dev/shm staging files, or resuming the guest named in its marker)
 * only when its stamp verifies: an HMAC-SHA256, keyed with a random per-user secret kept
 * 0600 in the private run root, over the directory's path, the capture's pid and what the
 * marker says. A planted directory (another user's, or an archive unpacked in place)
 * cannot carry a valid stamp, so vmi never connects to a socket it names.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { lstat, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir, runRoot } from '../util/run-dir.js';

/** The stamp file inside a partial directory. */
export const PARTIAL_STAMP = '.vmi-partial';

async function secret(): Promise<Buffer> {
  await ensurePrivateDir(runRoot());
  const path = join(runRoot(), 'partial-capture.key');
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(randomBytes(32));
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = await lstat(path);
  if (!st.isFile() || st.uid !== process.getuid!() || (st.mode & 0o077) !== 0 || st.size !== 32)
    throw new Error(`${path} is not a private 32-byte key of this user`);
  return readFile(path);
}

function mac(key: Buffer, fields: readonly string[]): string {
  return createHmac('sha256', key).update(JSON.stringify(fields)).digest('hex');
}

/**
 * What the capture was doing to the guest named in a stamp: `paused` (stopped it; a sweep
 * cancels its disk-copy jobs and resumes it) or `copying` (the guest runs again while
 * QEMU's backup jobs copy its disks; a sweep cancels the jobs only).
 */
export type PartialPhase = 'paused' | 'copying';

/** The stamp's fields for a directory (with what a paused marker says, if any). */
function fields(dir: string, pid: number, qmpSocket?: string, phase?: PartialPhase): string[] {
  return ['vmi-partial-capture', dir, String(pid), qmpSocket ?? '', qmpSocket ? (phase ?? 'paused') : ''];
}

/** Writes (or rewrites) the stamp of a partial directory this process created. */
export async function stampPartialDir(
  dir: string,
  pid: number,
  qmpSocket?: string,
  phase: PartialPhase = 'paused',
): Promise<void> {
  const key = await secret();
  const body = JSON.stringify({
    pid,
    qmpSocket: qmpSocket ?? null,
    ...(qmpSocket ? { phase } : {}),
    mac: mac(key, fields(dir, pid, qmpSocket, phase)),
  });
  const fh = await open(join(dir, PARTIAL_STAMP), 'w', 0o600);
  try {
    await fh.writeFile(body);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** What a verified stamp says; undefined for anything not provably ours. */
export interface VerifiedPartial {
  pid: number;
  /** The guest a killed capture left paused or copying (only if the stamp names one). */
  qmpSocket?: string;
  /** What the capture was doing to that guest (with `qmpSocket`). */
  phase?: PartialPhase;
}

/**
 * Verifies a partial directory: a real directory (not a symlink) owned by this user,
 * 0700, whose stamp is a regular file owned by this user with a valid HMAC for this
 * path and `pid`. Anything else: undefined (leave it alone).
 */
export async function verifyPartialDir(dir: string, pid: number): Promise<VerifiedPartial | undefined> {
  const uid = process.getuid!();
  try {
    const d = await lstat(dir);
    if (!d.isDirectory() || d.uid !== uid || (d.mode & 0o077) !== 0) return undefined;
    const s = await lstat(join(dir, PARTIAL_STAMP));
    if (!s.isFile() || s.uid !== uid || s.size > 4096) return undefined;
    const v = JSON.parse(await readFile(join(dir, PARTIAL_STAMP), 'utf8')) as {
      pid?: unknown;
      qmpSocket?: unknown;
      phase?: unknown;
      mac?: unknown;
    };
    if (v.pid !== pid || typeof v.mac !== 'string') return undefined;
    const qmpSocket = typeof v.qmpSocket === 'string' ? v.qmpSocket : undefined;
    const phase: PartialPhase | undefined = !qmpSocket
      ? undefined
      : v.phase === 'copying'
        ? 'copying'
        : v.phase === 'paused' || v.phase === undefined
          ? 'paused'
          : undefined;
    if (qmpSocket && !phase) return undefined;
    const want = Buffer.from(mac(await secret(), fields(dir, pid, qmpSocket, phase)), 'hex');
    const got = Buffer.from(v.mac, 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    return { pid, ...(qmpSocket ? { qmpSocket, phase } : {}) };
  } catch {
    return undefined;
  }
}
