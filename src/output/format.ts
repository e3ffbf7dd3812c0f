/**
 * Cell formatting shared by the text renderers. Formatters are chosen once per column so
 * the per-cell work in hot loops is one function call.
 */
import { byteEscape } from '../util/byte-text.js';
import { AbsentValue, type ColumnType, type RowValue } from './columns.js';

export type CellFormatter = (v: RowValue) => string;

/** A Date from a timestamp cell (Date, epoch ms as number or bigint), or null if invalid. */
export function toDate(v: RowValue): Date | null {
  let d: Date;
  if (v instanceof Date) d = v;
  else if (typeof v === 'number') d = new Date(v);
  else if (typeof v === 'bigint') d = new Date(Number(v));
  else return null;
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Volatility's text form of a UTC datetime: `2026-11-25 10:00:00.123000 UTC`. */
export function formatTimestampText(d: Date): string {
  const iso = d.toISOString(); // 2026-11-25T10:00:00.123Z (or ±YYYYYY-… outside 0000–9999)
  const t = iso.indexOf('T');
  return `${iso.slice(0, t)} ${iso.slice(t + 1, -1)}000 UTC`;
}

/** Python's `datetime.isoformat()` of a UTC datetime, as Volatility's JSON renderer writes it. */
export function formatTimestampIso(d: Date): string {
  const iso = d.toISOString();
  const ms = d.getUTCMilliseconds();
  const base = iso.slice(0, iso.indexOf('.'));
  return ms === 0 ? `${base}+00:00` : `${base}.${String(ms).padStart(3, '0')}000+00:00`;
}

export function formatHex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

// Control characters (C0, DEL, C1) and the Unicode line/paragraph separators.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
// eslint-disable-next-line no-control-regex
const CONTROL_G = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

const utf8 = new TextEncoder();

/** A control character as the `\xNN` escapes of its UTF-8 bytes (U+0085 → `\xc2\x85`). */
function escapeChar(ch: string): string {
  let s = '';
  for (const b of utf8.encode(ch)) s += byteEscape(b);
  return s;
}

/**
 * Escapes control characters so a cell never breaks a text row: each becomes the `\xNN`
 * escapes of its UTF-8 bytes (tab `\x09`, newline `\x0a`). Cells are byte text
 * (src/util/byte-text.ts), whose own backslashes are already `\x5c`: the escaped cell
 * decodes to the guest's bytes exactly as the unescaped one does.
 */
export function escapeControl(s: string): string {
  return CONTROL.test(s) ? s.replace(CONTROL_G, escapeChar) : s;
}

/** `-` for unreadable (and plain null), `N/A` for not available: Volatility's text forms. */
export function absentText(v: AbsentValue | null | undefined): string {
  return v instanceof AbsentValue && v.kind === 'not_available' ? 'N/A' : '-';
}

/**
 * The formatter for one column in the quick and pretty renderers: hex64 as `0x…`,
 * timestamps in Volatility's `YYYY-MM-DD HH:MM:SS.ffffff UTC`, booleans as Python prints
 * them (`True`/`False`), strings with control characters escaped, absent values `-`/`N/A`.
 */
export function textFormatter(type: ColumnType): CellFormatter {
  const present = presentText(type);
  return (v) => (v === null || v === undefined || v instanceof AbsentValue ? absentText(v) : present(v));
}

function presentText(type: ColumnType): (v: Exclude<RowValue, null | AbsentValue>) => string {
  switch (type) {
    case 'hex64':
      return (v) =>
        typeof v === 'number' || typeof v === 'bigint' ? formatHex(v) : escapeControl(String(v));
    case 'timestamp_ms':
      return (v) => {
        const d = toDate(v);
        return d ? formatTimestampText(d) : '-';
      };
    case 'bool':
      return (v) => (v === true ? 'True' : v === false ? 'False' : escapeControl(String(v)));
    case 'utf8':
      return (v) =>
        escapeControl(typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : String(v));
    default:
      return (v) => (typeof v === 'string' ? escapeControl(v) : String(v));
  }
}

function isWide(cp: number): boolean {
  // East Asian Wide/Fullwidth blocks and emoji: two terminal cells (a rough wcwidth).
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f680 && cp <= 0x1f6ff) ||
    (cp >= 0x1f900 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

/**
 * Terminal columns a cell takes: one per code point, two for East Asian wide characters
 * and emoji (so `pretty` stays aligned with CJK process names). Combining marks are not
 * special-cased.
 */
export function displayWidth(s: string): number {
  let i = 0;
  const n = s.length;
  while (i < n && s.charCodeAt(i) < 0x1100) i++;
  if (i === n) return n;
  let w = i;
  for (; i < n; i++) {
    const cp = s.codePointAt(i) as number;
    if (cp > 0xffff) i++;
    w += isWide(cp) ? 2 : 1;
  }
  return w;
}
