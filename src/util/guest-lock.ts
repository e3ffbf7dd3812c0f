import { openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from './process-alive.js';

export class GuestBusyError extends Error {}

/**
 * One vmi attached to a guest at a time (the gdbstub takes one client, and two shadows
 * fighting over a victim would corrupt it). A lock left by a dead vmi is taken over;
 * its journal is then replayed by the new owner.
 */
export class GuestLock {
  private readonly path: string;
  private held = false;

  constructor(
    runDir: string,
    private readonly guest: string,
  ) {
    this.path = join(runDir, 'vmi.lock');
  }

  acquire(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.path, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        this.held = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number.parseInt(readFileSync(this.path, 'utf8').trim(), 10);
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && processAlive(owner)) {
        throw new GuestBusyError(
          `guest ${this.guest} is being inspected by another vmi (pid ${owner}); wait for it or stop it`,
        );
      }
      rmSync(this.path, { force: true });
    }
    throw new GuestBusyError(`cannot take the lock ${this.path}`);
  }

  release(): void {
    if (this.held) rmSync(this.path, { force: true });
    this.held = false;
  }
}
