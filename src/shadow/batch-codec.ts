import { callCost, DEFAULT_BATCH_LIMITS, planChunks } from '../sdk/limits.js';
import type { Call, CallResult } from '../sdk/syscall-types.js';
import { LAYOUT } from './layout.js';

/** Where one output buffer of a call sits in the data area. */
interface OutSlot {
  call: number;
  offset: number;
  size: number;
  keep: 'ret' | 'all';
}

/** A batch laid out for the stub: the entry table and the data area, both relative to the region. */
export interface EncodedBatch {
  count: number;
  entries: Buffer;
  /** Input bytes, laid out from `dataStart` in the data area (outputs follow them). */
  input: Buffer;
  /** Offsets in the data area (bytes from LAYOUT.data) where this batch's buffers begin and end. */
  dataStart: number;
  dataEnd: number;
  /** Where each output lands: offsets from the start of the data area, like dataStart. */
  outSlots: OutSlot[];
}

export class BatchTooLargeError extends Error {}

/** Bytes of the data area (paths in, buffers out). */
export const DATA_CAPACITY = LAYOUT.size - LAYOUT.data;

/** Bytes of data area a call needs (inputs plus output buffers, 8-byte aligned). */
export function dataBytesOf(call: Call): number {
  // Indexed loops here and below: these run for every call of every batch, and for-of
  // over the policy's frozen argument arrays allocated an iterator each time.
  const args = call.args;
  let n = 0;
  for (let j = 0; j < args.length; j++) {
    const a = args[j];
    if (a.kind === 'in') n += align8(a.data.length);
    else if (a.kind === 'out') n += align8(a.size);
  }
  return n;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * The bytes of an in-out buffer (an 'out' argument with `init`) at guest address `addr`:
 * `init` zero-padded to `size`, each self-relative pointer made absolute.
 */
export function inOutBytes(
  arg: { size: number; init?: Uint8Array; pointers?: readonly number[] },
  addr: bigint,
): Buffer {
  const buf = Buffer.alloc(arg.size);
  const init = arg.init ?? new Uint8Array(0);
  if (init.length > arg.size)
    throw new BatchTooLargeError(`in-out buffer: ${init.length} bytes of init in ${arg.size}`);
  buf.set(init);
  for (const at of arg.pointers ?? []) {
    if (!Number.isSafeInteger(at) || at < 0 || at + 8 > arg.size)
      throw new BatchTooLargeError(`in-out buffer: pointer field at ${at} outside its ${arg.size} bytes`);
    const rel = buf.readBigUInt64LE(at);
    if (rel >= BigInt(arg.size))
      throw new BatchTooLargeError(`in-out buffer: pointer to ${rel} outside its ${arg.size} bytes`);
    buf.writeBigUInt64LE(addr + rel, at);
  }
  return buf;
}

/** An in-out buffer: written with the inputs, read back like an output. */
const isInOut = (a: Call['args'][number]): boolean => a.kind === 'out' && a.init !== undefined;

/**
 * Splits calls into groups that each fit one batch, by the SDK's limits and its planner
 * (a SyscallApi has split already: then this is one group). References to earlier results
 * must stay inside a group; the SDK's chunking keeps dependent calls together, and a
 * reference that would cross a boundary is an error rather than a silent wrong fd.
 */
export function splitIntoBatches(calls: readonly Call[]): Array<{ start: number; end: number }> {
  const entries: { group: number; outBytes: number; inBytes: number }[] = new Array(calls.length);
  for (let group = 0; group < calls.length; group++) {
    const call = calls[group];
    const need = dataBytesOf(call);
    if (need > DATA_CAPACITY) {
      throw new BatchTooLargeError(`a single call needs ${need} bytes of buffer, more than ${DATA_CAPACITY}`);
    }
    const cost = callCost(call);
    entries[group] = { group, outBytes: cost.out, inBytes: cost.in };
  }
  const groups = planChunks(entries, DEFAULT_BATCH_LIMITS).map(([start, end]) => ({ start, end }));
  for (const g of groups) {
    for (let i = g.start; i < g.end; i++) {
      const args = calls[i].args;
      for (let j = 0; j < args.length; j++) {
        const a = args[j];
        if (a.kind === 'result' && (a.index < g.start || a.index >= i)) {
          throw new BatchTooLargeError(
            `call ${i} refers to call ${a.index}, which is not an earlier call of the same batch`,
          );
        }
      }
    }
  }
  return groups;
}

/** Bytes of data area all of `calls` need (what encodeBatch lays out). */
export function dataBytesOfBatch(calls: readonly Call[]): number {
  let n = 0;
  for (let i = 0; i < calls.length; i++) n += dataBytesOf(calls[i]);
  return n;
}

/**
 * Encodes calls for a scratch region at `base`. 'in' and 'out' arguments become
 * absolute guest addresses in the data area, from byte `dataStart` of it on (two batches
 * in flight use different parts: src/shadow/batch-pipe.ts); 'result' arguments become
 * indices within the batch and set the entry's reference bit so that the stub
 * substitutes the earlier return value. `indexBase` is the index of the first call within
 * the caller's whole list.
 */
export function encodeBatch(
  calls: readonly Call[],
  base: bigint,
  indexBase = 0,
  dataStart = 0,
): EncodedBatch {
  if (calls.length > LAYOUT.maxCalls) throw new BatchTooLargeError(`${calls.length} calls in one batch`);
  const entries = Buffer.alloc(calls.length * LAYOUT.entrySize);
  let dataSize = 0;
  // Inputs first and contiguous, so that one write sends them all; output room after.
  // In-out buffers live among the inputs (the host writes them), and are read back as outputs.
  let inSize = 0;
  for (let i = 0; i < calls.length; i++) {
    const args = calls[i].args;
    dataSize += dataBytesOf(calls[i]);
    for (let j = 0; j < args.length; j++) {
      const a = args[j];
      if (a.kind === 'in') inSize += align8(a.data.length);
      else if (a.kind === 'out' && isInOut(a)) inSize += align8(a.size);
    }
  }
  if (dataSize > DATA_CAPACITY) throw new BatchTooLargeError(`${dataSize} bytes of buffers in one batch`);
  if (
    !Number.isSafeInteger(dataStart) ||
    dataStart < 0 ||
    dataStart % 8 !== 0 ||
    dataStart + dataSize > DATA_CAPACITY
  )
    throw new BatchTooLargeError(
      `${dataSize} bytes of buffers do not fit the data area from byte ${dataStart}`,
    );
  const input = Buffer.alloc(inSize);
  const outSlots: OutSlot[] = [];
  let inCursor = dataStart;
  let cursor = dataStart + inSize;
  // The data area's guest address as two 32-bit halves: every address written below is
  // it plus an offset, in plain numbers (a BigInt per argument was most of the encoding's
  // garbage).
  const dataAddr = base + BigInt(LAYOUT.data);
  const dataHi = Number(BigInt.asUintN(64, dataAddr) >> 32n);
  const dataLo = Number(BigInt.asUintN(32, dataAddr));
  const writeAddr = (offset: number, at: number): void => {
    const lo = dataLo + offset;
    const carry = Math.floor(lo / 0x1_0000_0000);
    entries.writeUInt32LE(lo - carry * 0x1_0000_0000, at);
    entries.writeUInt32LE((dataHi + carry) >>> 0, at + 4);
  };
  for (let i = 0; i < calls.length; i++) {
    const call = calls[i];
    const args = call.args;
    if (args.length > 6) throw new BatchTooLargeError(`call ${i} has ${args.length} arguments`);
    const e = i * LAYOUT.entrySize;
    writeNumber(entries, call.nr, e);
    let mask = 0;
    for (let j = 0; j < args.length; j++) {
      const arg = args[j];
      const at = e + 8 + 8 * j;
      switch (arg.kind) {
        case 'int':
          writeU64(entries, arg.value, at);
          break;
        case 'in':
          input.set(arg.data, inCursor - dataStart);
          writeAddr(inCursor, at);
          inCursor += align8(arg.data.length);
          break;
        case 'out':
          if (arg.init !== undefined) {
            input.set(inOutBytes(arg, dataAddr + BigInt(inCursor)), inCursor - dataStart);
            outSlots.push({ call: i, offset: inCursor, size: arg.size, keep: arg.keep });
            writeAddr(inCursor, at);
            inCursor += align8(arg.size);
            break;
          }
          outSlots.push({ call: i, offset: cursor, size: arg.size, keep: arg.keep });
          writeAddr(cursor, at);
          cursor += align8(arg.size);
          break;
        case 'result':
          writeNumber(entries, arg.index - indexBase, at);
          mask |= 1 << j;
          break;
      }
    }
    entries.writeUInt32LE(mask, e + 56);
    entries.writeUInt32LE(0, e + 60);
  }
  return { count: calls.length, entries, input, dataStart, dataEnd: dataStart + dataSize, outSlots };
}

/** Writes a safe JS integer as a 64-bit value (negative: two's complement). */
function writeNumber(buf: Buffer, n: number, at: number): void {
  if (!Number.isSafeInteger(n)) throw new BatchTooLargeError(`${n} is not a 64-bit register value`);
  const hi = Math.floor(n / 0x1_0000_0000);
  buf.writeUInt32LE(n - hi * 0x1_0000_0000, at);
  buf.writeUInt32LE(hi >>> 0, at + 4);
}

/**
 * Writes a 64-bit register value little-endian (two's complement for negatives). Values
 * within ±2^53 — nearly all: fds, sizes, flags, AT_FDCWD — go through plain numbers.
 */
function writeU64(buf: Buffer, value: bigint, at: number): void {
  if (value >= -MAX_EXACT && value <= MAX_EXACT) writeNumber(buf, Number(value), at);
  else {
    buf.writeBigUInt64LE(BigInt.asUintN(64, value), at);
  }
}
const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/** The range of the data area that a batch's results need to be read from. */
export function resultExtent(batch: EncodedBatch, rets: readonly bigint[]): { start: number; end: number } {
  let start = batch.dataStart + batch.input.length;
  let end = start;
  for (const s of batch.outSlots) {
    const len = keptLength(s, rets[s.call]);
    if (len > 0) {
      // In-out buffers sit among the inputs, before the plain outputs.
      start = Math.min(start, s.offset);
      end = Math.max(end, s.offset + len);
    }
  }
  return { start, end };
}

function keptLength(slot: OutSlot, ret: bigint): number {
  if (slot.keep === 'all') return slot.size;
  if (ret <= 0n) return 0;
  return Math.min(Number(ret), slot.size);
}

/**
 * Builds results from the return values and the data read back after the batch
 * (`data` holds the data area from offset `dataStart`). A return value larger than its
 * buffer (a lying or broken guest) is clamped.
 */
export function decodeResults(
  batch: EncodedBatch,
  rets: readonly bigint[],
  data: Buffer,
  dataStart: number,
): CallResult[] {
  const results: CallResult[] = rets.map((ret) => ({ ret, out: [] }));
  for (const s of batch.outSlots) {
    const len = keptLength(s, rets[s.call]);
    const from = s.offset - dataStart;
    // Views, not copies: the read-back buffer is per batch and never reused.
    const view = len > 0 ? data.subarray(from, from + len) : data.subarray(0, 0);
    results[s.call].out.push(new Uint8Array(view.buffer, view.byteOffset, view.length));
  }
  return results;
}

/** Reads a results array (signed 64-bit return values). */
export function parseReturnValues(buf: Buffer, count: number): bigint[] {
  const rets: bigint[] = [];
  for (let i = 0; i < count; i++) rets.push(buf.readBigInt64LE(i * 8));
  return rets;
}
