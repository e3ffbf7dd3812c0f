/**
 * The client side of the vmi server protocol (src/serve/protocol.ts): find the server of a
 * guest, connect, send requests, read replies. Used by the fast CLI path (fast-cli.ts) and
 * by the API's openGuest; it loads no oclif and no guest engine.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import {
  encodeFrame,
  FrameReader,
  MAX_REPLY_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  SOCKET_NAME,
} from './protocol.js';

/** The server answered with an error (its `name` and `message` are the server's). */
export class ServerRequestError extends Error {
  constructor(
    readonly remoteName: string,
    message: string,
  ) {
    super(message);
    this.name = 'ServerRequestError';
  }
}

/** The connection ended before the reply (the server exited or was killed). */
export class ServerGoneError extends Error {
  override name = 'ServerGoneError';
}

function runRoot(): string {
  return join(process.env.VMI_RUNTIME_ROOT ?? '/tmp', `vmi-${process.getuid?.() ?? 0}`);
}

/**
 * The server socket of a guest: a lab guest's runtime directory (guests/NAME, as
 * src/lab/host.ts places it) or a foreign QEMU's (foreign/<sha256 of the QMP socket's
 * absolute path>, as src/targets/qmp.ts foreignRunDir does). Pure.
 */
export function serverSocketPath(spec: { lab: string } | { qmp: string }, root: string = runRoot()): string {
  if ('lab' in spec) return join(root, 'guests', spec.lab, SOCKET_NAME);
  const key = createHash('sha256').update(resolve(spec.qmp)).digest('hex').slice(0, 16);
  return join(root, 'foreign', key, SOCKET_NAME);
}

type Reply = Record<string, unknown>;

/** One connection to a vmi server; requests may overlap (the server serves them in turn). */
export class ServerConnection {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (r: Reply) => void; reject: (e: Error) => void; progress?: (line: string) => void }
  >();
  private ended: Error | undefined;
  private weak = false;

  private constructor(
    private readonly socket: net.Socket,
    readonly path: string,
  ) {
    const reader = new FrameReader(MAX_REPLY_BYTES);
    socket.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = reader.push(chunk);
      } catch (e) {
        this.end(e as Error);
        socket.destroy();
        return;
      }
      for (const m of messages) this.dispatch(m);
    });
    socket.on('error', (e) => this.end(new ServerGoneError(`vmi server at ${path}: ${e.message}`)));
    socket.on('close', () => this.end(new ServerGoneError(`vmi server at ${path} closed the connection`)));
  }

  /**
   * Connects; undefined when no server listens there (no socket, or a stale one left by a
   * killed server: ECONNREFUSED). Other failures reject.
   */
  static async connect(path: string, timeoutMs = 1000): Promise<ServerConnection | undefined> {
    if (!existsSync(path)) return undefined;
    return new Promise((resolveConn, reject) => {
      const s = net.createConnection({ path });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ServerGoneError(`vmi server at ${path} did not accept the connection in ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolveConn(new ServerConnection(s, path));
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolveConn(undefined);
        else reject(err);
      });
    });
  }

  /**
   * Sends one request; resolves with its `ok: true` reply, rejects with ServerRequestError,
   * or with ServerGoneError when the connection ends first or no reply came within
   * `timeoutMs` (when given: for short requests such as status, so that a stopped server
   * is not waited for forever; the connection is then closed).
   */
  request(
    body: Record<string, unknown>,
    progress?: (line: string) => void,
    timeoutMs?: number,
  ): Promise<Reply> {
    if (this.ended) return Promise.reject(this.ended);
    const id = this.nextId++;
    // A weak connection still keeps the process alive while one of its requests waits.
    this.socket.ref();
    return new Promise<Reply>((resolveReply, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.end(new ServerGoneError(`vmi server at ${this.path} did not answer in ${timeoutMs} ms`));
              this.socket.destroy();
            }, timeoutMs);
      const settle = (): void => {
        if (timer) clearTimeout(timer);
        if (this.weak && this.waiting.size === 0) this.socket.unref();
      };
      this.waiting.set(id, {
        resolve: (r) => {
          settle();
          resolveReply(r);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
        ...(progress ? { progress } : {}),
      });
      this.socket.write(encodeFrame({ ...body, v: PROTOCOL_VERSION, id }));
    });
  }

  close(): void {
    this.ended ??= new ServerGoneError('connection closed');
    this.socket.destroy();
  }

  /** Keeps the process alive only while a request waits (an idle connection does not). */
  unref(): void {
    this.weak = true;
    if (this.waiting.size === 0) this.socket.unref();
  }

  private dispatch(m: unknown): void {
    if (typeof m !== 'object' || m === null) return;
    const r = m as Reply;
    const w = typeof r.id === 'number' ? this.waiting.get(r.id) : undefined;
    if (!w) return;
    if (typeof r.progress === 'string') {
      w.progress?.(r.progress);
      return;
    }
    this.waiting.delete(r.id as number);
    if (r.ok === true) w.resolve(r);
    else {
      const e = (r.error ?? {}) as Record<string, unknown>;
      w.reject(
        new ServerRequestError(
          typeof e.name === 'string' ? e.name : 'Error',
          typeof e.message === 'string' ? e.message : 'the server reported an error without a message',
        ),
      );
    }
  }

  private end(err: Error): void {
    this.ended ??= err;
    for (const w of this.waiting.values()) w.reject(err instanceof ProtocolError ? err : this.ended);
    this.waiting.clear();
  }
}
