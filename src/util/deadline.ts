/** A wait that did not complete in time. `what` names the thing that was waited for. */
export class TimeoutError extends Error {
  constructor(
    message: string,
    readonly what?: string,
    readonly timeoutMs?: number,
  ) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/**
 * Race `p` against a timer. On timeout, rejects with a TimeoutError
 * ("<what> timed out after N ms"); `makeError` may build another error class.
 * `onTimeout` (optional) runs before the rejection, e.g. to drop a pending entry.
 */
export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  what: string,
  onTimeout?: () => void,
  makeError: (message: string) => Error = (m) => new TimeoutError(m, what, ms),
): Promise<T> {
  if (ms === Infinity) return p;
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(
      () => {
        if (done) return;
        done = true;
        try {
          onTimeout?.();
        } finally {
          reject(makeError(`${what} timed out after ${ms} ms`));
        }
      },
      Math.max(0, ms),
    );
    p.then(
      (v) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** Promise-based sleep. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, ms);
  });
}
