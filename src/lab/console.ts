/**
 * Ground truth from inside a lab guest: runs shell commands on the root shell kept on
 * ttyS0 (busybox init's respawned shell in the busybox flavour, vmi-console.service's
 * dash in the debian flavour), reached through QEMU's serial chardev unix socket.
 *
 * Framing: each command is sent base64-encoded and run in a subshell between a begin and an
 * end marker that the guest's printf produces from octal escapes, so neither typed input
 * echoed back by the tty nor a half-typed line can ever look like a marker. Output has \r
 * stripped. Only one client can be connected to the serial socket at a time: close() soon.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { connectUnixSocket } from '../util/unix-socket.js';
import { StringDecoder } from 'node:string_decoder';

export class ConsoleError extends Error {
  override name = 'ConsoleError';
}

export interface ConsoleResult {
  output: string;
  status: number;
}

/** A canonical-mode tty line holds 4095 bytes; keep well below it. */
const MAX_LINE = 3800;

/** The line typed into the guest shell for one command (pure; exported for tests). */
export function framedCommand(command: string, id: string): string {
  const b64 = Buffer.from(command, 'utf8').toString('base64');
  // \025 (Ctrl-U) discards any half-typed input left on the line.
  const line =
    `\x15stty -echo 2>/dev/null; printf '\\001B${id}\\n'; ` +
    `( eval "$(echo ${b64} | base64 -d)" ) </dev/null 2>&1; ` +
    `printf '\\001E${id}:%d\\n' $?\n`;
  if (line.length > MAX_LINE)
    throw new ConsoleError(`command too long for the serial console (${command.length} bytes)`);
  return line;
}

/**
 * Finds a complete framed answer in the console text (with \r already removed);
 * undefined while the end marker has not arrived.
 */
export function parseFramed(text: string, id: string): ConsoleResult | undefined {
  const begin = `\x01B${id}\n`;
  const b = text.indexOf(begin);
  if (b < 0) return undefined;
  const endRe = new RegExp(`\\x01E${id}:(\\d+)\\n`);
  const rest = text.slice(b + begin.length);
  const m = endRe.exec(rest);
  if (!m) return undefined;
  return { output: rest.slice(0, m.index), status: Number(m[1]) };
}

export class GuestConsole {
  private text = '';
  private readonly decoder = new StringDecoder('utf8');
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private closeReason = 'console closed';
  private waiter?: () => void;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.text += this.decoder.write(d).replace(/\r/g, '');
      // Keep memory bounded if nobody is reading (boot messages, stale output).
      if (this.text.length > 4 << 20) this.text = this.text.slice(-(1 << 20));
      this.waiter?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    sock.on('error', (e) => {
      this.closeReason = `console socket error: ${e.message}`;
    });
  }

  static async connect(serialSocket: string, opts: { timeoutMs?: number } = {}): Promise<GuestConsole> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnixSocket(serialSocket, timeoutMs, {
      timeout: () =>
        new ConsoleError(`cannot connect to the guest console ${serialSocket} within ${timeoutMs} ms`),
      failed: (e) => new ConsoleError(`cannot connect to the guest console ${serialSocket}: ${e.message}`),
    });
    return new GuestConsole(sock);
  }

  /** Runs one shell command in the guest (as root); calls are serialized. */
  run(command: string, timeoutMs = 30_000): Promise<ConsoleResult> {
    const next = this.queue.then(
      () => this.runNow(command, timeoutMs),
      () => this.runNow(command, timeoutMs),
    );
    this.queue = next.catch(() => undefined);
    return next;
  }

  private runNow(command: string, timeoutMs: number): Promise<ConsoleResult> {
    if (this.closed) return Promise.reject(new ConsoleError(this.closeReason));
    const id = randomBytes(6).toString('hex');
    const line = framedCommand(command, id);
    this.text = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        const short = command.length > 60 ? `${command.slice(0, 57)}...` : command;
        reject(
          new ConsoleError(`guest console: no answer to ${JSON.stringify(short)} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const check = (): void => {
        const r = parseFramed(this.text, id);
        if (r) {
          clearTimeout(timer);
          this.waiter = undefined;
          this.text = '';
          resolve(r);
        } else if (this.closed) {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(new ConsoleError(this.closeReason));
        }
      };
      this.waiter = check;
      this.sock.write(line);
    });
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }
}
