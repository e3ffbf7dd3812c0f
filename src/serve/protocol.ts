/**
 * The vmi server protocol, version 1 (docs/serve.md): how other vmi processes talk to a
 * `vmi serve` (or `vmi watch`) that holds a guest open with its resident shadow.
 *
 * Transport: a Unix stream socket, `serve.sock` in the guest's private runtime directory
 * (0700 directory, 0600 socket: the owner only). Framing: each message is a 4-byte
 * big-endian unsigned length, then that many bytes of MessagePack (standard MessagePack:
 * msgpackr with `useRecords: false`; 64-bit integers decode as BigInt). A frame longer than
 * the reader's bound is a protocol error and closes the connection: requests are bounded
 * by MAX_REQUEST_BYTES (the server's side), replies by MAX_REPLY_BYTES (the client's).
 *
 * Messages are maps with `v` (protocol version) and `id` (the client's request number):
 * - request  `{ v, id, op: 'status' }` → reply `{ v, id, ok: true, status }`
 * - request  `{ v, id, op: 'run', calls: [{ plugin, options }], arrow?, settings? }` → reply
 *   `{ v, id, ok: true, results, failures, timing }` (the API's runAll; with `arrow: true`
 *   every result carries its table as an Arrow IPC stream too, for clients in other
 *   languages)
 * - request  `{ v, id, op: 'cli', argv, cwd }` (the arguments after `vmi plugins run`) →
 *   reply `{ v, id, ok: true, cli }` (tables, stderr lines, exit code, output settings)
 *   or `{ v, id, ok: true, fallback: reason }` when the server does not take that command
 *   line (the client then runs the command itself). With `render: { stdoutIsTTY }` (the
 *   native client, which has no renderers) the server renders too and replies
 *   `{ v, id, ok: true, rendered: { writes: [[fd, bytes]], exitCode } }` instead of `cli`:
 *   the stdout (fd 1) and stderr (fd 2) bytes in the order the command writes them
 *   (src/server/render-cli.ts).
 * - any error → `{ v, id, ok: false, error: { name, message } }`; the connection stays open
 * - while a request runs: `{ v, id, progress: line }` (waiting for the guest, --timing)
 *
 * Tables travel as their plain cells (ResultTable): columns, row-major cells (number,
 * bigint, string, boolean, Date, null, and absent values as `{ absent, reason }`), tree
 * depths, errors, metadata. That is what every renderer consumes, so the client's output
 * is byte for byte the output of the same command without a server.
 */
import { Packr } from 'msgpackr/pack';
import {
  AbsentValue,
  COLUMN_TYPES,
  type ColumnSpec,
  type ColumnType,
  type RowValue,
} from '../output/columns.js';
import type { ResultTable } from '../output/table.js';

export const PROTOCOL_VERSION = 1;
/** The socket's file name in the guest's runtime directory. */
export const SOCKET_NAME = 'serve.sock';
/** Bound on one request frame (bytes): requests are command lines and plugin options. */
export const MAX_REQUEST_BYTES = 1 << 20;
/** Bound on one reply frame (bytes): replies hold whole tables. */
export const MAX_REPLY_BYTES = 512 << 20;
/**
 * How long a client waits for a status reply (ms): a server that accepts connections but
 * does not answer (stopped, stuck) is then treated as absent rather than waited for.
 */
export const STATUS_TIMEOUT_MS = 2000;
/** Bound on the argv of a `cli` request (arguments) and on each argument (characters). */
export const MAX_ARGS = 256;
export const MAX_ARG_CHARS = 4096;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

/** One message as a frame: length prefix + MessagePack. */
export function encodeFrame(message: unknown): Buffer {
  const body = packr.pack(message);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/**
 * Splits a byte stream into messages. push() returns the messages completed by a chunk;
 * a frame announced longer than `maxBytes`, or a body that is not MessagePack, throws
 * ProtocolError (the stream cannot be resynchronised: close the connection).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
      if (len > this.maxBytes)
        throw new ProtocolError(`a frame of ${len} bytes (the bound is ${this.maxBytes})`);
      if (this.buffered < 4 + len) break;
      const all = this.take(4 + len);
      try {
        out.push(packr.unpack(all.subarray(4)));
      } catch (e) {
        throw new ProtocolError(`a frame that is not MessagePack: ${(e as Error).message}`);
      }
    }
    return out;
  }

  /** Bytes held for an incomplete frame. */
  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const head = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return head;
  }
}

/** A table as it travels: cells mapped (absent values as plain maps), nothing else changed. */
export interface WireTable {
  plugin: string;
  columns: ColumnSpec[];
  rows: unknown[][];
  depths?: number[];
  errors: string[];
  metadata: Record<string, string>;
}

