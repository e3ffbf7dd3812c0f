/**
 * Byte text (src/util/byte-text.ts), the one representation of guest-controlled strings:
 * the cases, then guest bytes (fuzzed) through the /proc parsers and every one of
 * the eight renderers and back to the same bytes — each renderer's output parsed as a
 * reader would (text split on tabs and ` | `, CSV by RFC 4180, JSON.parse, Arrow IPC,
 * Parquet through parquet-wasm and DuckDB's documented decode expression).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { tableFromIPC, type Table } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCmdline, parseEnviron, parsePidStat } from '../../src/abi/linux/proc/index.js';
import {
  getRenderer,
  RENDERER_NAMES,
  writeOutput,
  type RendererName,
  type ResultTable,
} from '../../src/output/index.js';
import { cPath } from '../../src/sdk/batch.js';
import { BYTE_TEXT_ENCODING, bytesToText, textToBytes } from '../../src/util/byte-text.js';
import { parseCsv } from '../helpers/csv.js';
import { MemorySink } from './output-helpers.js';

const b = (...xs: (number | string)[]): Uint8Array =>
  Uint8Array.from(xs.flatMap((x) => (typeof x === 'string' ? [...Buffer.from(x, 'latin1')] : [x])));

/** Deterministic PRNG so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random guest bytes, biased to what breaks encoders: backslash, `x`, hex digits, UTF-8 lead/continuation bytes, controls, separators. */
function randomBytes(next: () => number, maxLen = 24): Uint8Array {
  const special = [
    0x5c, 0x78, 0x30, 0x66, 0x41, 0xc3, 0xa9, 0xe2, 0x80, 0xa8, 0xf0, 0x9f, 0xed, 0xa0, 0xff, 0xfe,
  ];
  const more = [
    0x09, 0x0a, 0x0d, 0x22, 0x2c, 0x20, 0x7c, 0xef, 0xbb, 0xbf, 0xc0, 0xf4, 0x90, 0x7f, 0x85, 0xc2,
  ];
  const n = Math.floor(next() * maxLen);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = next();
    out[i] =
      r < 0.35
        ? special[Math.floor(next() * special.length)]
        : r < 0.5
          ? more[Math.floor(next() * more.length)]
          : Math.floor(next() * 256);
  }
  return out;
}

const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');

describe('byte text', () => {
  it('keeps valid UTF-8 and escapes every other byte, and a backslash, as \\xNN', () => {
    expect(bytesToText(b('/tmp/x.so', 0xff))).toBe('/tmp/x.so\\xff');
    expect(bytesToText(b('a\\b'))).toBe('a\\x5cb');
    // A name that looks like an escape stays distinguishable from the byte.
    expect(bytesToText(b('\\xff'))).toBe('\\x5cxff');
    expect(bytesToText(Buffer.from('é😀\u2028', 'utf8'))).toBe('é😀\u2028');
    expect(bytesToText(b(0, 0x0a, 'x'))).toBe('\u0000\nx');
    // A leading BOM is data.
    expect(bytesToText(b(0xef, 0xbb, 0xbf, 'x'))).toBe('\ufeffx');
    // Overlong, surrogate, above U+10FFFF, lone continuation, truncated: byte by byte.
    expect(bytesToText(b(0xc0, 0x80))).toBe('\\xc0\\x80');
    expect(bytesToText(b(0xed, 0xa0, 0x80))).toBe('\\xed\\xa0\\x80');
    expect(bytesToText(b(0xf4, 0x90, 0x80, 0x80))).toBe('\\xf4\\x90\\x80\\x80');
    expect(bytesToText(b(0x80, 'a'))).toBe('\\x80a');
    expect(bytesToText(b(0xe2, 0x80))).toBe('\\xe2\\x80');
    expect(bytesToText(b(0xe2, 0x80, 'é'))).toBe('\\xe2\\x80\\xe9');
  });

  it('decodes back to the same bytes (fuzzed), and a path argument is those bytes', () => {
    const next = rng(14);
    for (let i = 0; i < 5000; i++) {
      const bytes = randomBytes(next, 40);
      const text = bytesToText(bytes);
      expect(hex(textToBytes(text)), hex(bytes)).toBe(hex(bytes));
      // No lone surrogates: the text always encodes as UTF-8 (Arrow, CSV, files).
      expect(/[\ud800-\udfff]/u.test(text)).toBe(false);
      expect(hex(cPath(text).subarray(0, -1))).toBe(hex(bytes));
    }
  });

  it('reaches plugins through the /proc parsers exactly (comm, argv, environment)', () => {
    const comm = b('evil', 0xff, '\\', 0xc3);
    const stat = b('42 (', ...comm, ') S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0 ');
    expect(hex(textToBytes(parsePidStat(stat).comm))).toBe(hex(comm));
    const argv = parseCmdline(b('/bin/x', 0, 'a', 0xfe, 0));
    expect(argv.map((a) => hex(textToBytes(a)))).toEqual([hex(b('/bin/x')), hex(b('a', 0xfe))]);
    const env = parseEnviron(b('LD_PRELOAD=/tmp/x.so', 0xff, 0, 'K=\\x41', 0));
    expect(env.map((e) => [e.key, e.value])).toEqual([
      ['LD_PRELOAD', '/tmp/x.so\\xff'],
      ['K', '\\x5cx41'],
    ]);
  });
});

