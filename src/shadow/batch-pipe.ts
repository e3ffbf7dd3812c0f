/**
 * The batches in flight on one shadow. The doorbell transport lets the host ring the next
 * batch while the shadow still runs the one before (the stub runs rung batches in turn:
 * src/shadow/stub/stub.S), so the guest need not wait for the host between a plugin's
 * batches: the host checks the shadow, writes and rings batch N+1 while N runs, and reads
 * N's results while N+1 runs. At most two batches are in flight, in different entries,
 * results and data; each names its first entry and count in its slot (N & 1).
 */
import type { CallResult, Call } from '../sdk/syscall-types.js';
import {
  DATA_CAPACITY,
  dataBytesOfBatch,
  decodeResults,
  encodeBatch,
  parseReturnValues,
  resultExtent,
  type EncodedBatch,
} from './batch-codec.js';
import { CONTROL, LAYOUT } from './layout.js';
import { ShadowLostError, type ShadowHandle } from './shadow.js';
import type { Transport } from './transport.js';

/** A batch written to the shadow (and rung, when the transport chains). */
export interface Flight {
  readonly seq: bigint;
  readonly batch: EncodedBatch;
  /** Its first entry (and result) index in the shadow's tables. */
  readonly first: number;
  /** Rung already (`Transport.start`): only its end is waited for. */
  readonly rung: boolean;
  /** Settles once its results were read (or it failed): its place is free again. */
  readonly landed: Promise<void>;
}

interface Slot extends Flight {
  land: () => void;
}

/** How many batches may be in flight at once: the stub has two slots. */
const MAX_IN_FLIGHT = 2;

export class BatchPipe {
  private readonly flying: Slot[] = [];
  private lastSeq = 0n;

  constructor(
    private readonly shadow: ShadowHandle,
    private readonly transport: Transport,
  ) {}

  /** Whether a batch may be rung before the one before it has ended (doorbell). */
  get chains(): boolean {
    return this.transport.start !== undefined && this.transport.finish !== undefined;
  }

  /** Writes and runs one batch, then reads its results (nothing else in flight meanwhile counts). */
  async run(calls: readonly Call[], indexBase: number, timeoutMs: number): Promise<CallResult[]> {
    return this.complete(await this.submit(calls, indexBase), timeoutMs);
  }

  /**
   * Checks the shadow is still itself, writes the batch where no batch in flight is, and
   * rings it when the transport chains (else `complete` does). Waits for a place when two
   * batches are in flight or the one in flight leaves too little room. Calls to submit must
   * not overlap (the session's queue orders them); every flight must be completed.
   * Errors: ShadowLostError (with beforeWrite when nothing was written), ShadowTamperedError.
   */
  async submit(calls: readonly Call[], indexBase: number): Promise<Flight> {
    const s = this.shadow;
    const dataBytes = dataBytesOfBatch(calls);
    let place: { first: number; dataStart: number } | undefined;
    while (!(place = this.placeFor(calls.length, dataBytes))) await this.flying[0].landed;
    const batch = encodeBatch(calls, s.base, indexBase, place.dataStart);
    try {
      await s.verify();
    } catch (err) {
      if (err instanceof ShadowLostError) err.beforeWrite = true;
      throw err;
    }
    const seq = this.flying.length > 0 ? this.lastSeq + 1n : (await s.readControl('done')) + 1n;
    await s.write(LAYOUT.entries + place.first * LAYOUT.entrySize, batch.entries);
    if (batch.input.length > 0) await s.write(LAYOUT.data + place.dataStart, batch.input);
    const slot = Buffer.alloc(16);
    slot.writeBigUInt64LE(BigInt(place.first), 0);
    slot.writeBigUInt64LE(BigInt(batch.count), 8);
    await s.write(LAYOUT.control + CONTROL.slots + Number(seq & 1n) * 16, slot);
    let land!: () => void;
    const landed = new Promise<void>((resolve) => (land = resolve));
    const rung = this.chains;
    const flight: Slot = { seq, batch, first: place.first, rung, landed, land };
    this.flying.push(flight);
    this.lastSeq = seq;
    if (rung) {
      try {
        await this.transport.start!(seq);
      } catch (err) {
        this.drop(flight);
        throw err;
      }
    }
    return flight;
  }

  /**
   * Waits for a submitted batch to end (ringing it first when the transport does not
   * chain), checks the shadow again and reads the batch's results.
   * Errors: ShadowLostError, ShadowTamperedError, TransportTimeoutError.
   */
  async complete(f: Flight, timeoutMs: number): Promise<CallResult[]> {
    const s = this.shadow;
    try {
      if (f.rung) await this.transport.finish!(f.seq, timeoutMs);
      else await this.transport.ring(f.seq, timeoutMs);
      await s.verify();
      const { batch } = f;
      const rets = parseReturnValues(
        await s.read(LAYOUT.results + f.first * 8, batch.count * 8),
        batch.count,
      );
      const extent = resultExtent(batch, rets);
      const data =
        extent.end > extent.start
          ? await s.read(LAYOUT.data + extent.start, extent.end - extent.start)
          : Buffer.alloc(0);
      return decodeResults(batch, rets, data, extent.start);
    } finally {
      this.drop(f as Slot);
    }
  }

  /** Resolves once no batch is in flight. */
  async idle(): Promise<void> {
    while (this.flying.length > 0) await this.flying[0].landed;
  }

  private drop(f: Slot): void {
    const at = this.flying.indexOf(f);
    if (at >= 0) this.flying.splice(at, 1);
    f.land();
  }

  /**
   * Where a batch of `entries` calls and `dataBytes` of buffers goes: at the start with
   * nothing in flight; with one batch in flight (chaining transports only), after it, or
   * before it; else nowhere yet.
   */
  private placeFor(entries: number, dataBytes: number): { first: number; dataStart: number } | undefined {
    if (this.flying.length === 0) return { first: 0, dataStart: 0 };
    if (this.flying.length >= MAX_IN_FLIGHT || !this.chains) return undefined;
    const f = this.flying[0];
    const end = f.first + f.batch.count;
    if (end + entries <= LAYOUT.maxCalls && f.batch.dataEnd + dataBytes <= DATA_CAPACITY)
      return { first: end, dataStart: f.batch.dataEnd };
    if (entries <= f.first && dataBytes <= f.batch.dataStart) return { first: 0, dataStart: 0 };
    return undefined;
  }
}

// Frozen: code loaded into this process (a pack) cannot replace its methods to reach the guest.
Object.freeze(BatchPipe.prototype);
