/**
 * The vmi server: a long-lived process that holds one guest open (an API Guest, its shadow
 * resident in the guest) and serves other vmi processes over a Unix socket in the guest's
 * runtime directory (protocol: src/serve/protocol.ts, docs/serve.md).
 *
 * - One request at a time: requests from every connection go through one queue, and each
 *   holds the guest (its lock, the attach) for its own duration only, as the API does.
 * - A client that dies mid-request costs nothing but its reply: the run completes and
 *   detaches as usual; writes to a closed connection are dropped.
 * - A frame over the request bound or that is not MessagePack closes that connection; a
 *   well-framed bad request gets an error reply and the connection stays open.
 * - The socket is 0600 in the guest's 0700 runtime directory. A socket left by a killed
 *   server (nothing accepts on it) is replaced; a live server on it is refused.
 * - close() stops accepting, lets the request in flight finish, and removes the socket.
 */
import { chmodSync, lstatSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Guest, GuestRun, PluginCall } from '../api/guest.js';
import { ensurePrivateDir } from '../util/run-dir.js';
import { ServerConnection } from '../serve/client.js';
import {
  encodeCli,
  encodeFrame,
  encodeTable,
  FrameReader,
  MAX_REQUEST_BYTES,
  parseRequest,
  PROTOCOL_VERSION,
  STATUS_TIMEOUT_MS,
  type CliOutcome,
  type Request,
  type ServerStatus,
} from '../serve/protocol.js';

/** Another server already answers on that socket. */
export class ServerRunningError extends Error {
  override name = 'ServerRunningError';
}

/** How the server answers a `cli` request: the outcome, or why it does not take it. */
export type CliHandler = (
  req: { argv: string[]; cwd: string },
  progress: (line: string) => void,
) => Promise<CliOutcome | { fallback: string }>;

export interface ServerOptions {
  /** The socket to listen on (its directory is created 0700 if missing). */
  socketPath: string;
  /** The open guest the requests run on. */
  guest: Guest;
  /** 'serve' or 'watch' (reported by status). */
  kind: 'serve' | 'watch';
  /** Serves `vmi plugins run` command lines; without it `cli` requests fall back. */
  cli?: CliHandler;
  /** One line per served request and per problem (stderr of `vmi serve`). */
  log?: (line: string) => void;
}

