/**
 * GDB remote-serial-protocol client for QEMU's gdbstub (tested against QEMU 7.2).
 *
 * QEMU 7.2 quirks handled here (see DESIGN.md "Control channels"):
 * - no no-ack mode: every packet is acked (`+`) and ours must be acked; `-` → retransmit.
 * - connecting stops a running VM and emits an unsolicited stop reply: drained on connect.
 * - any byte QEMU receives while the VM runs stops the VM and is dropped. So nothing is
 *   written while we know the VM runs (not even an ack), and the `OK` to a detach (after
 *   which QEMU resumes the VM) is deliberately not acked.
 * - `D;1` detaches with multiprocess; `PacketSize=1000` (hex) bounds `m`/`M` chunk sizes.
 * Only one request is in flight at a time (a promise queue serializes them).
 */
import type net from 'node:net';
import { connectUnixSocket } from '../util/unix-socket.js';
import {
  RspParser,
  framePacket,
  fromHex,
  hexToString,
  isStopReply,
  parseErrorReply,
  parseStopReply,
  parseSupported,
  parseThreadInfo,
  stringToHex,
  toHex,
  type ParsedStopReply,
} from './gdb-rsp.js';

export class GdbError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GdbError';
  }
}

/** A wait on the gdbstub that did not complete in time; `what` names what was waited for. */
export class GdbTimeoutError extends GdbError {
  readonly timeout = true;
  constructor(
    message: string,
    readonly what: string,
    readonly timeoutMs: number,
  ) {
    super(message);
    this.name = 'GdbTimeoutError';
  }
}

export type StopReply = { signal: number; thread?: string; raw: string };

export interface GdbConnectOptions {
  /** Default timeout for connecting and for each request (ms). Default 5000. */
  timeoutMs?: number;
}

/** Largest `m` read: PacketSize=1000 (hex) = 4096 bytes → ≤ 2047 data bytes per reply. */
export const MAX_READ_CHUNK = 2047;
/** Largest `M` write payload so that "M<addr>,<len>:<hex>" fits QEMU's 4096-byte buffer. */
export const MAX_WRITE_CHUNK = 2000;
const MAX_RETRANSMITS = 3;
const ACK_TIMEOUT_MS = 1000;

type Waiter<T> = { resolve: (v: T) => void; reject: (e: Error) => void };

/** FIFO of values with timed takes; fail() rejects current and future takes. */
class Mailbox<T> {
  private items: T[] = [];
  private waiters: Waiter<T>[] = [];
  private error?: Error;

  constructor(private readonly broadcast = false) {}

  push(v: T): void {
    if (this.waiters.length > 0) {
      const ws = this.broadcast ? this.waiters.splice(0) : this.waiters.splice(0, 1);
      for (const w of ws) w.resolve(v);
    } else {
      this.items.push(v);
    }
  }

  clear(): void {
    this.items.length = 0;
  }

  get size(): number {
    return this.items.length;
  }

  fail(e: Error): void {
    this.error = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  take(timeoutMs: number, onTimeout: () => Error): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    if (this.error) return Promise.reject(this.error);
    return new Promise<T>((resolve, reject) => {
      const w: Waiter<T> = {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(onTimeout());
      }, timeoutMs);
      this.waiters.push(w);
    });
  }
}

function describe(payload: string): string {
  return payload.length > 48 ? payload.slice(0, 48) + '…' : payload;
}

function toStopReply(p: ParsedStopReply): StopReply {
  if (p.kind !== 'signal') {
    throw new GdbError(
      p.kind === 'exited' ? `target exited (code ${p.code}): ${p.raw}` : `target terminated: ${p.raw}`,
    );
  }
  return p.thread !== undefined
    ? { signal: p.signal, thread: p.thread, raw: p.raw }
    : { signal: p.signal, raw: p.raw };
}

