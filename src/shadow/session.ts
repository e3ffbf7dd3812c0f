import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GdbPhysicalMemory } from '../memory/gdb-physical.js';
import { RamFileMemory, type PhysicalMemory } from '../memory/physical.js';
import { GdbClient } from '../qemu/gdb.js';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import { cpl, decodeX86Regs } from '../qemu/x86-regs.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';
import {
  decodeResults,
  encodeBatch,
  parseReturnValues,
  resultExtent,
  splitIntoBatches,
} from './batch-codec.js';
import { createShadow, findShadow } from './bootstrap.js';
import { GuestDebugger } from './debugger.js';
import { GuestLock } from './guest-lock.js';
import { JournalStore, unhex, type Journal } from './journal.js';
import { ENTRY, LAYOUT } from './layout.js';
import { ShadowHandle, ShadowLostError } from './shadow.js';
import { findSyscallEntry } from './syscall-entry.js';
import { DoorbellTransport, TrapTransport, type Transport, type TransportName } from './transport.js';
import { Victim } from './victim.js';

export interface SessionOptions {
  /** 'auto' = doorbell when the guest's RAM is shared with the host, trap otherwise. */
  transport?: TransportName | 'auto';
  /** Progress lines (stderr in the CLI). */
  onProgress?: (message: string) => void;
  /** Per-batch timeout. */
  batchTimeoutMs?: number;
}

export interface SessionStats {
  /** Milliseconds from attach() start to the shadow being ready. */
  attachMs: number;
  batches: number;
  calls: number;
  /** Milliseconds spent inside run() (encode, ring, decode). */
  runMs: number;
  transport: TransportName;
  shadowPid: number;
  /** The task borrowed to fork the shadow (restored before the first batch). */
  victimPid: number;
  recovered: boolean;
}

const SYSCALL_ENTRY_FILE = 'syscall-entry.json';

/**
 * One attachment to a guest through a shadow process: attach (replaying any crash
 * journal first), run batches of syscalls, detach leaving nothing behind. This is the
 * SyscallExecutor that plugins' syscalls end up in.
 */
export class RedirectSession implements SyscallExecutor {
  private seq = 0n;
  readonly stats: SessionStats;
  private closed = false;

  private constructor(
    private readonly guest: GuestEndpoints,
    private readonly lock: GuestLock,
    private readonly journal: JournalStore,
    private readonly mem: PhysicalMemory,
    private dbg: GuestDebugger | undefined,
    private readonly shadow: ShadowHandle,
    private readonly transport: Transport,
    private readonly opts: SessionOptions,
    stats: Omit<SessionStats, 'batches' | 'calls' | 'runMs'>,
  ) {
    this.stats = { ...stats, batches: 0, calls: 0, runMs: 0 };
  }