/** The VALUE cells of a rendered ID/VALUE table, in row order, as each renderer's reader gets them. */
async function valuesFrom(format: RendererName, table: ResultTable): Promise<string[]> {
  const sink = new MemorySink();
  await getRenderer(format).render([table], sink);
  const bytes = sink.bytes();
  const text = bytes.toString('utf8');
  switch (format) {
    case 'quick':
      // `\nID\tVALUE\n` then `\n<row>` per row, then `\n`.
      return text
        .split('\n')
        .slice(3, -1)
        .map((l) => l.slice(l.indexOf('\t') + 1));
    case 'pretty':
      // `<tree> | <ID> | <VALUE>`: every value starts with `A`, so the left padding trims off.
      return text
        .split('\n')
        .slice(1, -1)
        .map((l) => l.split(' | ').slice(2).join(' | ').trimStart());
    case 'csv':
      return parseCsv(text)
        .slice(1)
        .map((r) => r.slice(1).join(','));
    case 'json':
      return (JSON.parse(text) as { VALUE: string }[]).map((r) => r.VALUE);
    case 'jsonl':
      return text
        .trimEnd()
        .split('\n')
        .map((l) => (JSON.parse(l) as { VALUE: string }).VALUE);
    case 'arrow':
    case 'arrows':
      return arrowValues(tableFromIPC(bytes));
    case 'parquet':
      return arrowValues(tableFromIPC(readParquet(bytes).intoIPCStream()));
  }
}

function arrowValues(t: Table): string[] {
  const field = t.schema.fields.find((f) => f.name === 'VALUE')!;
  expect(field.metadata.get('vmi.encoding')).toBe(BYTE_TEXT_ENCODING);
  return t.getChild('VALUE')!.toArray() as string[];
}

function tableOf(values: Uint8Array[]): ResultTable {
  return {
    plugin: 'envars',
    columns: [
      { name: 'ID', type: 'int32' },
      { name: 'VALUE', type: 'utf8' },
    ],
    rows: values.map((v, i) => [i, bytesToText(v)]),
    errors: [],
    metadata: {},
  };
}

describe('guest bytes through every renderer and back', () => {
  // Each value starts with `A` (see pretty); the rest is random guest bytes, plus the cases.
  const next = rng(2026);
  const guest: Uint8Array[] = [
    b('A/tmp/x.so', 0xff),
    b('Ar (deleted)'),
    b('A\\x5c'),
    b('A', 0xff, 0xfe, '\\'),
    b('A | x\t\n,"'),
    ...Array.from({ length: 400 }, () => b('A', ...randomBytes(next))),
  ];
  const table = tableOf(guest);

  it('covers all eight renderers', () => {
    expect([...RENDERER_NAMES].sort()).toEqual(
      ['arrow', 'arrows', 'csv', 'json', 'jsonl', 'parquet', 'pretty', 'quick'].sort(),
    );
  });

  for (const format of RENDERER_NAMES) {
    it(`${format}: every value decodes to the guest's bytes`, async () => {
      const values = await valuesFrom(format, table);
      expect(values).toHaveLength(guest.length);
      values.forEach((v, i) =>
        expect(hex(textToBytes(v)), `row ${i}: ${JSON.stringify(v)}`).toBe(hex(guest[i])),
      );
    });
  }
});

describe("DuckDB: the README's decode expression on vmi's Parquet", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmi-bytes-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("replace(encode(v)::VARCHAR, '\\x5Cx', '\\x')::BLOB gives the guest's bytes", async () => {
    const next = rng(7);
    const guest = [b('/tmp/x.so', 0xff), b('a\\b'), ...Array.from({ length: 200 }, () => randomBytes(next))];
    const file = join(dir, 'v.parquet');
    await writeOutput([tableOf(guest)], { format: 'parquet', output: file });
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    try {
      const reader = await conn.runAndReadAll(
        `SELECT ID, lower(hex(replace(encode(VALUE)::VARCHAR, '\\x5Cx', '\\x')::BLOB)) AS h FROM '${file}' ORDER BY ID`,
      );
      const got = reader.getRowObjectsJson().map((r) => r.h as string);
      expect(got).toEqual(guest.map(hex));
    } finally {
      conn.closeSync();
    }
  });
});
