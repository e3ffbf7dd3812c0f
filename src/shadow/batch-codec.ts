import { batchCost, DEFAULT_BATCH_LIMITS, planChunks } from '../sdk/limits.js';
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
  /** Input bytes, laid out from the start of the data area (outputs follow them). */
  input: Buffer;
  outSlots: OutSlot[];
}

export class BatchTooLargeError extends Error {}

const DATA_CAPACITY = LAYOUT.size - LAYOUT.data;

/** Bytes of data area a call needs (inputs plus output buffers, 8-byte aligned). */
export function dataBytesOf(call: Call): number {
  let n = 0;
  for (const a of call.args) {
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
  const entries = calls.map((call, group) => {
    const need = dataBytesOf(call);
    if (need > DATA_CAPACITY) {
      throw new BatchTooLargeError(`a single call needs ${need} bytes of buffer, more than ${DATA_CAPACITY}`);
    }
    const cost = batchCost([call]);
    return { group, outBytes: cost.out, inBytes: cost.in };
  });
  const groups = planChunks(entries, DEFAULT_BATCH_LIMITS).map(([start, end]) => ({ start, end }));
  for (const g of groups) {
    for (let i = g.start; i < g.end; i++) {
      for (const a of calls[i].args) {
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

/**
 * Encodes calls for a scratch region at `base`. 'in' and 'out' arguments become
 * absolute guest addresses in the data area; 'result' arguments become indices and set
 * the entry's reference bit so that the stub substitutes the earlier return value.
 * `indexBase` is the index of the first call within the caller's whole list.
 */
export function encodeBatch(calls: readonly Call[], base: bigint, indexBase = 0): EncodedBatch {
  if (calls.length > LAYOUT.maxCalls) throw new BatchTooLargeError(`${calls.length} calls in one batch`);
  const entries = Buffer.alloc(calls.length * LAYOUT.entrySize);
  const dataSize = calls.reduce((n, c) => n + dataBytesOf(c), 0);
  if (dataSize > DATA_CAPACITY) throw new BatchTooLargeError(`${dataSize} bytes of buffers in one batch`);
  // Inputs first and contiguous, so that one write sends them all; output room after.
  // In-out buffers live among the inputs (the host writes them), and are read back as outputs.
  let inSize = 0;
  for (const c of calls)
    for (const a of c.args)
      if (a.kind === 'in') inSize += align8(a.data.length);
      else if (a.kind === 'out' && isInOut(a)) inSize += align8(a.size);
  const input = Buffer.alloc(inSize);
  const outSlots: OutSlot[] = [];
  let inCursor = 0;
  let cursor = inSize;
  calls.forEach((call, i) => {
    if (call.args.length > 6) throw new BatchTooLargeError(`call ${i} has ${call.args.length} arguments`);
    const e = i * LAYOUT.entrySize;
    entries.writeBigUInt64LE(BigInt(call.nr), e);
    let mask = 0n;
    call.args.forEach((arg, j) => {
      let value: bigint;
      switch (arg.kind) {
        case 'int':
          value = BigInt.asUintN(64, arg.value);
          break;
        case 'in':
          input.set(arg.data, inCursor);
          value = base + BigInt(LAYOUT.data + inCursor);
          inCursor += align8(arg.data.length);
          break;
        case 'out':
          if (arg.init !== undefined) {
            value = base + BigInt(LAYOUT.data + inCursor);
            input.set(inOutBytes(arg, value), inCursor);
            outSlots.push({ call: i, offset: inCursor, size: arg.size, keep: arg.keep });
            inCursor += align8(arg.size);
            break;
          }
          outSlots.push({ call: i, offset: cursor, size: arg.size, keep: arg.keep });
          value = base + BigInt(LAYOUT.data + cursor);
          cursor += align8(arg.size);
          break;
        case 'result':
          value = BigInt(arg.index - indexBase);
          mask |= 1n << BigInt(j);
          break;
      }
      entries.writeBigUInt64LE(value, e + 8 + 8 * j);
    });
    entries.writeBigUInt64LE(mask, e + 56);
  });
  return { count: calls.length, entries, input, outSlots };
}

/** The range of the data area that a batch's results need to be read from. */
export function resultExtent(batch: EncodedBatch, rets: readonly bigint[]): { start: number; end: number } {
  let start = batch.input.length;
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
