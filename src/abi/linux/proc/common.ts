/** Shared pieces of the /proc parsers: the error type and strict number parsing. */
import { bytesToText } from '../../../util/byte-text.js';

/**
 * /proc content that does not have the expected shape. The message is one line and names
 * the file (`/proc/42/stat: no ')' closing comm`). Parsers throw nothing else.
 */
export class ProcParseError extends Error {
  override name = 'ProcParseError';
  constructor(
    /** The file as given by the caller (`/proc/42/stat`), or its kind (`stat`). */
    readonly file: string,
    readonly detail: string,
  ) {
    super(`${file}: ${detail}`.replace(/[\r\n]+/g, ' '));
  }
}

/** What the parsers accept: raw bytes as read from the guest, or byte text (src/util/byte-text.ts). */
export type ProcInput = string | Uint8Array;

/**
 * Bytes as byte text: valid UTF-8 as is, `\xNN` for any other byte and for a backslash
 * (`\x5c`). Every string a parser returns is therefore byte text, exact to the byte.
 * The kernel's own escapes (`\040` in mountinfo) then read `\x5c040`.
 */
export function toText(input: ProcInput): string {
  return typeof input === 'string' ? input : bytesToText(input);
}

/** Shortens a value for an error message so a hostile file cannot make a huge message. */
export function excerpt(s: string, max = 40): string {
  const flat = JSON.stringify(s.length > max ? s.slice(0, max) + '…' : s);
  return flat;
}

const INT_RE = /^-?\d{1,20}$/;

/** A decimal integer that must be a safe JS integer. */
export function parseIntStrict(s: string | undefined, file: string, what: string): number {
  if (s === undefined) throw new ProcParseError(file, `missing ${what}`);
  if (!INT_RE.test(s)) throw new ProcParseError(file, `${what} is not an integer: ${excerpt(s)}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new ProcParseError(file, `${what} out of range: ${excerpt(s)}`);
  return n;
}

/** A decimal integer of up to 64 bits, as bigint. */
export function parseBigIntStrict(s: string | undefined, file: string, what: string): bigint {
  if (s === undefined) throw new ProcParseError(file, `missing ${what}`);
  if (!INT_RE.test(s)) throw new ProcParseError(file, `${what} is not an integer: ${excerpt(s)}`);
  return BigInt(s);
}

/** What a line-oriented /proc parser returns: the good lines, and an error per bad one. */
export interface ParsedLines<T> {
  entries: T[];
  /** One per line that could not be parsed (that line is left out of `entries`). */
  errors: ProcParseError[];
}

/**
 * Parses a file line by line: blank lines and those `skip` names (headers) are passed
 * over; a line whose `parse` throws ProcParseError becomes an error, never an exception
 * that loses the other lines. `where` is `file:line` for messages.
 */
export function parseLines<T>(
  input: ProcInput,
  file: string,
  parse: (line: string, where: string) => T,
  skip: (line: string, index: number) => boolean = () => false,
): ParsedLines<T> {
  const entries: T[] = [];
  const errors: ProcParseError[] = [];
  toText(input)
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '' || skip(line, i)) return;
      try {
        entries.push(parse(line, `${file}:${i + 1}`));
      } catch (e) {
        if (!(e instanceof ProcParseError)) throw e;
        errors.push(e);
      }
    });
  return { entries, errors };
}
