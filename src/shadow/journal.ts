import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { ShadowContext } from './root-context.js';

/**
 * The crash journal: what vmi changed in the guest, written to disk (fsync + rename)
 * *before* each change, so that if vmi dies at any point the next attach can put the
 * guest back. It lives in the guest's private run directory.
 */
export interface VictimRecord {
  /** gdb thread (vCPU) the victim was last seen on. */
  thread: string;
  cr3: string;
  rsp: string;
  /** Address of the `syscall` instruction the victim had just executed (rip - 2). */
  gadget: string;
  /** The victim's complete register block (hex of the `g` reply) at the moment it was caught. */
  savedRegs: string;
  /** Value put in r15 while the victim runs injected code: tells injected state from natural state. */
  marker: string;
  /** Scratch mapping in the victim, once mmap returned. */
  scratch?: string;
  /** An injected mmap may be under way: its result (in rax) must be unmapped on recovery. */
  pendingMmap?: boolean;
}

export interface ShadowRecord {
  /** 0 while the shadow is being forked (its pid and CR3 are not known yet). */
  pid: number;
  cr3: string;
  cr4: string;
  base: string;
  marker: string;
  /** Which transport left it: the trap transport keeps a breakpoint at batch_end. */
  transport: 'trap' | 'doorbell';
  /** Left running on purpose between invocations (`vmi shadow start`). */
  resident?: boolean;
  /** Its context as last verified inside the guest (src/shadow/root-context.ts). */
  context?: ShadowContext;
}

export interface Journal {
  version: 1;
  /** pid of the vmi process that wrote it (to tell a live owner from a dead one). */
  owner: number;
  updatedAt: string;
  lstar?: string;
  victim?: VictimRecord;
  shadow?: ShadowRecord;
}

export const JOURNAL_FILE = 'redirect-journal.json';

export class JournalStore {
  readonly path: string;

  constructor(runDir: string) {
    this.path = join(runDir, JOURNAL_FILE);
  }

  load(): Journal | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const j = JSON.parse(text) as Journal;
      if (j.version !== 1) throw new Error(`unknown journal version ${String(j.version)}`);
      return j;
    } catch (err) {
      throw new Error(
        `redirection journal ${this.path} is unreadable (${(err as Error).message}); inspect it, then delete it`,
        { cause: err },
      );
    }
  }

  /** Durably replaces the journal: a crash leaves either the old or the new version. */
  save(journal: Omit<Journal, 'version' | 'owner' | 'updatedAt'>): void {
    const full: Journal = { version: 1, owner: process.pid, updatedAt: new Date().toISOString(), ...journal };
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(full, null, 2));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }

  clear(): void {
    rmSync(this.path, { force: true });
  }
}

export const hex = (v: bigint): string => `0x${v.toString(16)}`;
export const unhex = (s: string): bigint => BigInt(s);