  static async attach(guest: GuestEndpoints, opts: SessionOptions = {}): Promise<RedirectSession> {
    const t0 = performance.now();
    const progress = opts.onProgress ?? (() => {});
    if (!guest.gdbSocket || !existsSync(guest.gdbSocket)) {
      throw new Error(`guest ${guest.name} has no gdbstub socket (${guest.gdbSocket ?? 'none'})`);
    }
    const want = opts.transport ?? 'auto';
    if (want === 'doorbell' && !guest.ramFile) {
      throw new Error(
        `the doorbell transport needs a shared RAM file; guest ${guest.name} has none (use --transport trap)`,
      );
    }
    const transportName: TransportName = want === 'auto' ? (guest.ramFile ? 'doorbell' : 'trap') : want;

    const lock = new GuestLock(guest.runDir, guest.name);
    lock.acquire();
    const journal = new JournalStore(guest.runDir);
    let gdb: GdbClient | undefined;
    let mem: PhysicalMemory | undefined;
    try {
      progress(`attaching to guest ${guest.name}`);
      gdb = await GdbClient.connect(guest.gdbSocket, { timeoutMs: 5000 });
      // '?' also makes QEMU drop every breakpoint a crashed client left armed.
      await gdb.queryHaltReason();
      mem = guest.ramFile
        ? new RamFileMemory(guest.ramFile, guest.ramSize)
        : new GdbPhysicalMemory(gdb, guest.ramSize);
      const dbg = new GuestDebugger(gdb);
      const previous = journal.load();
      const recovered = previous !== undefined;
      if (previous) await recover(dbg, mem, journal, previous, progress);

      const lstar = await syscallEntry(dbg, guest.runDir, previous);
      const { shadow, victimPid } = await createShadow(dbg, mem, journal, {
        lstar,
        catchTimeoutMs: 20_000,
        progress,
      });
      progress(`shadow ready (pid ${shadow.pid}), transport ${transportName}`);

      let transport: Transport;
      let keptDbg: GuestDebugger | undefined = dbg;
      if (transportName === 'doorbell') {
        // The VM runs freely from here on: batches go through the RAM file only.
        await dbg.removeAllBreakpoints();
        await gdb.detach();
        keptDbg = undefined;
        transport = new DoorbellTransport(shadow);
      } else {
        transport = new TrapTransport(dbg, shadow);
      }
      journal.save({
        lstar: `0x${lstar.toString(16)}`,
        shadow: {
          pid: shadow.pid,
          cr3: `0x${shadow.cr3.toString(16)}`,
          cr4: `0x${shadow.cr4.toString(16)}`,
          base: `0x${shadow.base.toString(16)}`,
          marker: `0x${shadow.marker.toString(16)}`,
          transport: transportName,
        },
      });
      return new RedirectSession(guest, lock, journal, mem, keptDbg, shadow, transport, opts, {
        attachMs: performance.now() - t0,
        transport: transportName,
        shadowPid: shadow.pid,
        victimPid,
        recovered,
      });
    } catch (err) {
      // Leave the VM running and nothing armed; the journal (if any) stays for next time.
      if (gdb) await gdb.detach().catch(() => gdb?.close());
      mem?.close();
      lock.release();
      throw err;
    }
  }

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    if (this.closed) throw new Error('the redirection session is closed');
    const t0 = performance.now();
    const results: CallResult[] = [];
    for (const g of splitIntoBatches(calls)) {
      results.push(...(await this.runBatch(calls.slice(g.start, g.end), g.start)));
    }
    this.stats.runMs += performance.now() - t0;
    return results;
  }

  private async runBatch(calls: readonly Call[], indexBase: number): Promise<CallResult[]> {
    const s = this.shadow;
    const batch = encodeBatch(calls, s.base, indexBase);
    await s.verify();
    await s.write(LAYOUT.entries, batch.entries);
    if (batch.input.length > 0) await s.write(LAYOUT.data, batch.input);
    await s.writeControl('count', BigInt(batch.count));
    this.seq += 1n;
    await this.transport.ring(this.seq, this.opts.batchTimeoutMs ?? 30_000);
    await s.verify();
    const rets = parseReturnValues(await s.read(LAYOUT.results, batch.count * 8), batch.count);
    const extent = resultExtent(batch, rets);
    const data =
      extent.end > extent.start
        ? await s.read(LAYOUT.data + extent.start, extent.end - extent.start)
        : Buffer.alloc(0);
    this.stats.batches += 1;
    this.stats.calls += calls.length;
    return decodeResults(batch, rets, data, extent.start);
  }

  /** Makes the shadow exit and leaves the guest as it was; safe to call twice. */
  async detach(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      try {
        await this.shadow.verify();
        await this.transport.dismiss(10_000);
      } catch (err) {
        if (!(err instanceof ShadowLostError)) throw err;
        this.opts.onProgress?.(`warning: ${err.message}`);
      }
      this.journal.clear();
    } finally {
      if (this.dbg) {
        await this.dbg.removeAllBreakpoints().catch(() => {});
        await this.dbg.gdb.detach().catch(() => this.dbg?.gdb.close());
      }
      this.mem.close();
      this.lock.release();
    }
    void this.guest;
  }
}

/**
 * Where the guest kernel's syscall entry is: cached per QEMU process in the run
 * directory (it does not change while the guest runs), validated by the code bytes
 * found there, found afresh otherwise.
 */
