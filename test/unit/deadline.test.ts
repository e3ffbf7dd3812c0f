import { describe, expect, it } from 'vitest';
import { TimeoutError, sleep, withTimeout } from '../../src/util/deadline.js';

describe('withTimeout', () => {
  it('resolves and rejects like the promise when it settles in time', async () => {
    await expect(withTimeout(Promise.resolve(3), 100, 'x')).resolves.toBe(3);
    await expect(withTimeout(Promise.reject(new Error('boom')), 100, 'x')).rejects.toThrow('boom');
  });

  it('rejects with a TimeoutError naming what was waited for', async () => {
    let dropped = false;
    const err = await withTimeout(new Promise(() => {}), 30, 'the thing', () => (dropped = true)).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).message).toBe('the thing timed out after 30 ms');
    expect(err).toMatchObject({ what: 'the thing', timeoutMs: 30 });
    expect(dropped).toBe(true);
  });

  it('ignores a late settlement and supports a custom error', async () => {
    const late = sleep(50).then(() => 1);
    await expect(withTimeout(late, 10, 'late', undefined, (m) => new RangeError(m))).rejects.toBeInstanceOf(
      RangeError,
    );
    await late;
  });
});
