/**
 * GDB remote serial protocol: framing, escaping, run-length decoding, a streaming parser
 * and reply parsers. Pure: no I/O here (see gdb.ts for the client).
 */

const DOLLAR = 0x24; // $
const HASH = 0x23; // #
const PERCENT = 0x25; // %
const BRACE = 0x7d; // }
const STAR = 0x2a; // *
const PLUS = 0x2b; // +
const MINUS = 0x2d; // -

/** Largest packet body the parser accepts before declaring the stream corrupt. */
export const MAX_PACKET_BODY = 1 << 20;

function toBuf(data: Uint8Array | string): Buffer {
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data);
}

/** Modulo-256 sum of the bytes between `$` and `#` (as sent on the wire). */
export function checksum(data: Uint8Array | string): number {
  const b = toBuf(data);
  let sum = 0;
  for (const byte of b) sum = (sum + byte) & 0xff;
  return sum;
}

/** Escape `$`, `#`, `}` and `*` as `}` followed by the byte XOR 0x20. */
export function escape(data: Uint8Array | string): Buffer {
  const b = toBuf(data);
  const out: number[] = [];
  for (const byte of b) {
    if (byte === DOLLAR || byte === HASH || byte === BRACE || byte === STAR) out.push(BRACE, byte ^ 0x20);
    else out.push(byte);
  }
  return Buffer.from(out);
}

/**
 * Decode a packet body as received: `}x` escapes and `c*n` run-length encoding
 * (`n` - 29 further copies of the previous byte). Throws on malformed input
 * (dangling `}`, `*` without a previous byte, bad repeat count).
 */
export function unescape(body: Uint8Array | string): Buffer {
  const b = toBuf(body);
  const out: number[] = [];
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === BRACE) {
      if (i + 1 >= b.length) throw new Error('dangling escape at end of packet');
      out.push(b[++i]! ^ 0x20);
    } else if (c === STAR) {
      if (out.length === 0) throw new Error('run-length marker without a preceding byte');
      if (i + 1 >= b.length) throw new Error('run-length marker without a count');
      const n = b[++i]! - 29;
      if (n < 0) throw new Error(`bad run-length count 0x${b[i]!.toString(16)}`);
      const prev = out[out.length - 1]!;
      for (let k = 0; k < n; k++) out.push(prev);
    } else {
      out.push(c);
    }
  }
  return Buffer.from(out);
}

/** Frame a payload as `$<escaped payload>#<2 hex digits checksum>`. */
export function framePacket(payload: Uint8Array | string): Buffer {
  const body = escape(payload);
  const cs = checksum(body).toString(16).padStart(2, '0');
  return Buffer.concat([Buffer.from('$'), body, Buffer.from('#' + cs, 'latin1')]);
}

export type RspEvent =
  | { type: 'ack' }
  | { type: 'nack' }
  /** A verified packet; `data` is unescaped/run-length decoded, `raw` is the wire body. */
  | { type: 'packet'; data: Buffer; raw: Buffer }
  | { type: 'notification'; data: Buffer; raw: Buffer }
  /** \x03 seen outside a packet (only a stub receives this normally). */
  | { type: 'interrupt' }
  /**
   * A malformed packet (bad checksum, undecodable body, truncated by a new `$`, too long).
   * `nack` says whether the peer expects a `-` for it (notifications are never acked).
   */
  | { type: 'error'; message: string; raw: Buffer; nack: boolean };

type State = 'idle' | 'body' | 'cs1' | 'cs2';

/** Streaming parser: feed arbitrary chunks, get events; never throws on bad input. */
export class RspParser {
  private state: State = 'idle';
  private body: number[] = [];
  private kind: 'packet' | 'notification' = 'packet';
  private csHi = '';
  /** Bytes skipped outside packets since the last event (diagnostics). */
  garbageBytes = 0;