export class VmiServer {
  private readonly connections = new Set<net.Socket>();
  private queue: Promise<unknown> = Promise.resolve();
  private requests = 0;
  private shadowPid: number | undefined;
  private readonly startedAt = new Date().toISOString();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: net.Server,
    private readonly opts: ServerOptions,
  ) {}

  get socketPath(): string {
    return this.opts.socketPath;
  }

  /**
   * Listens on the socket. A stale socket (its server was killed) is replaced; a live server
   * there throws ServerRunningError; a path that is not a socket is refused.
   */
  static async listen(opts: ServerOptions): Promise<VmiServer> {
    await ensurePrivateDir(dirname(opts.socketPath));
    await clearStaleSocket(opts.socketPath);
    const server = net.createServer();
    const vs = new VmiServer(server, opts);
    server.on('connection', (s) => vs.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket is created with this umask: never a moment readable by others.
      const old = process.umask(0o177);
      try {
        server.listen(opts.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
    chmodSync(opts.socketPath, 0o600);
    server.on('error', (e) => opts.log?.(`server socket error: ${e.message}`));
    return vs;
  }

  /** Stops accepting, waits for the request in flight, removes the socket. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve());
        // Idle connections would keep close() waiting: end them once the queue is done.
        void this.queue.finally(() => {
          for (const s of this.connections) s.destroy();
        });
      });
      await this.queue.catch(() => undefined);
      rmSync(this.opts.socketPath, { force: true });
    })();
    return this.closing;
  }

  status(): ServerStatus {
    return {
      pid: process.pid,
      guest: this.opts.guest.name,
      kind: this.opts.kind,
      startedAt: this.startedAt,
      requests: this.requests,
      ...(this.shadowPid !== undefined ? { shadowPid: this.shadowPid } : {}),
    };
  }

  private accept(socket: net.Socket): void {
    this.connections.add(socket);
    const reader = new FrameReader(MAX_REQUEST_BYTES);
    const send = (m: Record<string, unknown>): void => {
      if (socket.destroyed || !socket.writable) return;
      socket.write(encodeFrame({ v: PROTOCOL_VERSION, ...m }));
    };
    // A client that went away mid-request: its reply is dropped, the server goes on.
    socket.on('error', () => undefined);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = reader.push(chunk);
      } catch (e) {
        // Unframeable: say why, then close (the stream cannot be resynchronised).
        send({ id: 0, ok: false, error: { name: 'ProtocolError', message: (e as Error).message } });
        socket.end();
        socket.destroySoon?.();
        return;
      }
      for (const m of messages) this.handle(m, send);
    });
  }

  private handle(m: unknown, send: (m: Record<string, unknown>) => void): void {
    let req: Request;
    try {
      req = parseRequest(m);
    } catch (e) {
      const id = typeof (m as { id?: unknown })?.id === 'number' ? (m as { id: number }).id : 0;
      send({ id, ok: false, error: errorOf(e) });
      return;
    }
    if (req.op === 'status') {
      send({ id: req.id, ok: true, status: this.status() });
      return;
    }
    const job = async (): Promise<void> => {
      if (this.closing) {
        send({
          id: req.id,
          ok: false,
          error: { name: 'ServerClosingError', message: 'the vmi server is shutting down' },
        });
        return;
      }
      const t0 = performance.now();
      const progress = (line: string): void => send({ id: req.id, progress: line });
      try {
        const reply = req.op === 'run' ? await this.run(req) : await this.cli(req, progress);
        this.requests++;
        send({ id: req.id, ok: true, ...reply });
        this.opts.log?.(`served ${describe(req)} in ${(performance.now() - t0).toFixed(1)} ms`);
      } catch (e) {
        this.requests++;
        send({ id: req.id, ok: false, error: errorOf(e) });
        this.opts.log?.(`${describe(req)} failed: ${errorOf(e).message}`);
      }
    };
    this.queue = this.queue.then(job, job);
  }

  private async run(req: Extract<Request, { op: 'run' }>): Promise<Record<string, unknown>> {
    const calls: PluginCall[] = req.calls.map((c) => ({ plugin: c.plugin, options: c.options }));
    const run: GuestRun = await this.opts.guest.runAllWith(calls, req.settings ?? {});
    this.shadowPid = run.timing.shadowPid;
    const arrowOf = req.arrow ? await arrowEncoder() : undefined;
    return {
      results: run.results.map((r) =>
        r ? { table: encodeTable(r.table), ...(arrowOf ? { arrow: arrowOf(r.arrow) } : {}) } : null,
      ),
      failures: run.failures.map((f) => ({ plugin: f.plugin, index: f.index, message: f.message })),
      timing: run.timing,
    };
  }

  private async cli(
    req: Extract<Request, { op: 'cli' }>,
    progress: (line: string) => void,
  ): Promise<Record<string, unknown>> {
    if (!this.opts.cli) return { fallback: 'this server does not serve command lines' };
    let out;
    try {
      out = await this.opts.cli({ argv: req.argv, cwd: req.cwd }, progress);
    } catch (e) {
      if (!req.render) throw e;
      // The native client prints what the command prints for a failed run.
      const { commandErrorLine } = await import('../cli/emit-run.js');
      return {
        rendered: { writes: [[2, Buffer.from(commandErrorLine(e), 'utf8')]], exitCode: 1 },
        serverPid: process.pid,
      };
    }
    if ('fallback' in out) return { fallback: out.fallback };
    const pid = out.tables[0]?.metadata['shadow.pid'];
    if (pid && /^\d+$/.test(pid)) this.shadowPid = Number(pid);
    if (req.render) {
      // The native client has no renderers: render here (an -o path is already absolute,
      // resolved against the client's cwd) and send the bytes.
      const { renderCliOutcome } = await import('./render-cli.js');
      return { rendered: await renderCliOutcome(out, req.render), serverPid: process.pid };
    }
    return { cli: encodeCli(out), serverPid: process.pid };
  }
}

function describe(req: Request): string {
  if (req.op === 'run') return `run ${req.calls.map((c) => c.plugin).join(' ')}`;
  if (req.op === 'cli') return `plugins run ${req.argv.join(' ').slice(0, 200)}`;
  return req.op;
}

function errorOf(e: unknown): { name: string; message: string } {
  if (e instanceof Error) return { name: e.name || 'Error', message: e.message };
  return { name: 'Error', message: String(e) };
}

/** Arrow IPC stream bytes of a table (apache-arrow is loaded only when a client asks). */
async function arrowEncoder(): Promise<(t: import('apache-arrow').Table) => Uint8Array> {
  const { tableToIPC } = await import('apache-arrow');
  return (t) => tableToIPC(t, 'stream');
}

/**
 * Before listening: a socket nothing accepts on (its server was SIGKILLed) is removed; a
 * live server there is ServerRunningError; something that is not a socket is refused.
 */
export async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket())
    throw new ServerRunningError(`${path} exists and is not a socket: refusing to replace it`);
  const conn = await ServerConnection.connect(path, 2000).catch(() => undefined);
  if (conn) {
    let who = '';
    try {
      const r = await conn.request({ op: 'status' }, undefined, STATUS_TIMEOUT_MS);
      const s = r.status as ServerStatus;
      who = ` (pid ${s.pid}, ${s.kind})`;
    } catch {
      // A server that does not answer status is still a live listener.
    } finally {
      conn.close();
    }
    throw new ServerRunningError(`a vmi server already serves this guest at ${path}${who}`);
  }
  rmSync(path, { force: true });
}

/** Is a server listening there? Its status, else undefined. */
export async function probeServer(path: string): Promise<ServerStatus | undefined> {
  const conn = await ServerConnection.connect(path, 1000).catch(() => undefined);
  if (!conn) return undefined;
  try {
    return (await conn.request({ op: 'status' }, undefined, STATUS_TIMEOUT_MS)).status as ServerStatus;
  } catch {
    return undefined;
  } finally {
    conn.close();
  }
}