export function encodeTable(t: ResultTable): WireTable {
  const hasAbsent = t.rows.some((r) => r.some((c) => c instanceof AbsentValue));
  const rows = hasAbsent
    ? t.rows.map((r) =>
        r.map((c) =>
          c instanceof AbsentValue
            ? { absent: c.kind, ...(c.reason === undefined ? {} : { reason: c.reason }) }
            : c,
        ),
      )
    : t.rows;
  return {
    plugin: t.plugin,
    columns: t.columns.map((c) => ({
      name: c.name,
      type: c.type,
      ...(c.description === undefined ? {} : { description: c.description }),
    })),
    rows,
    ...(t.depths ? { depths: t.depths } : {}),
    errors: t.errors,
    // A key without a value (undefined) has no MessagePack form: left out, as JSON does.
    metadata: Object.fromEntries(Object.entries(t.metadata).filter(([, v]) => v !== undefined)),
  };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((s) => typeof s === 'string');
const TYPES = new Set<string>(COLUMN_TYPES);

function decodeCell(v: unknown): RowValue {
  switch (typeof v) {
    case 'number':
    case 'bigint':
    case 'string':
    case 'boolean':
      return v;
    case 'object':
      if (v === null) return null;
      if (v instanceof Date) return v;
      if (isObject(v) && (v.absent === 'unreadable' || v.absent === 'not_available')) {
        if (v.reason !== undefined && typeof v.reason !== 'string') break;
        return new AbsentValue(v.absent, v.reason);
      }
  }
  throw new ProtocolError(`a table cell that is not a value (${typeof v})`);
}

/** A WireTable back into a ResultTable; a malformed one throws ProtocolError. */
export function decodeTable(w: unknown): ResultTable {
  if (!isObject(w) || typeof w.plugin !== 'string') throw new ProtocolError('a table without a plugin name');
  const { columns, rows, depths, errors, metadata } = w;
  if (!Array.isArray(columns)) throw new ProtocolError(`table ${w.plugin}: no columns`);
  const cols: ColumnSpec[] = columns.map((c) => {
    if (!isObject(c) || typeof c.name !== 'string' || typeof c.type !== 'string' || !TYPES.has(c.type))
      throw new ProtocolError(`table ${w.plugin}: a malformed column`);
    return {
      name: c.name,
      type: c.type as ColumnType,
      ...(typeof c.description === 'string' ? { description: c.description } : {}),
    };
  });
  if (!Array.isArray(rows)) throw new ProtocolError(`table ${w.plugin}: no rows`);
  const out: RowValue[][] = rows.map((r) => {
    if (!Array.isArray(r) || r.length !== cols.length)
      throw new ProtocolError(`table ${w.plugin}: a row that does not have ${cols.length} cells`);
    return r.map(decodeCell);
  });
  if (depths !== undefined && (!Array.isArray(depths) || !depths.every((d) => Number.isInteger(d))))
    throw new ProtocolError(`table ${w.plugin}: malformed tree depths`);
  if (!isStringArray(errors)) throw new ProtocolError(`table ${w.plugin}: malformed errors`);
  if (!isObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string'))
    throw new ProtocolError(`table ${w.plugin}: malformed metadata`);
  return {
    plugin: w.plugin,
    columns: cols,
    rows: out,
    ...(depths !== undefined ? { depths: depths as number[] } : {}),
    errors,
    metadata: metadata as Record<string, string>,
  };
}

/** What `vmi plugins run` prints and returns, computed by the server for a `cli` request. */
export interface CliOutcome {
  tables: ResultTable[];
  /** `vmi: error: …` lines (failed plugins), printed before the output. */
  problems: string[];
  /** `vmi: …` lines (timings, the trap fall-back), printed after the output. */
  notes: string[];
  exitCode: number;
  /** How to write the tables: renderer, -o path (absolute), file mode. */
  format: string;
  output?: string;
  mode: number;
}

export function encodeCli(c: CliOutcome): Record<string, unknown> {
  return { ...c, tables: c.tables.map(encodeTable) };
}

export function decodeCli(v: unknown): CliOutcome {
  if (!isObject(v)) throw new ProtocolError('a cli reply without its outcome');
  const { tables, problems, notes, exitCode, format, output, mode } = v;
  if (!Array.isArray(tables) || !isStringArray(problems) || !isStringArray(notes))
    throw new ProtocolError('a malformed cli reply');
  if (typeof exitCode !== 'number' || typeof format !== 'string' || typeof mode !== 'number')
    throw new ProtocolError('a malformed cli reply');
  if (output !== undefined && typeof output !== 'string') throw new ProtocolError('a malformed cli reply');
  return {
    tables: tables.map(decodeTable),
    problems,
    notes,
    exitCode,
    format,
    ...(output !== undefined ? { output } : {}),
    mode,
  };
}

/**
 * openGuest options a `run` request carries to the server, so that they apply there as
 * they would in the client's own process (limits: positive integers, as RunLimits).
 */
export interface RunSettings {
  runLimits?: { maxReadBytes?: number; maxRows?: number; timeoutMs?: number };
  includeShadow?: boolean;
  acceptPartialContext?: boolean;
  allowWrite?: boolean;
}

const LIMIT_KEYS = ['maxReadBytes', 'maxRows', 'timeoutMs'] as const;
const FLAG_KEYS = ['includeShadow', 'acceptPartialContext', 'allowWrite'] as const;

function parseSettings(v: unknown): RunSettings | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw new ProtocolError('run: settings must be a map');
  const out: RunSettings = {};
  for (const k of FLAG_KEYS) {
    if (v[k] === undefined) continue;
    if (typeof v[k] !== 'boolean') throw new ProtocolError(`run: settings.${k} must be true or false`);
    out[k] = v[k];
  }
  if (v.runLimits !== undefined) {
    const l = v.runLimits;
    if (!isObject(l)) throw new ProtocolError('run: settings.runLimits must be a map');
    const limits: NonNullable<RunSettings['runLimits']> = {};
    for (const k of LIMIT_KEYS) {
      if (l[k] === undefined) continue;
      const n = l[k];
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0)
        throw new ProtocolError(`run: settings.runLimits.${k} must be a positive integer`);
      limits[k] = n;
    }
    out.runLimits = limits;
  }
  return out;
}