  feed(chunk: Uint8Array): RspEvent[] {
    const events: RspEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        // fast path: copy the run of plain body bytes up to the next special byte
        let j = i;
        while (j < chunk.length) {
          const c = chunk[j]!;
          if (c === HASH || c === DOLLAR || c === PERCENT) break;
          j++;
        }
        if (j > i) {
          const room = MAX_PACKET_BODY - this.body.length;
          if (j - i > room) {
            for (let k = i; k < j; k++) this.step(chunk[k]!, events);
          } else {
            for (let k = i; k < j; k++) this.body.push(chunk[k]!);
          }
          i = j;
          continue;
        }
      }
      this.step(chunk[i]!, events);
      i++;
    }
    return events;
  }

  reset(): void {
    this.state = 'idle';
    this.body = [];
    this.csHi = '';
  }

  private start(kind: 'packet' | 'notification'): void {
    this.state = 'body';
    this.kind = kind;
    this.body = [];
  }

  private step(c: number, events: RspEvent[]): void {
    switch (this.state) {
      case 'idle':
        if (c === DOLLAR) this.start('packet');
        else if (c === PERCENT) this.start('notification');
        else if (c === PLUS) events.push({ type: 'ack' });
        else if (c === MINUS) events.push({ type: 'nack' });
        else if (c === 0x03) events.push({ type: 'interrupt' });
        else this.garbageBytes++;
        return;
      case 'body':
        if (c === HASH) {
          this.state = 'cs1';
        } else if (c === DOLLAR || c === PERCENT) {
          events.push({
            type: 'error',
            message: `truncated ${this.kind}: new packet start inside body`,
            raw: Buffer.from(this.body),
            nack: false,
          });
          this.start(c === DOLLAR ? 'packet' : 'notification');
        } else if (this.body.length >= MAX_PACKET_BODY) {
          events.push({
            type: 'error',
            message: `packet longer than ${MAX_PACKET_BODY} bytes`,
            raw: Buffer.from(this.body.slice(0, 64)),
            nack: this.kind === 'packet',
          });
          this.reset();
        } else {
          this.body.push(c);
        }
        return;
      case 'cs1':
        this.csHi = String.fromCharCode(c);
        this.state = 'cs2';
        return;
      case 'cs2': {
        const csText = this.csHi + String.fromCharCode(c);
        const raw = Buffer.from(this.body);
        const kind = this.kind;
        this.reset();
        const nack = kind === 'packet';
        if (!/^[0-9a-fA-F]{2}$/.test(csText)) {
          events.push({ type: 'error', message: `malformed checksum "${csText}"`, raw, nack });
          return;
        }
        const want = parseInt(csText, 16);
        const got = checksum(raw);
        if (want !== got) {
          events.push({
            type: 'error',
            message: `bad checksum: got ${hex2(got)}, packet says ${hex2(want)}`,
            raw,
            nack,
          });
          return;
        }
        let data: Buffer;
        try {
          data = unescape(raw);
        } catch (e) {
          events.push({ type: 'error', message: (e as Error).message, raw, nack });
          return;
        }
        events.push({ type: kind, data, raw });
        return;
      }
    }
  }
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** Bytes → lowercase hex. */
export function toHex(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

/** Hex → bytes; throws on odd length or non-hex characters. */
export function fromHex(text: string): Buffer {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new Error(`invalid hex string: "${text.length > 40 ? text.slice(0, 40) + '…' : text}"`);
  }
  return Buffer.from(text, 'hex');
}

/** Text → hex of its UTF-8 bytes (qRcmd arguments). */
export function stringToHex(s: string): string {
  return Buffer.from(s, 'utf8').toString('hex');
}

/** Hex → text (qRcmd `O` output). */
export function hexToString(hex: string): string {
  return fromHex(hex).toString('utf8');
}

/** An error reply (`E` + two hex digits, or QEMU's `E.message` form)? */
export function parseErrorReply(reply: string): number | string | undefined {
  const m = /^E([0-9a-fA-F]{2})$/.exec(reply);
  if (m) return parseInt(m[1]!, 16);
  if (reply.startsWith('E.')) return reply.slice(2);
  return undefined;
}

export type ParsedStopReply =
  /** S/T: stopped with a signal (5 = SIGTRAP, 2 = SIGINT). */
  | { kind: 'signal'; signal: number; thread?: string; pairs: Record<string, string>; raw: string }
  /** W: the process exited (QEMU: the VM is shutting down). */
  | { kind: 'exited'; code: number; pairs: Record<string, string>; raw: string }
  /** X: the process was terminated by a signal. */
  | { kind: 'terminated'; signal: number; pairs: Record<string, string>; raw: string };

