/**
 * Linux errno names and messages, loaded from profiles/errno.json (generated from
 * asm-generic/errno-base.h and errno.h, which x86-64 uses unchanged).
 */
import { isRecord, loadProfileJson, ProfileError } from './profile-loader.js';

interface ErrnoEntry {
  name: string;
  message: string;
}

let byNumber: ReadonlyMap<number, ErrnoEntry> | undefined;
let byName: ReadonlyMap<string, number> | undefined;

function load(): ReadonlyMap<number, ErrnoEntry> {
  if (byNumber) return byNumber;
  const json = loadProfileJson('errno.json');
  const raw = isRecord(json) ? json.errno : undefined;
  if (!isRecord(raw)) throw new ProfileError('errno.json: missing "errno" object');
  const m = new Map<number, ErrnoEntry>();
  const n = new Map<string, number>();
  for (const [num, entry] of Object.entries(raw)) {
    const nr = Number(num);
    if (!Number.isInteger(nr) || nr <= 0 || !isRecord(entry) || typeof entry.name !== 'string') {
      throw new ProfileError(`errno.json: bad entry ${num}`);
    }
    const message = typeof entry.message === 'string' ? entry.message : '';
    m.set(nr, { name: entry.name, message });
    n.set(entry.name, nr);
  }
  byNumber = m;
  byName = n;
  return m;
}

/** `ENOENT` for 2; `E<n>` for a number the table does not know. Accepts -errno too. */
export function errnoName(n: number): string {
  const nr = Math.abs(n);
  return load().get(nr)?.name ?? `E${nr}`;
}

/** `No such file or directory` for 2; empty string when unknown. Accepts -errno too. */
export function errnoMessage(n: number): string {
  return load().get(Math.abs(n))?.message ?? '';
}

/** The number of an errno name (`errnoNumber('ENOENT') === 2`), or undefined. */
export function errnoNumber(name: string): number | undefined {
  load();
  return byName!.get(name);
}

/** Errno numbers the SDK tests against (stable across all Linux architectures using asm-generic). */
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const ENOTDIR = 20;
export const EINVAL = 22;
export const ENOSYS = 38;
export const EPERM = 1;
