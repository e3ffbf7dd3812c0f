import net from 'node:net';

/**
 * Connects to a unix socket with a deadline. The caller names its own errors (a timeout
 * and a refused/missing socket read differently for QMP, the gdbstub or a console), so
 * that every endpoint reports the path and what to do in its own words.
 */
export function connectUnixSocket(
  path: string,
  timeoutMs: number,
  errors: { timeout: () => Error; failed: (err: NodeJS.ErrnoException) => Error },
): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const s = net.createConnection({ path });
    const timer = setTimeout(() => {
      s.destroy();
      reject(errors.timeout());
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(errors.failed(err));
    });
  });
}
