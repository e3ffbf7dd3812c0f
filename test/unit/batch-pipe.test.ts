import { describe, expect, it } from 'vitest';
import { BatchPipe } from '../../src/shadow/batch-pipe.js';
import { CONTROL, LAYOUT } from '../../src/shadow/layout.js';
import type { ShadowHandle } from '../../src/shadow/shadow.js';
import type { Transport } from '../../src/shadow/transport.js';
import type { Call } from '../../src/sdk/syscall-types.js';

const BASE = 0x7f00_0000_0000n;

/**
 * A shadow's region in host memory, and a stand-in for the stub's batch loop
 * (src/shadow/stub/stub.S): batch N = done + 1 reads {first, count} from slot N & 1, runs
 * entries first.. (a reference bit: the result of call first + index), writes
 * RESULTS[first + i]. Its "system call" returns nr + arg0 for an int first argument, and
 * fills an out buffer (arg1) with the byte arg0 & 0xff, returning its size (arg2).
 */
class FakeShadow {
  readonly region = Buffer.alloc(LAYOUT.size);
  readonly base = BASE;
  readonly pid = 42;
  /** Batches run so far, as [seq, first, count]. */
  readonly ran: Array<[number, number, number]> = [];

  async verify(): Promise<void> {}
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.region.subarray(offset, offset + length));
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.region.set(data, offset);
  }
  async readControl(word: keyof typeof CONTROL): Promise<bigint> {
    return this.region.readBigUInt64LE(LAYOUT.control + CONTROL[word]);
  }
  async writeControl(word: keyof typeof CONTROL, v: bigint): Promise<void> {
    this.region.writeBigUInt64LE(v, LAYOUT.control + CONTROL[word]);
  }
  private word(name: keyof typeof CONTROL, v?: bigint): bigint {
    const at = LAYOUT.control + CONTROL[name];
    if (v !== undefined) this.region.writeBigUInt64LE(v, at);
    return this.region.readBigUInt64LE(at);
  }

  /** Runs every batch rung and not yet run, in turn. */
  runRung(): void {
    while (this.word('doorbell') !== this.word('done')) {
      const seq = this.word('done') + 1n;
      const slot = LAYOUT.control + CONTROL.slots + Number(seq & 1n) * 16;
      const first = Number(this.region.readBigUInt64LE(slot));
      const count = Number(this.region.readBigUInt64LE(slot + 8));
      for (let i = first; i < first + count; i++) {
        const e = LAYOUT.entries + i * LAYOUT.entrySize;
        const mask = this.region.readUInt32LE(e + 56);
        const arg = (j: number): bigint => {
          const v = this.region.readBigUInt64LE(e + 8 + 8 * j);
          if (!(mask & (1 << j))) return v;
          return v < BigInt(i - first)
            ? this.region.readBigInt64LE(LAYOUT.results + (first + Number(v)) * 8)
            : -22n;
        };
        const nr = this.region.readBigUInt64LE(e);
        let ret = nr + arg(0);
        const out = arg(1);
        if (out !== 0n) {
          const size = Number(arg(2));
          this.region.fill(Number(arg(0) & 0xffn), Number(out - BASE), Number(out - BASE) + size);
          ret = BigInt(size);
        }
        this.region.writeBigInt64LE(ret, LAYOUT.results + i * 8);
      }
      this.ran.push([Number(seq), first, count]);
      this.word('done', seq);
    }
  }
}

/** A doorbell-like transport over the fake: the shadow runs what was rung when finish looks. */
function chainingTransport(shadow: FakeShadow): Transport {
  return {
    name: 'doorbell',
    async ring(seq) {
      await this.start!(seq);
      await this.finish!(seq, 1000);
    },
    async start(seq) {
      await shadow.writeControl('doorbell', seq);
    },
    async finish(seq) {
      shadow.runRung();
      if ((await shadow.readControl('done')) < seq) throw new Error(`batch ${seq} never ended`);
    },
    async dismiss() {},
  };
}

/** `n` calls: call i returns 100 + tag + i and fills 16 bytes with tag + i. */
function calls(tag: number, n: number): Call[] {
  return Array.from({ length: n }, (_, i) => ({
    nr: 100,
    args: [
      { kind: 'int', value: BigInt(tag + i) },
      { kind: 'out', size: 16, keep: 'all' },
      { kind: 'int', value: 16n },
    ],
  }));
}