async function syscallEntry(dbg: GuestDebugger, runDir: string, journal?: Journal): Promise<bigint> {
  const file = join(runDir, SYSCALL_ENTRY_FILE);
  let cached: { lstar: string; bytes: string } | undefined;
  try {
    cached = JSON.parse(readFileSync(file, 'utf8')) as { lstar: string; bytes: string };
  } catch {
    cached = undefined;
  }
  const candidate = cached?.lstar ?? journal?.lstar;
  if (candidate) {
    try {
      const bytes = (await dbg.gdb.readMemory(BigInt(candidate), 16)).toString('hex');
      if (!cached || cached.bytes === bytes) return BigInt(candidate);
    } catch {
      // unmapped: find it again
    }
  }
  const lstar = await findSyscallEntry(dbg);
  const bytes = (await dbg.gdb.readMemory(lstar, 16)).toString('hex');
  writeFileSync(file, JSON.stringify({ lstar: `0x${lstar.toString(16)}`, bytes }), { mode: 0o600 });
  return lstar;
}

/**
 * Replays the journal a dead vmi left: finish and undo whatever it had injected into its
 * victim, and make any shadow it left exit. Called with the VM stopped and no breakpoint
 * armed.
 */
async function recover(
  dbg: GuestDebugger,
  mem: PhysicalMemory,
  journal: JournalStore,
  j: Journal,
  progress: (m: string) => void,
): Promise<void> {
  progress('a previous vmi did not detach cleanly: replaying its journal');
  if (j.victim) {
    const v = j.victim;
    const marker = unhex(v.marker);
    const saved = decodeX86Regs(Buffer.from(v.savedRegs, 'hex'));
    const gadgetEnd = unhex(v.gadget) + 2n;
    const stops = [gadgetEnd];
    if (v.scratch) stops.push(unhex(v.scratch) + BigInt(ENTRY.bootstrapDone));
    for (const s of stops) await dbg.addBreakpoint(s);
    const deadline = Date.now() + 5000;
    let found: { thread: string; rax: bigint; rip: bigint } | undefined;
    try {
      while (!found && Date.now() < deadline) {
        const { thread, regs } = await dbg.run(Math.max(1, deadline - Date.now())).catch(() => ({
          thread: '',
          regs: undefined,
        }));
        if (
          regs &&
          stops.includes(regs.rip) &&
          regs.cr3 === saved.cr3 &&
          cpl(regs) === 3 &&
          regs.r15 === marker
        ) {
          found = { thread, rax: regs.rax, rip: regs.rip };
        }
      }
    } finally {
      await dbg.removeAllBreakpoints();
    }
    if (found) {
      const victim = new Victim(dbg, found.thread, saved, marker);
      await victim.arm();
      let scratch = v.scratch ? unhex(v.scratch) : undefined;
      if (!scratch && v.pendingMmap && found.rip === gadgetEnd && BigInt.asIntN(64, found.rax) > 0n)
        scratch = found.rax;
      if (scratch) await victim.syscall(11, [scratch, BigInt(LAYOUT.size)]);
      await victim.restore();
      await dbg.removeAllBreakpoints();
      dbg.forgetLastStop();
      progress('restored the borrowed task');
    } else {
      progress('the borrowed task was already restored');
    }
  }
  if (j.shadow) {
    const s = j.shadow;
    const base = unhex(s.base);
    const marker = unhex(s.marker);
    let shadow: ShadowHandle | undefined;
    try {
      if (s.pid > 0) {
        shadow = new ShadowHandle(mem, base, unhex(s.cr3), unhex(s.cr4), marker, s.pid);
        await shadow.verify();
      } else {
        shadow = await findShadow(dbg, mem, base, marker, -1n, 3000);
      }
    } catch {
      shadow = undefined;
    }
    if (shadow) {
      await new TrapTransport(dbg, shadow).dismiss(5000);
      await dbg.removeAllBreakpoints();
      progress(`made the leftover shadow (pid ${shadow.pid}) exit`);
    }
  }
  journal.clear();
}
