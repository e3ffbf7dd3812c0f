import type net from 'node:net';
import { connectUnixSocket } from '../util/unix-socket.js';

/**
 * The host end of the shadow's wake-up line: a QEMU serial chardev socket. One byte
 * written here becomes a UART interrupt in the guest that ends the shadow's ppoll.
 * QEMU takes one client per chardev at a time, so the connection is held for a session.
 */
const WAKE_BYTES = Buffer.alloc(16, 0x77);

export class WakeLine {
  private sock?: net.Socket;
  private failed = false;
  private lastPokeAt = -Infinity;

  constructor(readonly socketPath: string) {}

  /** Connects; a guest without the line (or a busy one) just means no pokes. */
  async open(timeoutMs = 1000): Promise<boolean> {
    if (this.sock) return true;
    this.sock = await connectUnixSocket(this.socketPath, timeoutMs, {
      timeout: () => new Error('timeout'),
      failed: (err) => err,
    }).catch(() => undefined);
    if (!this.sock) {
      this.failed = true;
      return false;
    }
    this.sock.on('error', () => {
      this.failed = true;
    });
    // Whatever the guest writes back is of no interest.
    this.sock.on('data', () => {});
    return true;
  }

  get usable(): boolean {
    return this.sock !== undefined && !this.failed;
  }

  /**
   * Sixteen bytes, not one: the guest's 16550 raises its receive interrupt at once only
   * when the FIFO reaches its trigger level (8 bytes under Linux); a single byte waits
   * for the FIFO timeout, four character times (~4 ms at 9600 baud).
   */
  poke(): void {
    if (!this.usable) return;
    this.sock!.write(WAKE_BYTES);
    this.lastPokeAt = performance.now();
  }

  /**
   * Pokes unless a poke went out less than `withinMs` ago: that one is still on its way
   * (a wake-up takes ~1–2 ms under TCG), and every extra one costs the guest an
   * interrupt and a tty work item in the middle of the next batch.
   */
  pokeUnlessRecent(withinMs: number): void {
    if (performance.now() - this.lastPokeAt >= withinMs) this.poke();
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}
