import net from 'node:net';

/**
 * The host end of the shadow's wake-up line: a QEMU serial chardev socket. One byte
 * written here becomes a UART interrupt in the guest that ends the shadow's ppoll.
 * QEMU takes one client per chardev at a time, so the connection is held for a session.
 */
const WAKE_BYTES = Buffer.alloc(16, 0x77);

export class WakeLine {
  private sock?: net.Socket;
  private connecting?: Promise<boolean>;
  /** Ends a connection still under way at close(): no timer left, no waiter left hanging. */
  private abandon?: () => void;
  private failed = false;
  private closed = false;
  private lastPokeAt = -Infinity;

  constructor(readonly socketPath: string) {}

  /**
   * Starts connecting and returns at once: pokes written before the connection is made
   * wait in the socket and go out with it. For a resident shadow, which is usually awake
   * (a run right after another) or needs its poke only at the first batch, waiting for
   * QEMU to accept was ~0.5 ms of every attach. A failure just means no pokes.
   */
  begin(timeoutMs = 1000): void {
    if (this.sock || this.closed) return;
    const sock = net.createConnection({ path: this.socketPath });
    this.sock = sock;
    this.connecting = new Promise<boolean>((resolve) => {
      const end = (ok: boolean) => {
        clearTimeout(timer);
        this.abandon = undefined;
        if (!ok) this.failed = true;
        resolve(ok);
      };
      const timer = setTimeout(() => {
        sock.destroy();
        end(false);
      }, timeoutMs);
      this.abandon = () => end(false);
      sock.once('connect', () => end(true));
      sock.on('error', () => end(false));
    });
    // Whatever the guest writes back is of no interest.
    sock.on('data', () => {});
  }

  /**
   * Resolves once a connection begun is made or has failed (at once when none is under
   * way). A poke written before that waits in the socket until Node sees the connection,
   * which a busy poll loop would put off: the doorbell awaits this before it pokes.
   */
  async settled(): Promise<void> {
    if (this.connecting) await this.connecting;
  }

  /** Connects and waits for it; a guest without the line (or a busy one) just means no pokes. */
  async open(timeoutMs = 1000): Promise<boolean> {
    this.begin(timeoutMs);
    return (await this.connecting!) && !this.failed;
  }

  /** Not known to fail: connected, connecting, or not tried yet (a poke connects it). */
  get usable(): boolean {
    return !this.failed && !this.closed;
  }

  /**
   * Sixteen bytes, not one: the guest's 16550 raises its receive interrupt at once only
   * when the FIFO reaches its trigger level (8 bytes under Linux); a single byte waits
   * for the FIFO timeout, four character times (~4 ms at 9600 baud).
   * Connects first when no connection was begun: a resident shadow found awake needs no
   * line, and connecting cost ~0.3 ms of every attach (the socket, then QEMU's accept).
   */
  poke(): void {
    this.begin();
    if (!this.usable || !this.sock) return;
    this.sock.write(WAKE_BYTES);
    this.lastPokeAt = performance.now();
  }

  /**
   * Connects the line if it is not (and waits for it), then pokes unless a poke went out
   * less than `withinMs` ago: for a shadow found asleep, whose wake-up should not wait for
   * the event loop's next turn (a busy attach or poll puts that off).
   */
  async pokeWhenUp(withinMs = 0): Promise<void> {
    this.begin();
    await this.settled();
    this.pokeUnlessRecent(withinMs);
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
    this.closed = true;
    this.abandon?.();
    this.sock?.destroy();
    this.sock = undefined;
  }
}