function pipeOn(shadow: FakeShadow): BatchPipe {
  return new BatchPipe(shadow as unknown as ShadowHandle, chainingTransport(shadow));
}

describe('BatchPipe (batches in flight on one shadow)', () => {
  it('rings a second batch before the first ends, in entries and data of its own', async () => {
    const shadow = new FakeShadow();
    const pipe = pipeOn(shadow);
    expect(pipe.chains).toBe(true);
    const a = await pipe.submit(calls(10, 3), 0);
    const b = await pipe.submit(calls(50, 2), 0);
    // Both rung, neither run yet: the doorbell is two ahead of done.
    expect(await shadow.readControl('doorbell')).toBe(2n);
    expect(await shadow.readControl('done')).toBe(0n);
    expect([a.first, b.first]).toEqual([0, 3]);
    expect(b.batch.dataStart).toBe(a.batch.dataEnd);
    const [ra, rb] = await Promise.all([pipe.complete(a, 1000), pipe.complete(b, 1000)]);
    expect(shadow.ran).toEqual([
      [1, 0, 3],
      [2, 3, 2],
    ]);
    expect(ra.map((r) => r.ret)).toEqual([16n, 16n, 16n]);
    expect(ra.map((r) => [...r.out[0]])).toEqual([10, 11, 12].map((v) => new Array(16).fill(v)));
    expect(rb.map((r) => [...r.out[0]])).toEqual([50, 51].map((v) => new Array(16).fill(v)));
  });

  it('resolves a reference within the batch whatever its first entry', async () => {
    const shadow = new FakeShadow();
    const pipe = pipeOn(shadow);
    const a = await pipe.submit(calls(1, 4), 0);
    const b = await pipe.submit(
      [
        { nr: 7, args: [{ kind: 'int', value: 5n }] },
        { nr: 1, args: [{ kind: 'result', index: 10 }] },
      ],
      10,
    );
    expect(b.first).toBe(4);
    await pipe.complete(a, 1000);
    const rb = await pipe.complete(b, 1000);
    // Call 1 gets call 0's result (12), not entry 0's of the other batch.
    expect(rb.map((r) => r.ret)).toEqual([12n, 13n]);
  });

  it('holds a third batch until the first has landed, then places it after the one still in flight', async () => {
    const shadow = new FakeShadow();
    const pipe = pipeOn(shadow);
    const a = await pipe.submit(calls(10, 3), 0);
    const b = await pipe.submit(calls(20, 3), 0);
    let cIn = false;
    const c = pipe.submit(calls(2, 3), 0).then((f) => ((cIn = true), f));
    await new Promise((r) => setTimeout(r, 20));
    expect(cIn).toBe(false);
    await pipe.complete(a, 1000);
    const fc = await c;
    expect(fc.first).toBe(6);
    expect(fc.batch.dataStart).toBe(b.batch.dataEnd);
    const rb = await pipe.complete(b, 1000);
    const rc = await pipe.complete(fc, 1000);
    expect(rb.map((r) => r.out[0][0])).toEqual([20, 21, 22]);
    expect(rc.map((r) => r.out[0][0])).toEqual([2, 3, 4]);
    expect(shadow.ran.map(([seq]) => seq)).toEqual([1, 2, 3]);
  });

  it('starts a batch that does not fit after the one in flight at the start once that one landed', async () => {
    const shadow = new FakeShadow();
    const pipe = pipeOn(shadow);
    const a = await pipe.submit(calls(0, 1500), 0);
    let bIn = false;
    const b = pipe.submit(calls(0, 1000), 0).then((f) => ((bIn = true), f));
    await new Promise((r) => setTimeout(r, 20));
    expect(bIn).toBe(false);
    await pipe.complete(a, 1000);
    expect((await b).first).toBe(0);
    await pipe.complete(await b, 1000);
  });

  it('frees the place of a batch whose ring failed', async () => {
    const shadow = new FakeShadow();
    const t = chainingTransport(shadow);
    let fail = true;
    const start = t.start!.bind(t);
    t.start = async (seq) => {
      if (fail) throw new Error('ring failed');
      await start(seq);
    };
    const pipe = new BatchPipe(shadow as unknown as ShadowHandle, t);
    await expect(pipe.submit(calls(1, 2), 0)).rejects.toThrow('ring failed');
    fail = false;
    const f = await pipe.submit(calls(1, 2), 0);
    expect(f.first).toBe(0);
  });
});