export class GdbClient {
  private readonly parser = new RspParser();
  private readonly replies = new Mailbox<string>();
  private readonly stops = new Mailbox<ParsedStopReply>(true);
  private readonly acks = new Mailbox<'ack' | 'nack'>();
  private tail: Promise<void> = Promise.resolve();
  private closedError?: GdbError;
  private suppressAcks = false;
  private ackPending = false;
  private isRunning = false;
  /** qSupported features reported by the stub. */
  supported: Record<string, string | boolean> = {};
  /** The last stop reply seen (any source). */
  lastStop?: StopReply;
  /** Counters for diagnostics. */
  readonly stats = { packetsSent: 0, packetsReceived: 0, retransmits: 0, badPackets: 0 };

  private constructor(
    private readonly sock: net.Socket,
    readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    sock.setNoDelay?.(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err) => this.shutdown(new GdbError(`gdbstub ${socketPath}: ${err.message}`)));
    sock.on('close', () => this.shutdown(new GdbError(`gdbstub connection to ${socketPath} closed`)));
  }

  static async connect(socketPath: string, opts: GdbConnectOptions = {}): Promise<GdbClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnixSocket(socketPath, timeoutMs, {
      timeout: () =>
        new GdbTimeoutError(
          `connect to gdbstub ${socketPath} timed out after ${timeoutMs} ms`,
          'connect',
          timeoutMs,
        ),
      failed: (err) => new GdbError(`cannot connect to gdbstub at ${socketPath}: ${err.code ?? err.message}`),
    });
    const client = new GdbClient(sock, socketPath, timeoutMs);
    try {
      const reply = await client.request('qSupported:multiprocess+', { allowEmpty: true });
      client.supported = parseSupported(reply);
      // A VM that was running when we connected was stopped by QEMU, which sent a stop reply
      // before reading our first packet: it is queued by now. Drop it.
      client.stops.clear();
      client.isRunning = false;
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** Whether this client resumed the VM and has not seen it stop since. */
  get running(): boolean {
    return this.isRunning;
  }

  // ---- wire ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    for (const ev of this.parser.feed(chunk)) {
      switch (ev.type) {
        case 'ack':
          this.acks.push('ack');
          break;
        case 'nack':
          this.acks.push('nack');
          break;
        case 'packet': {
          this.stats.packetsReceived++;
          if (!this.suppressAcks) this.queueAck();
          const text = ev.data.toString('latin1');
          if (isStopReply(text)) {
            let parsed: ParsedStopReply;
            try {
              parsed = parseStopReply(text);
            } catch {
              this.replies.push(text);
              break;
            }
            this.isRunning = false;
            if (parsed.kind === 'signal') this.lastStop = toStopReply(parsed);
            this.stops.push(parsed);
          } else {
            this.replies.push(text);
          }
          break;
        }
        case 'notification':
          // QEMU sends none; ignore (notifications are never acked).
          break;
        case 'interrupt':
          break;
        case 'error':
          this.stats.badPackets++;
          if (ev.nack && !this.suppressAcks && !this.isRunning) this.sock.write('-');
          break;
      }
    }
  }

  /**
   * Ack a received packet. The `+` rides with our next packet when that is sent right away
   * (one write per round trip instead of two); otherwise it is flushed on the next tick.
   */
  private queueAck(): void {
    if (this.ackPending) return;
    this.ackPending = true;
    setImmediate(() => this.flushAck());
  }

  private flushAck(): void {
    if (!this.ackPending) return;
    this.ackPending = false;
    if (!this.closedError && !this.suppressAcks) this.sock.write('+');
  }

  private shutdown(err: GdbError): void {
    if (this.closedError) return;
    this.closedError = err;
    this.replies.fail(err);
    this.stops.fail(err);
    this.acks.fail(err);
  }

  private ensureOpen(): void {
    if (this.closedError) throw this.closedError;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /** Send one packet and wait for its `+` (retransmitting on `-` or a missing ack). */
  private async sendPacket(payload: string, resumes = false): Promise<void> {
    this.ensureOpen();
    if (this.isRunning) {
      throw new GdbError(
        `cannot send ${describe(payload)}: the VM is running (waitForStop or interrupt first)`,
      );
    }
    const frame = framePacket(payload);
    for (let attempt = 0; attempt <= MAX_RETRANSMITS; attempt++) {
      this.acks.clear();
      if (attempt > 0) this.stats.retransmits++;
      if (this.ackPending && attempt === 0) {
        this.ackPending = false;
        this.sock.write(Buffer.concat([Buffer.from('+'), frame]));
      } else {
        this.sock.write(frame);
      }
      this.stats.packetsSent++;
      // set before any reply can be processed: the ack and the stop may share one chunk
      if (resumes) this.isRunning = true;
      let r: 'ack' | 'nack' | 'timeout';
      try {
        r = await this.acks.take(Math.min(ACK_TIMEOUT_MS, this.timeoutMs), () => new GdbError('ack timeout'));
      } catch (e) {
        if (this.closedError) throw this.closedError;
        if ((e as Error).message !== 'ack timeout') throw e;
        r = 'timeout';
      }
      if (r === 'ack') return;
    }
    throw new GdbError(
      `gdbstub did not acknowledge ${describe(payload)} after ${MAX_RETRANSMITS + 1} attempts`,
    );
  }

  private nextReply(what: string, timeoutMs = this.timeoutMs): Promise<string> {
    return this.replies.take(
      timeoutMs,
      () =>
        new GdbTimeoutError(
          `gdbstub: no reply to ${what} after ${timeoutMs} ms (${this.socketPath})`,
          what,
          timeoutMs,
        ),
    );
  }

  private async nextStop(what: string, timeoutMs: number): Promise<StopReply> {
    const parsed = await this.stops.take(
      timeoutMs,
      () =>
        new GdbTimeoutError(
          `gdbstub: no stop reply for ${what} after ${timeoutMs} ms (${this.socketPath})`,
          what,
          timeoutMs,
        ),
    );
    return toStopReply(parsed);
  }

  /** Send and return the reply text, mapping E.. and empty replies to GdbError. (Caller holds the lock.) */
  private async request(
    payload: string,
    opts: { allowEmpty?: boolean; timeoutMs?: number } = {},
  ): Promise<string> {
    this.replies.clear();
    await this.sendPacket(payload);
    const reply = await this.nextReply(describe(payload), opts.timeoutMs);
    return this.check(payload, reply, opts.allowEmpty);
  }

  private check(payload: string, reply: string, allowEmpty = false): string {
    if (reply === '' && !allowEmpty) throw new GdbError(`unsupported: ${describe(payload)}`);
    const err = parseErrorReply(reply);
    if (err !== undefined) {
      const code = typeof err === 'number' ? `E${err.toString(16).padStart(2, '0')}` : err;
      throw new GdbError(`${describe(payload)} failed: ${code}`);
    }
    return reply;
  }

  private async requestOk(payload: string): Promise<void> {
    const reply = await this.request(payload);
    if (reply !== 'OK') throw new GdbError(`${describe(payload)}: unexpected reply "${describe(reply)}"`);
  }

  /** Send a raw packet and return the raw reply (escape hatch; E.. and empty are not mapped). */
  rawRequest(payload: string, timeoutMs?: number): Promise<string> {
    return this.exclusive(async () => {
      this.replies.clear();
      await this.sendPacket(payload);
      return this.nextReply(describe(payload), timeoutMs);
    });
  }

  // ---- API ----------------------------------------------------------------------------

  /** `?`. Note: QEMU also removes all breakpoints on `?`. */
  queryHaltReason(): Promise<StopReply> {
    return this.exclusive(async () => {
      this.stops.clear();
      this.replies.clear();
      await this.sendPacket('?');
      return this.nextStop('?', this.timeoutMs);
    });
  }

  readRegisters(): Promise<Buffer> {
    return this.exclusive(async () => {
      const reply = await this.request('g');
      try {
        return fromHex(reply);
      } catch {
        throw new GdbError(`g: malformed reply "${describe(reply)}"`);
      }
    });
  }

  writeRegisters(regs: Buffer): Promise<void> {
    return this.exclusive(() => this.requestOk('G' + toHex(regs)));
  }

  readMemory(addr: bigint, length: number): Promise<Buffer> {
    return this.exclusive(async () => {
      const out = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const n = Math.min(MAX_READ_CHUNK, length - done);
        const a = BigInt.asUintN(64, addr + BigInt(done));
        const cmd = `m${a.toString(16)},${n.toString(16)}`;
        const reply = await this.request(cmd);
        let bytes: Buffer;
        try {
          bytes = fromHex(reply);
        } catch {
          throw new GdbError(`${cmd}: malformed reply "${describe(reply)}"`);
        }
        if (bytes.length === 0) throw new GdbError(`${cmd}: empty memory reply`);
        bytes.copy(out, done, 0, Math.min(bytes.length, n));
        done += Math.min(bytes.length, n);
      }
      return out;
    });
  }

  writeMemory(addr: bigint, data: Uint8Array): Promise<void> {
    return this.exclusive(async () => {
      for (let done = 0; done < data.length;) {
        const n = Math.min(MAX_WRITE_CHUNK, data.length - done);
        const a = BigInt.asUintN(64, addr + BigInt(done));
        await this.requestOk(`M${a.toString(16)},${n.toString(16)}:${toHex(data.subarray(done, done + n))}`);
        done += n;
      }
    });
  }

  /** `Qqemu.PhyMemMode:1` makes `m`/`M` address guest-physical memory. */
  /**
   * `Qqemu.PhyMemMode`: whether `m`/`M` address guest-physical memory. QEMU keeps the
   * mode across clients (and gdbstub restarts), so the first call always sends it;
   * later calls that do not change it cost nothing.
   */
  async setPhysicalMemoryMode(on: boolean): Promise<void> {
    if (this.physicalMode === on) return;
    await this.exclusive(() => this.requestOk(`Qqemu.PhyMemMode:${on ? 1 : 0}`));
    this.physicalMode = on;
  }

  private physicalMode?: boolean;

  insertBreakpoint(type: 0 | 1, addr: bigint, kind = 1): Promise<void> {
    return this.exclusive(() => this.requestOk(`Z${type},${addr.toString(16)},${kind.toString(16)}`));
  }

  removeBreakpoint(type: 0 | 1, addr: bigint, kind = 1): Promise<void> {
    return this.exclusive(() => this.requestOk(`z${type},${addr.toString(16)},${kind.toString(16)}`));
  }

  /** Thread ids ("p1.1", "p1.2", …): one per vCPU in QEMU. */
  listThreads(): Promise<string[]> {
    return this.exclusive(async () => {
      const ids: string[] = [];
      let cmd = 'qfThreadInfo';
      for (let i = 0; i < 10_000; i++) {
        const reply = await this.request(cmd);
        let parsed: { ids: string[]; done: boolean };
        try {
          parsed = parseThreadInfo(reply);
        } catch (e) {
          throw new GdbError(`${cmd}: ${(e as Error).message}`);
        }
        ids.push(...parsed.ids);
        if (parsed.done) return ids;
        cmd = 'qsThreadInfo';
      }
      throw new GdbError('qsThreadInfo: thread list does not end');
    });
  }

  /** `Hg<thread>` (registers/memory) or `Hc<thread>` (step/continue). */
  selectThread(op: 'g' | 'c', thread: string): Promise<void> {
    return this.exclusive(() => this.requestOk(`H${op}${thread}`));
  }

  /**
   * `c`, then wait for the stop reply. On timeout: interrupt, drain the resulting stop, and
   * reject with GdbTimeoutError (the VM is stopped again).
   */
  continueAndWait(timeoutMs: number): Promise<StopReply> {
    return this.exclusive(async () => {
      await this.resumeLocked();
      try {
        return await this.nextStop('continue', timeoutMs);
      } catch (e) {
        if (!(e instanceof GdbTimeoutError)) throw e;
        await this.interruptNow(Math.max(this.timeoutMs, 1000));
        throw new GdbTimeoutError(
          `gdbstub: continue did not stop within ${timeoutMs} ms (${this.socketPath}); VM interrupted`,
          'continue',
          timeoutMs,
        );
      }
    });
  }

  /** `c` without waiting; the next stop reply is delivered to waitForStop(). */
  resume(): Promise<void> {
    return this.exclusive(() => this.resumeLocked());
  }

  private async resumeLocked(): Promise<void> {
    this.stops.clear();
    this.replies.clear();
    await this.sendPacket('c', true);
  }

  /** Wait for the next stop reply (after resume(), or an external stop such as QMP `stop`). */
  waitForStop(timeoutMs: number): Promise<StopReply> {
    this.ensureOpen();
    return this.nextStop('stop', timeoutMs);
  }

  /**
   * Send \x03 and return the stop reply. Not serialized behind other requests, so it can
   * break a pending continueAndWait()/waitForStop() (which then see the same stop).
   * If the VM is already stopped QEMU sends no stop reply: this then times out.
   */
  interrupt(timeoutMs = this.timeoutMs): Promise<StopReply> {
    this.ensureOpen();
    return this.interruptNow(timeoutMs);
  }

  private async interruptNow(timeoutMs: number): Promise<StopReply> {
    const stop = this.nextStop('interrupt', timeoutMs);
    this.ackPending = false;
    this.sock.write(Buffer.from([0x03]));
    return stop;
  }

  /** `s` on the current continue thread; resolves on the stop reply. */
  singleStep(timeoutMs = this.timeoutMs): Promise<StopReply> {
    return this.exclusive(async () => {
      this.stops.clear();
      this.replies.clear();
      await this.sendPacket('s', true);
      return this.nextStop('single step', timeoutMs);
    });
  }

  /** `qRcmd`: run an HMP command through the stub and return its output. */
  monitor(command: string): Promise<string> {
    return this.exclusive(async () => {
      const payload = `qRcmd,${stringToHex(command)}`;
      const what = `qRcmd "${describe(command)}"`;
      this.replies.clear();
      await this.sendPacket(payload);
      let out = '';
      for (;;) {
        const reply = await this.nextReply(what);
        if (reply === 'OK') return out;
        if (reply === '') throw new GdbError(`unsupported: ${what}`);
        if (reply.startsWith('O') && /^O([0-9a-fA-F]{2})*$/.test(reply)) {
          out += hexToString(reply.slice(1));
          continue;
        }
        this.check(what, reply);
        throw new GdbError(`${what}: unexpected reply "${describe(reply)}"`);
      }
    });
  }

  /**
   * `D;1` (falls back to `D`). QEMU resumes the VM when the last process detaches, so the
   * `OK` is not acked (an ack would stop the VM again). The connection is closed after.
   */
  detach(): Promise<void> {
    return this.exclusive(async () => {
      if (this.isRunning) await this.interruptNow(this.timeoutMs);
      this.suppressAcks = true;
      try {
        let reply = await this.request('D;1', { allowEmpty: true }).catch((e: unknown) => {
          if (e instanceof GdbTimeoutError || this.closedError) throw e;
          return 'E';
        });
        if (reply !== 'OK') reply = await this.request('D', { allowEmpty: true });
        if (reply !== 'OK') throw new GdbError(`detach failed: "${describe(reply)}"`);
      } finally {
        this.close();
      }
    });
  }

  /** Close the socket without detaching (breakpoints stay armed in QEMU 7.2). */
  close(): void {
    this.shutdown(new GdbError(`gdbstub connection to ${this.socketPath} closed`));
    this.sock.destroy();
  }
}