/** Does this reply look like a stop reply (S, T, W or X followed by two hex digits)? */
export function isStopReply(reply: string): boolean {
  return /^[STWX][0-9a-fA-F]{2}/.test(reply) && (reply[0] !== 'S' || reply.length === 3);
}

/** Parse a stop reply; throws on anything else. */
export function parseStopReply(reply: string): ParsedStopReply {
  const m = /^([STWX])([0-9a-fA-F]{2})(.*)$/s.exec(reply);
  if (!m) throw new Error(`not a stop reply: "${reply}"`);
  const [, letter, num, rest] = m as unknown as [string, string, string, string];
  const value = parseInt(num, 16);
  const pairs: Record<string, string> = {};
  if (letter === 'T') {
    for (const item of rest.split(';')) {
      if (!item) continue;
      const colon = item.indexOf(':');
      if (colon < 0) pairs[item] = '';
      else pairs[item.slice(0, colon)] = item.slice(colon + 1);
    }
  } else if (letter === 'W' || letter === 'X') {
    // "W00;process:1"
    for (const item of rest.split(';')) {
      const colon = item.indexOf(':');
      if (colon > 0) pairs[item.slice(0, colon)] = item.slice(colon + 1);
    }
  } else if (rest !== '') {
    throw new Error(`not a stop reply: "${reply}"`);
  }
  if (letter === 'S' || letter === 'T') {
    const thread = pairs['thread'] !== undefined ? normalizeThreadId(pairs['thread']) : undefined;
    return thread !== undefined
      ? { kind: 'signal', signal: value, thread, pairs, raw: reply }
      : { kind: 'signal', signal: value, pairs, raw: reply };
  }
  if (letter === 'W') return { kind: 'exited', code: value, pairs, raw: reply };
  return { kind: 'terminated', signal: value, pairs, raw: reply };
}

/**
 * Normalize a thread id: multiprocess `p01.02` → `p1.2`, plain `0a` → `a`; `-1` and `0`
 * are kept. Throws on malformed ids.
 */
export function normalizeThreadId(id: string): string {
  const part = (s: string): string => {
    if (s === '-1') return '-1';
    if (!/^[0-9a-fA-F]+$/.test(s)) throw new Error(`malformed thread id "${id}"`);
    return BigInt('0x' + s).toString(16);
  };
  if (id.startsWith('p')) {
    const dot = id.indexOf('.');
    if (dot < 0) return 'p' + part(id.slice(1));
    return `p${part(id.slice(1, dot))}.${part(id.slice(dot + 1))}`;
  }
  return part(id);
}

/**
 * Parse one qfThreadInfo/qsThreadInfo reply: `m<id>,<id>...` → { ids, done:false },
 * `l` → { ids: [], done: true }.
 */
export function parseThreadInfo(reply: string): { ids: string[]; done: boolean } {
  if (reply === 'l') return { ids: [], done: true };
  if (reply.startsWith('l')) {
    // some stubs end with "l<ids>"
    return { ids: splitIds(reply.slice(1)), done: true };
  }
  if (!reply.startsWith('m')) throw new Error(`unexpected thread-info reply "${reply}"`);
  return { ids: splitIds(reply.slice(1)), done: false };
}

function splitIds(list: string): string[] {
  return list
    .split(',')
    .filter((s) => s.length > 0)
    .map(normalizeThreadId);
}

/** Parse a qSupported reply into a feature map (`PacketSize=1000` → "1000", `foo+` → true). */
export function parseSupported(reply: string): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (const item of reply.split(';')) {
    if (!item) continue;
    const eq = item.indexOf('=');
    if (eq >= 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (item.endsWith('+')) out[item.slice(0, -1)] = true;
    else if (item.endsWith('-')) out[item.slice(0, -1)] = false;
    else if (item.endsWith('?')) out[item.slice(0, -1)] = false;
    else out[item] = true;
  }
  return out;
}
