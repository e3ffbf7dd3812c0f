/**
 * QMP client: line-delimited JSON over a unix socket. Responses are matched by `id`;
 * asynchronous events go to listeners. Every wait has a timeout; socket errors or close
 * reject everything pending; garbage lines never crash the process.
 */
import type net from 'node:net';
import { connectUnixSocket } from '../util/unix-socket.js';
import { TimeoutError } from '../util/deadline.js';

export class QmpError extends Error {
  constructor(
    message: string,
    readonly qmpClass?: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

export type QmpEvent = { event: string; data?: unknown; timestamp?: unknown };

type Pending = {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
};

/** Lines longer than this without a newline are treated as a broken stream. */
const MAX_LINE = 64 * 1024 * 1024;

export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners: ((event: QmpEvent) => void)[] = [];
  private readonly eventWaiters = new Set<{
    name: string;
    resolve: (d: unknown) => void;
    reject: (e: Error) => void;
  }>();
  private closedError?: Error;
  /** Protocol errors seen on the stream (garbage lines, unmatched ids). */
  readonly protocolErrors: QmpError[] = [];
  /** The QMP greeting (`{"QMP": {...}}`). */
  greeting?: unknown;
  private greetingWaiter?: { resolve: (g: unknown) => void; reject: (e: Error) => void };

  private constructor(
    private readonly sock: net.Socket,
    readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', (err) => this.shutdown(new QmpError(`QMP socket ${socketPath}: ${err.message}`)));
    sock.on('close', () => this.shutdown(new QmpError(`QMP connection to ${socketPath} closed`)));
  }

  /** Connect, read the greeting and negotiate capabilities (`qmp_capabilities`). */
  static async connect(socketPath: string, opts: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnixSocket(socketPath, timeoutMs, {
      timeout: () =>
        new TimeoutError(
          `QMP connect timed out after ${timeoutMs} ms on ${socketPath}`,
          'connect',
          timeoutMs,
        ),
      failed: (err) => new QmpError(`cannot connect to QMP socket ${socketPath}: ${err.code ?? err.message}`),
    });
    const client = new QmpClient(sock, socketPath, timeoutMs);
    try {
      await client.waitGreeting(timeoutMs);
      await client.execute('qmp_capabilities', undefined, timeoutMs);
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  private waitGreeting(timeoutMs: number): Promise<unknown> {
    if (this.greeting !== undefined) return Promise.resolve(this.greeting);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        reject(
          new TimeoutError(
            `QMP greeting timed out after ${timeoutMs} ms on ${this.socketPath}`,
            'greeting',
            timeoutMs,
          ),
        );
      }, timeoutMs);
      this.greetingWaiter = {
        resolve: (g) => {
          clearTimeout(timer);
          resolve(g);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE) {
      this.buffer = '';
      this.protocolError(new QmpError(`QMP line longer than ${MAX_LINE} bytes on ${this.socketPath}`));
    }
  }

  private protocolError(err: QmpError): void {
    this.protocolErrors.push(err);
    if (this.protocolErrors.length > 100) this.protocolErrors.shift();
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.protocolError(new QmpError(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      this.protocolError(new QmpError(`QMP sent a non-object message: ${line.slice(0, 200)}`));
      return;
    }
    const m = msg as Record<string, unknown>;
    if ('QMP' in m) {
      this.greeting = m;
      this.greetingWaiter?.resolve(m);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof m['event'] === 'string') {
      const ev: QmpEvent = { event: m['event'], data: m['data'], timestamp: m['timestamp'] };
      for (const l of this.listeners) {
        try {
          l(ev);
        } catch {
          // a listener's failure is not the connection's
        }
      }
      for (const w of [...this.eventWaiters]) if (w.name === ev.event) w.resolve(ev.data);
      return;
    }
    const id = m['id'] === undefined ? undefined : String(m['id']);
    const p = id !== undefined ? this.pending.get(id) : undefined;
    if (!p) {
      this.protocolError(
        new QmpError(`QMP reply with unknown id ${JSON.stringify(m['id'])}: ${line.slice(0, 200)}`),
      );
      return;
    }
    this.pending.delete(id!);
    clearTimeout(p.timer);
    if ('return' in m) {
      p.resolve(m['return']);
    } else if (typeof m['error'] === 'object' && m['error'] !== null) {
      const err = m['error'] as { class?: unknown; desc?: unknown };
      const cls = typeof err.class === 'string' ? err.class : undefined;
      const desc = typeof err.desc === 'string' ? err.desc : JSON.stringify(err);
      p.reject(new QmpError(`QMP ${p.command} failed: ${desc}${cls ? ` (${cls})` : ''}`, cls));
    } else {
      p.reject(new QmpError(`QMP ${p.command}: malformed reply ${line.slice(0, 200)}`));
    }
  }

  private shutdown(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new QmpError(`QMP ${p.command} aborted: ${err.message}`));
    }
    this.pending.clear();
    for (const w of [...this.eventWaiters]) w.reject(err);
    this.greetingWaiter?.reject(err);
    this.greetingWaiter = undefined;
  }

  /** Run a QMP command and return its `return` value. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    if (this.closedError) {
      return Promise.reject(new QmpError(`QMP ${command}: ${this.closedError.message}`));
    }
    const id = `vmi-${this.nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg['arguments'] = args;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new TimeoutError(
            `QMP ${command} timed out after ${timeoutMs} ms on ${this.socketPath}`,
            command,
            timeoutMs,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** `human-monitor-command`: run an HMP command line and return its text output. */
  async hmp(commandLine: string, timeoutMs = this.timeoutMs): Promise<string> {
    const out = await this.execute<unknown>(
      'human-monitor-command',
      { 'command-line': commandLine },
      timeoutMs,
    );
    return typeof out === 'string' ? out : '';
  }

  onEvent(listener: (event: QmpEvent) => void): void {
    this.listeners.push(listener);
  }

  /** Resolve with the data of the next event named `name` (events before the call are not seen). */
  waitForEvent(name: string, timeoutMs: number): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const w = {
        name,
        resolve: (d: unknown) => {
          clearTimeout(timer);
          this.eventWaiters.delete(w);
          resolve(d);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          this.eventWaiters.delete(w);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.eventWaiters.delete(w);
        reject(
          new TimeoutError(
            `QMP event ${name} timed out after ${timeoutMs} ms on ${this.socketPath}`,
            `event ${name}`,
            timeoutMs,
          ),
        );
      }, timeoutMs);
      this.eventWaiters.add(w);
    });
  }

  close(): void {
    this.shutdown(new QmpError(`QMP connection to ${this.socketPath} closed`));
    this.sock.destroy();
  }
}
