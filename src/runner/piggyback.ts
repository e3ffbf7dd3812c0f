import { batchCost, DEFAULT_BATCH_LIMITS, fitsLimits, type BatchLimits } from '../sdk/limits.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';

interface Rider {
  calls: readonly Call[];
  resolve: (results: CallResult[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Lets small, independent calls (the run's uname) ride along with the next batch that a
 * plugin submits, instead of costing a guest entry of their own: through a resident
 * shadow one round trip is ~0.3 ms of a ~15 ms pslist. `rider.run()` only queues; the
 * calls go out with the next `run()` that has room for them, or with `flush()`.
 */
export class PiggybackExecutor implements SyscallExecutor {
  private queued: Rider[] = [];
  // A real private field: the carrier sits behind every plugin's policy executor.
  readonly #inner: SyscallExecutor;

  constructor(
    inner: SyscallExecutor,
    private readonly limits: Readonly<BatchLimits> = DEFAULT_BATCH_LIMITS,
  ) {
    this.#inner = inner;
  }

  /** An executor whose calls wait for the next carrier batch (or `flush()`). */
  readonly rider: SyscallExecutor = {
    run: (calls) =>
      new Promise<CallResult[]>((resolve, reject) => this.queued.push({ calls, resolve, reject })),
  };

  async run(calls: readonly Call[]): Promise<CallResult[]> {
    const riders = this.boarding(calls);
    if (riders.length === 0) return this.#inner.run(calls);
    return this.carry(riders, calls);
  }

  /** Sends whatever still waits, on its own. */
  async flush(): Promise<void> {
    const riders = this.queued.splice(0);
    if (riders.length > 0) await this.carry(riders, []).catch(() => {});
  }

  /** The queued riders that fit beside `calls` in one batch (the SDK's limits). */
  private boarding(calls: readonly Call[]): Rider[] {
    if (this.queued.length === 0) return [];
    if (!fitsLimits(batchCost([...this.queued.flatMap((r) => r.calls), ...calls]), this.limits)) return [];
    return this.queued.splice(0);
  }

  /** Runs the riders' calls ahead of `calls` (their result references moved along). */
  private async carry(riders: Rider[], calls: readonly Call[]): Promise<CallResult[]> {
    const combined: Call[] = [];
    const starts: number[] = [];
    for (const r of [...riders.map((x) => x.calls), calls]) {
      starts.push(combined.length);
      combined.push(...shiftReferences(r, combined.length));
    }
    let results: CallResult[];
    try {
      results = await this.#inner.run(combined);
    } catch (err) {
      for (const r of riders) r.reject(err);
      throw err;
    }
    riders.forEach((r, i) => r.resolve(results.slice(starts[i], starts[i] + r.calls.length)));
    return results.slice(starts[riders.length]);
  }
}

Object.freeze(PiggybackExecutor.prototype);

/** The same calls placed `by` entries later in a batch: 'result' indices follow. */
function shiftReferences(calls: readonly Call[], by: number): readonly Call[] {
  if (by === 0) return calls;
  return calls.map((c) =>
    c.args.some((a) => a.kind === 'result')
      ? { nr: c.nr, args: c.args.map((a) => (a.kind === 'result' ? { ...a, index: a.index + by } : a)) }
      : c,
  );
}
