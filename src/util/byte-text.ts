/**
 * vmi's one representation of guest-controlled text ("byte text"): comm, argv, environment,
 * paths, mount points, interface names, socket paths, kernel log lines. Forensic evidence
 * is bytes, and the guest may hold any bytes there, so the text must give them back
 * exactly:
 *
 * - every byte sequence that is valid UTF-8 (RFC 3629: no overlong forms, no surrogates,
 *   nothing above U+10FFFF) stays as the characters it encodes;
 * - every other byte becomes `\xNN` (two lowercase hex digits), one escape per byte, as
 *   Python's `backslashreplace` error handler writes it;
 * - a backslash byte (0x5C) is always written `\x5c`, so a backslash in byte text always
 *   starts an escape and the form is unambiguous.
 *
 * Decoding: every `\xNN` is byte NN, every other character its UTF-8 bytes
 * ({@link textToBytes}). Python: `codecs.escape_decode(s.encode('utf-8'))[0]`. DuckDB:
 * `replace(encode(s)::VARCHAR, '\x5Cx', '\x')::BLOB`. Text that has no backslash and is
 * valid UTF-8 is its own byte text, so ordinary names and paths read as they are.
 *
 * The text renderers escape control characters with the same `\xNN` form (see
 * src/output/format.ts), so their output decodes the same way.
 */

const HEX = '0123456789abcdef';
// ignoreBOM: a leading EF BB BF is data (a file name may start with it), not a marker to drop.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** `\xNN` for one byte. */
export function byteEscape(b: number): string {
  return `\\x${HEX[b >> 4]}${HEX[b & 15]}`;
}

/** Length of the valid UTF-8 sequence starting at `i` (RFC 3629 table 3-7), or 0 if invalid. */
function utf8SequenceLength(bytes: Uint8Array, i: number): number {
  const b0 = bytes[i];
  const n = bytes.length;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean =>
    i + k < n && bytes[i + k] >= lo && bytes[i + k] <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xe1 && b0 <= 0xec) || b0 === 0xee || b0 === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b0 === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (b0 === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/**
 * The byte text of guest bytes (see the module header). Linear; ASCII without a
 * backslash (nearly every /proc file) takes a fast path.
 */
export function bytesToText(bytes: Uint8Array): string {
  let plain = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b >= 0x80 || b === 0x5c) {
      plain = false;
      break;
    }
  }
  if (plain) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  let out = '';
  let start = 0; // start of the pending run of bytes that decode as they are
  const flush = (end: number): void => {
    if (end > start) out += decoder.decode(bytes.subarray(start, end));
  };
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    if (b < 0x80 && b !== 0x5c) {
      i++;
      continue;
    }
    const len = b < 0x80 ? 0 : utf8SequenceLength(bytes, i);
    if (len > 0) {
      i += len;
      continue;
    }
    flush(i);
    out += byteEscape(b);
    i++;
    start = i;
  }
  flush(bytes.length);
  return out;
}

/** The byte text of a JS string's UTF-8 encoding: for text vmi or a plugin makes up itself. */
export function stringToText(s: string): string {
  return s.includes('\\') ? bytesToText(encoder.encode(s)) : s;
}

const ESCAPE_RE = /\\x([0-9a-fA-F]{2})/y;

/**
 * The bytes a byte text stands for: `\xNN` is byte NN, every other character its UTF-8
 * encoding (a backslash not followed by two hex digits, which byte text never holds,
 * stands for itself). The inverse of {@link bytesToText}: `textToBytes(bytesToText(b))`
 * equals `b` for every `b`.
 */
export function textToBytes(text: string): Uint8Array {
  if (!text.includes('\\')) return encoder.encode(text);
  const parts: Uint8Array[] = [];
  let total = 0;
  let start = 0;
  const push = (u: Uint8Array): void => {
    parts.push(u);
    total += u.length;
  };
  for (let i = text.indexOf('\\'); i >= 0; i = text.indexOf('\\', i)) {
    ESCAPE_RE.lastIndex = i;
    const m = ESCAPE_RE.exec(text);
    if (!m) {
      i++;
      continue;
    }
    push(encoder.encode(text.slice(start, i)));
    push(Uint8Array.of(parseInt(m[1], 16)));
    i += 4;
    start = i;
  }
  push(encoder.encode(text.slice(start)));
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** The name of the representation, as the Arrow/Parquet metadata records it. */
export const BYTE_TEXT_ENCODING = 'utf8-xescape';
