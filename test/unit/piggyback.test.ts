/**
 * PiggybackExecutor: queued calls ride along with the next batch, with their result
 * references and results kept apart from the carrier's.
 */
import { describe, expect, it } from 'vitest';
import { PiggybackExecutor } from '../../src/runner/piggyback.js';
import type { Call, CallResult, SyscallExecutor } from '../../src/sdk/syscall-types.js';

/** Echoes each call's position and resolved references, and records every batch. */
class RecordingExecutor implements SyscallExecutor {
  batches: Call[][] = [];
  fail = false;
  async run(calls: readonly Call[]): Promise<CallResult[]> {
    if (this.fail) throw new Error('shadow lost');
    this.batches.push([...calls]);
    return calls.map((c, i) => {
      const ref = c.args.find((a) => a.kind === 'result');
      return { ret: BigInt(ref && ref.kind === 'result' ? 1000 + ref.index : i), out: [] };
    });
  }
}

const call = (nr: number, ref?: number): Call => ({
  nr,
  args: ref === undefined ? [] : [{ kind: 'result', index: ref }],
});

describe('PiggybackExecutor', () => {
  it('sends queued calls with the next batch and splits the results', async () => {
    const inner = new RecordingExecutor();
    const carrier = new PiggybackExecutor(inner);
    const riding = carrier.rider.run([call(63), call(0, 0)]);
    const own = await carrier.run([call(257), call(0, 0), call(3, 0)]);
    expect(inner.batches).toHaveLength(1);
    expect(inner.batches[0].map((c) => c.nr)).toEqual([63, 0, 257, 0, 3]);
    // The carrier's references moved by the two riders; the rider's stayed.
    expect(own.map((r) => r.ret)).toEqual([2n, 1002n, 1002n]);
    expect((await riding).map((r) => r.ret)).toEqual([0n, 1000n]);
    // Later batches carry nothing.
    await carrier.run([call(39)]);
    expect(inner.batches[1].map((c) => c.nr)).toEqual([39]);
  });

  it('flush sends riders alone when no batch came', async () => {
    const inner = new RecordingExecutor();
    const carrier = new PiggybackExecutor(inner);
    const riding = carrier.rider.run([call(63)]);
    await carrier.flush();
    expect(inner.batches).toEqual([[call(63)]]);
    expect((await riding)[0].ret).toBe(0n);
    await carrier.flush();
    expect(inner.batches).toHaveLength(1);
  });

  it('leaves riders waiting when they would push the batch over the limits', async () => {
    const inner = new RecordingExecutor();
    const carrier = new PiggybackExecutor(inner, { maxCalls: 3, maxOutBytes: 1 << 20, maxInBytes: 1 << 20 });
    const riding = carrier.rider.run([call(63), call(39)]);
    await carrier.run([call(1), call(2)]);
    expect(inner.batches.map((b) => b.length)).toEqual([2]);
    await carrier.run([call(1)]);
    expect(inner.batches.map((b) => b.map((c) => c.nr))).toEqual([
      [1, 2],
      [63, 39, 1],
    ]);
    expect(await riding).toHaveLength(2);
  });

  it('rejects riders with the carrier when the batch fails', async () => {
    const inner = new RecordingExecutor();
    const carrier = new PiggybackExecutor(inner);
    const riding = carrier.rider.run([call(63)]);
    inner.fail = true;
    await expect(carrier.run([call(39)])).rejects.toThrow('shadow lost');
    await expect(riding).rejects.toThrow('shadow lost');
  });
});
