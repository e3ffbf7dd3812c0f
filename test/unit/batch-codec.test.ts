import { describe, expect, it } from 'vitest';
import {
  decodeResults,
  encodeBatch,
  parseReturnValues,
  resultExtent,
  splitIntoBatches,
  BatchTooLargeError,
} from '../../src/shadow/batch-codec.js';
import { LAYOUT } from '../../src/shadow/layout.js';
import { STUB_CONSTANTS, STUB_SYMBOLS, STUB_CODE_HEX } from '../../src/shadow/stub/stub-code.js';
import type { Call } from '../../src/sdk/syscall-types.js';

const path = (s: string) => ({ kind: 'in' as const, data: new TextEncoder().encode(s + '\0') });

describe('batch encoding for the shadow stub', () => {
  it('lays out inputs first, outputs after, and marks result references', () => {
    const base = 0x7f00_0000_0000n;
    const calls: Call[] = [
      { nr: 257, args: [{ kind: 'int', value: -100n }, path('/proc/1/stat'), { kind: 'int', value: 0n }] },
      {
        nr: 0,
        args: [
          { kind: 'result', index: 0 },
          { kind: 'out', size: 100, keep: 'ret' },
          { kind: 'int', value: 100n },
        ],
      },
      { nr: 3, args: [{ kind: 'result', index: 0 }] },
    ];
    const b = encodeBatch(calls, base);
    expect(b.count).toBe(3);
    expect(b.input.length).toBe(16); // "/proc/1/stat\0" padded to 8
    const e = (i: number, word: number) => b.entries.readBigUInt64LE(i * 64 + word * 8);
    expect(e(0, 0)).toBe(257n);
    expect(e(0, 1)).toBe(BigInt.asUintN(64, -100n));
    expect(e(0, 2)).toBe(base + BigInt(LAYOUT.data));
    expect(e(0, 7)).toBe(0n);
    expect(e(1, 1)).toBe(0n); // index of call 0
    expect(e(1, 2)).toBe(base + BigInt(LAYOUT.data + 16)); // output after the inputs
    expect(e(1, 7)).toBe(1n); // arg 0 is a reference
    expect(e(2, 7)).toBe(1n);

    const rets = [3n, 42n, 0n];
    const ext = resultExtent(b, rets);
    expect(ext).toEqual({ start: 16, end: 16 + 42 });
    const data = Buffer.alloc(42, 0x61);
    const results = decodeResults(b, rets, data, ext.start);
    expect(results[1].out[0].length).toBe(42);
    expect(results[0].out).toEqual([]);
  });

  it('clamps a return value larger than its buffer and keeps failures negative', () => {
    const calls: Call[] = [
      {
        nr: 0,
        args: [
          { kind: 'int', value: 3n },
          { kind: 'out', size: 8, keep: 'ret' },
          { kind: 'int', value: 8n },
        ],
      },
    ];
    const b = encodeBatch(calls, 0x1000n);
    expect(resultExtent(b, [1_000_000n]).end).toBe(8);
    expect(decodeResults(b, [-2n], Buffer.alloc(0), 0)[0]).toEqual({ ret: -2n, out: [new Uint8Array(0)] });
    const buf = Buffer.alloc(16);
    buf.writeBigInt64LE(-13n, 0);
    buf.writeBigInt64LE(7n, 8);
    expect(parseReturnValues(buf, 2)).toEqual([-13n, 7n]);
  });

  it('splits long lists and refuses references across batches', () => {
    const many: Call[] = Array.from({ length: LAYOUT.maxCalls + 5 }, () => ({ nr: 39, args: [] }));
    expect(splitIntoBatches(many)).toEqual([
      { start: 0, end: LAYOUT.maxCalls },
      { start: LAYOUT.maxCalls, end: LAYOUT.maxCalls + 5 },
    ]);
    const crossing: Call[] = [
      ...many.slice(0, LAYOUT.maxCalls),
      { nr: 3, args: [{ kind: 'result', index: 0 }] },
    ];
    expect(() => splitIntoBatches(crossing)).toThrow(BatchTooLargeError);
    const forward: Call[] = [
      { nr: 3, args: [{ kind: 'result', index: 1 }] },
      { nr: 39, args: [] },
    ];
    expect(() => splitIntoBatches(forward)).toThrow(/not an earlier call/);
    const huge: Call[] = [{ nr: 0, args: [{ kind: 'out', size: LAYOUT.size, keep: 'ret' }] }];
    expect(() => splitIntoBatches(huge)).toThrow(BatchTooLargeError);
  });

  it('agrees with the constants the stub was assembled with', () => {
    expect(STUB_CONSTANTS.CTL).toBe(LAYOUT.control);
    expect(STUB_CONSTANTS.ENTRIES).toBe(LAYOUT.entries);
    expect(STUB_CONSTANTS.RESULTS).toBe(LAYOUT.results);
    expect(STUB_CONSTANTS.ENTRIES + STUB_CONSTANTS.MAX_CALLS * STUB_CONSTANTS.ENTRY_SIZE).toBeLessThanOrEqual(
      LAYOUT.results,
    );
    expect(LAYOUT.results + LAYOUT.maxCalls * 8).toBeLessThanOrEqual(LAYOUT.data);
    expect(STUB_CODE_HEX.length / 2).toBe(STUB_SYMBOLS.stub_end);
    expect(STUB_SYMBOLS.stub_end).toBeLessThan(LAYOUT.control);
  });
});

describe('SDK batch limits', () => {
  it('fit the shadow engine batch buffer', async () => {
    const { DEFAULT_BATCH_LIMITS } = await import('../../src/sdk/limits.js');
    expect(DEFAULT_BATCH_LIMITS.maxCalls).toBeLessThanOrEqual(LAYOUT.maxCalls);
    // Every buffer is 8-byte aligned in the data area: allow that padding per call.
    const worst =
      DEFAULT_BATCH_LIMITS.maxOutBytes +
      DEFAULT_BATCH_LIMITS.maxInBytes +
      2 * 8 * DEFAULT_BATCH_LIMITS.maxCalls;
    expect(worst).toBeLessThanOrEqual(LAYOUT.size - LAYOUT.data);
  });
});
