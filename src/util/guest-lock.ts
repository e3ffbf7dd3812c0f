import {
  closeSync,
  constants,
  fstatSync,
  linkSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { processAlive } from './process-alive.js';

export class GuestBusyError extends Error {
  override name = 'GuestBusyError';
}

/** How long a vmi waits for another one to let go of a guest before it gives up (ms). */
export const DEFAULT_LOCK_WAIT_MS = 60_000;
/** Bytes of the generation file's one record (vmi.gen), newline included. */
const GEN_WIDTH = 40;
/** How often the lock is tried again while another vmi holds it (ms). */
const POLL_MS = 50;
/** How much of the holder's command line the lock file records (characters). */
const MAX_COMMAND = 200;

/** Lock files this process holds now: another attach in the same process waits for them too. */
const heldHere = new Set<string>();

/** Who holds a guest, as the lock file says. */
export interface LockHolder {
  pid: number;
  /** The holder's command line after `vmi` (e.g. `plugins run psaux`); may be empty. */
  command: string;
  /** When it took the lock (ISO 8601), if recorded. */
  since?: string;
}

export interface LockWaitOptions {
  /** Give up after this long (ms); 0: refuse at once when the guest is held. Default 60 s. */
  waitMs?: number;
  /** Told once, when the guest is found held: who holds it and how long this vmi waits. */
  onWait?: (message: string) => void;
  /** Stops the wait (the user interrupted). */
  signal?: AbortSignal;
}

/**
 * Parses a lock file: `PID\nCOMMAND\nSINCE` (older vmi wrote only the PID). Anything else
 * is no holder (a stale or foreign file, taken over).
 */
export function parseLockFile(text: string): LockHolder | undefined {
  const [pidLine = '', command = '', since] = text.split('\n');
  const pid = Number.parseInt(pidLine.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0 || String(pid) !== pidLine.trim()) return undefined;
  return { pid, command: command.slice(0, MAX_COMMAND), ...(since ? { since: since.trim() } : {}) };
}

/** A lock file judged stale: its bytes and inode (an inode number alone can be reused at once). */
interface StaleCandidate {
  text: string;
  ino: number;
}

/** Reads a lock file and its inode through one descriptor (both of the same file). */
function readLock(path: string): StaleCandidate & { holder: LockHolder | undefined } {
  const fd = openSync(path, 'r');
  try {
    const text = readFileSync(fd, 'utf8');
    return { holder: parseLockFile(text), text, ino: fstatSync(fd).ino };
  } finally {
    closeSync(fd);
  }
}

function describe(h: LockHolder): string {
  const what = [h.command && `vmi ${h.command}`, h.since && `since ${h.since}`].filter(Boolean).join(', ');
  // A session of this very process (a request `vmi watch` or `vmi serve` serves, another
  // API Guest): its command line is this process's, which would name the waiter itself.
  if (h.pid === process.pid)
    return `another session of this vmi (pid ${h.pid}${h.since ? `, since ${h.since}` : ''})`;
  return `vmi pid ${h.pid}${what ? ` (${what})` : ''}`;
}

/**
 * One vmi attached to a guest at a time (the gdbstub takes one client, and two shadows
 * fighting over a victim would corrupt it). A second vmi waits for its turn (polling the
 * lock file, up to `waitMs`) and says once who holds the guest; a lock left by a dead vmi
 * is taken over, its journal then replayed by the new owner.
 */
export class GuestLock {
  private readonly path: string;
  private readonly genPath: string;
  private held = false;
  /** The take-over of a stale lock happened in this acquire (its holder may not have counted). */
  private tookOver = false;
  /**
   * The guest's lock generation before this holder counted itself: every holder adds one
   * when it takes the lock (file `vmi.gen` beside the lock), as `COUNT:EPOCH` — EPOCH is a
   * random tag chosen when the file is created, so a run directory made again (the guest
   * restarted) never repeats an old value. undefined: not held, unknown (no file, a
   * malformed one), or the lock was taken over from a dead holder (which may have died
   * before counting).
   */
  generationBefore: string | undefined;
  /** The generation this holder wrote (the count one higher, same epoch), while held. */
  generation: string | undefined;

  constructor(
    runDir: string,
    private readonly guest: string,
  ) {
    this.path = join(runDir, 'vmi.lock');
    this.genPath = join(runDir, 'vmi.gen');
  }

  /**
   * Counts this holder in the guest's generation (called with the lock held): a Guest that
   * finds, at its next acquire, the generation it wrote itself knows that no other vmi held
   * the guest in between (src/shadow/session.ts AttachMemo). Rewritten in place, at a fixed
   * width (only lock holders read or write it, one at a time): a private file renamed into
   * place cost two file-system metadata updates per attach (~0.3 ms on this host's ext4).
   * A missing, torn or malformed file starts a new epoch, and it or a stale take-over leaves
   * generationBefore undefined: in doubt, nothing is taken as unchanged.
   */
  private count(): void {
    let before: { n: number; epoch: string } | undefined;
    const fd = openSync(this.genPath, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      const buf = Buffer.alloc(64);
      const got = readSync(fd, buf, 0, buf.length, 0);
      const m = /^(\d{1,15}) ([0-9a-f]{16})$/.exec(buf.toString('latin1', 0, got).trim());
      if (m && Number.isSafeInteger(Number(m[1]))) before = { n: Number(m[1]), epoch: m[2] };
      const epoch = before?.epoch ?? randomBytes(8).toString('hex');
      const next = (before?.n ?? 0) + 1;
      // Wider than any record (15 digits, space, 16 hex digits): each write covers the last.
      writeSync(fd, `${next} ${epoch}`.padEnd(GEN_WIDTH - 1) + '\n', 0, 'latin1');
      this.generationBefore = this.tookOver || !before ? undefined : `${before.n}:${before.epoch}`;
      this.generation = `${next}:${epoch}`;
    } finally {
      closeSync(fd);
    }
  }

  /** Takes the lock, waiting while another live vmi holds it. Throws GuestBusyError on timeout. */
  async acquire(opts: LockWaitOptions = {}): Promise<void> {
    const waitMs = opts.waitMs ?? DEFAULT_LOCK_WAIT_MS;
    const deadline = Date.now() + waitMs;
    let told = false;
    this.tookOver = false;
    for (;;) {
      const holder = this.tryAcquire();
      if (holder === undefined) {
        try {
          this.count();
        } catch (err) {
          this.release();
          throw err;
        }
        return;
      }
      if (Date.now() >= deadline)
        throw new GuestBusyError(
          waitMs === 0
            ? `guest ${this.guest} is being inspected by another vmi: ${describe(holder)}; wait for it (--wait SECONDS) or stop it`
            : `guest ${this.guest} is still held by another vmi after ${Math.round(waitMs / 1000)} s: ${describe(holder)}; wait longer (--wait SECONDS) or stop it`,
        );
      // Not said for a session of this process: turns between its own sessions (a served
      // request and a watch's tick) are short and expected.
      if (!told && holder.pid !== process.pid) {
        opts.onWait?.(
          `guest ${this.guest} is held by ${describe(holder)}; waiting up to ${Math.round(waitMs / 1000)} s for its turn`,
        );
        told = true;
      }
      if (opts.signal?.aborted)
        throw new GuestBusyError(`gave up waiting for guest ${this.guest}: interrupted`);
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))));
    }
  }

  /** One try: undefined when the lock is now ours, else who holds it. */
  private tryAcquire(): LockHolder | undefined {
    for (let attempt = 0; attempt < 2; attempt++) {
      // Written whole under a private name, then linked into place: link() fails if the
      // lock exists, and a reader never sees a half-written file (it would take it for stale).
      const tmp = `${this.path}.${process.pid}`;
      const command = process.argv.slice(2).join(' ').replace(/\s+/g, ' ').slice(0, MAX_COMMAND);
      writeFileSync(tmp, `${process.pid}\n${command}\n${new Date().toISOString()}\n`, { mode: 0o600 });
      try {
        linkSync(tmp, this.path);
        this.held = true;
        heldHere.add(this.path);
        return undefined;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        rmSync(tmp, { force: true });
      }
      let seen: ReturnType<typeof readLock>;
      try {
        seen = readLock(this.path);
      } catch (err) {
        // Released between our link and this read: try again.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const { holder } = seen;
      if (holder && (holder.pid === process.pid ? heldHere.has(this.path) : processAlive(holder.pid)))
        return holder;
      // A lock of a dead vmi (or one of this process that nothing here holds): take it over.
      this.tookOver = true;
      this.removeStale(seen);
    }
    throw new GuestBusyError(`cannot take the lock ${this.path}`);
  }

  /**
   * Removes the stale lock file we read, and only that one: two waiters may
   * find the same dead holder, and the first may already have linked its own lock in its
   * place by the time the second acts. The file is renamed aside (atomic) and checked; a
   * live lock renamed by mistake is linked back at once.
   */
  private removeStale(judged: StaleCandidate): void {
    const aside = `${this.path}.stale.${process.pid}`;
    try {
      renameSync(this.path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else removed it
      throw err;
    }
    try {
      if (statSync(aside).ino !== judged.ino || readFileSync(aside, 'utf8') !== judged.text) {
        // Not the file we judged: another vmi's fresh lock. Put it back (link fails only if a
        // third vmi took the free name in between; it then holds the guest, and so do we not).
        try {
          linkSync(aside, this.path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
      }
    } finally {
      rmSync(aside, { force: true });
    }
  }

  release(): void {
    if (this.held) {
      rmSync(this.path, { force: true });
      heldHere.delete(this.path);
    }
    this.held = false;
    this.generationBefore = undefined;
    this.generation = undefined;
  }
}