/** A request as the server accepts it (checked by parseRequest). */
export type Request =
  | { v: number; id: number; op: 'status' }
  | {
      v: number;
      id: number;
      op: 'run';
      calls: { plugin: string; options: Record<string, unknown> }[];
      arrow: boolean;
      /** The client's run settings (openGuest's options), applied to this request only. */
      settings?: RunSettings;
    }
  | {
      v: number;
      id: number;
      op: 'cli';
      argv: string[];
      cwd: string;
      /** Render on the server (the native client): the client's stdout is a terminal or not. */
      render?: { stdoutIsTTY: boolean };
    };

/** Checks a decoded request's shape; ProtocolError names what is wrong (the reply says it). */
export function parseRequest(m: unknown): Request {
  if (!isObject(m)) throw new ProtocolError('a request that is not a map');
  const id = typeof m.id === 'number' && Number.isSafeInteger(m.id) ? m.id : 0;
  if (m.v !== PROTOCOL_VERSION)
    throw new ProtocolError(`protocol version ${String(m.v)} (this server speaks ${PROTOCOL_VERSION})`);
  switch (m.op) {
    case 'status':
      return { v: PROTOCOL_VERSION, id, op: 'status' };
    case 'run': {
      if (!Array.isArray(m.calls) || m.calls.length === 0 || m.calls.length > MAX_ARGS)
        throw new ProtocolError(`run: calls must be 1 to ${MAX_ARGS} plugin calls`);
      const calls = m.calls.map((c) => {
        if (!isObject(c) || typeof c.plugin !== 'string' || c.plugin.length > 200)
          throw new ProtocolError('run: each call needs a plugin name');
        if (c.options !== undefined && !isObject(c.options))
          throw new ProtocolError(`run: options of ${c.plugin} must be a map`);
        return { plugin: c.plugin, options: (c.options ?? {}) as Record<string, unknown> };
      });
      const settings = parseSettings(m.settings);
      return {
        v: PROTOCOL_VERSION,
        id,
        op: 'run',
        calls,
        arrow: m.arrow === true,
        ...(settings ? { settings } : {}),
      };
    }
    case 'cli': {
      const { argv, cwd } = m;
      if (!isStringArray(argv) || argv.length > MAX_ARGS || argv.some((a) => a.length > MAX_ARG_CHARS))
        throw new ProtocolError(
          `cli: argv must be at most ${MAX_ARGS} strings of ${MAX_ARG_CHARS} characters`,
        );
      if (typeof cwd !== 'string' || !cwd.startsWith('/') || cwd.length > MAX_ARG_CHARS)
        throw new ProtocolError('cli: cwd must be an absolute path');
      const { render } = m;
      if (render === undefined) return { v: PROTOCOL_VERSION, id, op: 'cli', argv, cwd };
      if (!isObject(render) || typeof render.stdoutIsTTY !== 'boolean')
        throw new ProtocolError('cli: render must be a map { stdoutIsTTY: bool }');
      return { v: PROTOCOL_VERSION, id, op: 'cli', argv, cwd, render: { stdoutIsTTY: render.stdoutIsTTY } };
    }
    default:
      throw new ProtocolError(`an unknown op '${String(m.op).slice(0, 40)}'`);
  }
}

/** The server's answer to `status`. */
export interface ServerStatus {
  pid: number;
  guest: string;
  /** 'serve' (vmi serve) or 'watch' (a vmi watch exposing its guest). */
  kind: string;
  startedAt: string;
  requests: number;
  /** The last run's shadow pid in the guest, if any ran. */
  shadowPid?: number;
}
