/**
 * A plugin's ResultTable as an Arrow table. The vectors are assembled straight from typed
 * arrays and validity bitmaps with makeData: apache-arrow's builders are about 20× slower
 * for strings. Kept apart from table.ts so that text output never loads apache-arrow.
 */
import {
  Bool,
  type DataType,
  Field,
  Float64,
  Int32,
  Int64,
  makeData,
  RecordBatch,
  Schema,
  Struct,
  Table,
  TimestampMillisecond,
  Uint64,
  Utf8,
  type Data,
} from 'apache-arrow';
import { BYTE_TEXT_ENCODING } from '../util/byte-text.js';
import { AbsentValue, type ColumnType, type RowValue } from './columns.js';
import {
  FIELD_DESCRIPTION_KEY,
  FIELD_ENCODING_KEY,
  FIELD_TYPE_KEY,
  schemaMetadata,
  TableError,
  TREE_DEPTH_COLUMN,
  validateTable,
  type ResultTable,
} from './table.js';

export function arrowTypeOf(type: ColumnType): DataType {
  switch (type) {
    case 'int32':
      return new Int32();
    case 'int64':
      return new Int64();
    case 'uint64':
    case 'hex64':
      return new Uint64();
    case 'float64':
      return new Float64();
    case 'bool':
      return new Bool();
    case 'utf8':
      return new Utf8();
    case 'timestamp_ms':
      return new TimestampMillisecond('UTC');
  }
}

/** Converts a table to Arrow (one record batch). Throws TableError on a misfit value. */
export function toArrow(table: ResultTable): Table {
  validateTable(table);
  const n = table.rows.length;
  const fields: Field[] = [];
  const children: Data[] = [];
  if (table.depths) {
    const depthType = new Int32();
    fields.push(new Field(TREE_DEPTH_COLUMN, depthType, false, new Map([[FIELD_TYPE_KEY, 'int32']])));
    children.push(
      makeData({ type: depthType, length: n, nullCount: 0, data: Int32Array.from(table.depths) }),
    );
  }
  table.columns.forEach((col, c) => {
    const meta = new Map<string, string>([[FIELD_TYPE_KEY, col.type]]);
    if (col.description) meta.set(FIELD_DESCRIPTION_KEY, col.description);
    // Text cells are byte text: the reader needs the scheme to get the guest's bytes back.
    if (col.type === 'utf8') meta.set(FIELD_ENCODING_KEY, BYTE_TEXT_ENCODING);
    const data = columnData(table, c);
    fields.push(new Field(col.name, data.type, true, meta));
    children.push(data);
  });
  const schema = new Schema(fields, schemaMetadata(table));
  const struct = makeData({ type: new Struct(fields), length: n, nullCount: 0, children });
  return new Table([new RecordBatch(schema, struct)]);
}

class Validity {
  readonly bitmap: Uint8Array;
  nullCount = 0;
  constructor(n: number) {
    // All valid to start; nulls clear their bit.
    this.bitmap = new Uint8Array((n + 7) >> 3).fill(0xff);
  }
  setNull(i: number): void {
    this.bitmap[i >> 3] &= ~(1 << (i & 7));
    this.nullCount++;
  }
  /** The bitmap, or undefined when there are no nulls (Arrow allows omitting it). */
  get maybe(): Uint8Array | undefined {
    return this.nullCount > 0 ? this.bitmap : undefined;
  }
}

function misfit(table: ResultTable, c: number, i: number, v: unknown, why: string): TableError {
  const col = table.columns[c];
  const shown = typeof v === 'string' ? JSON.stringify(v) : String(v);
  return new TableError(
    `${table.plugin}: column '${col.name}' (${col.type}) row ${i}: ${why}: ${shown} (${typeof v})`,
  );
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

function columnData(table: ResultTable, c: number): Data {
  const { rows } = table;
  const n = rows.length;
  const type = table.columns[c].type;
  const valid = new Validity(n);
  const nullish = (v: RowValue | undefined, i: number): boolean => {
    if (v === null || v === undefined || v instanceof AbsentValue) {
      valid.setNull(i);
      return true;
    }
    return false;
  };

  switch (type) {
    case 'int32': {
      const data = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        const x = typeof v === 'bigint' ? Number(v) : v;
        if (typeof x !== 'number' || (x | 0) !== x) throw misfit(table, c, i, v, 'not a 32-bit integer');
        data[i] = x;
      }
      return makeData({
        type: new Int32(),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'int64': {
      const data = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        data[i] = toBigInt(table, c, i, v, I64_MIN, I64_MAX);
      }
      return makeData({
        type: new Int64(),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'uint64':
    case 'hex64': {
      const data = new BigUint64Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        data[i] = toBigInt(table, c, i, v, 0n, U64_MAX);
      }
      return makeData({
        type: new Uint64(),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'float64': {
      const data = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        if (typeof v === 'number') data[i] = v;
        else if (typeof v === 'bigint') data[i] = Number(v);
        else throw misfit(table, c, i, v, 'not a number');
      }
      return makeData({
        type: new Float64(),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'bool': {
      const data = new Uint8Array((n + 7) >> 3);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        if (typeof v !== 'boolean') throw misfit(table, c, i, v, 'not a boolean');
        if (v) data[i >> 3] |= 1 << (i & 7);
      }
      return makeData({
        type: new Bool(),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'timestamp_ms': {
      const data = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = rows[i][c];
        if (nullish(v, i)) continue;
        let ms: number | bigint;
        if (v instanceof Date) ms = v.getTime();
        else if (typeof v === 'number' || typeof v === 'bigint') ms = v;
        else throw misfit(table, c, i, v, 'not a Date or epoch milliseconds');
        if (typeof ms === 'number') {
          if (!Number.isFinite(ms)) {
            // An invalid Date from guest data: no value rather than a failed table.
            valid.setNull(i);
            continue;
          }
          ms = BigInt(Math.trunc(ms));
        }
        if (ms < I64_MIN || ms > I64_MAX) throw misfit(table, c, i, v, 'out of range');
        data[i] = ms;
      }
      return makeData({
        type: new TimestampMillisecond('UTC'),
        length: n,
        nullCount: valid.nullCount,
        nullBitmap: valid.maybe,
        data,
      });
    }
    case 'utf8':
      return utf8Data(rows, c, valid);
  }
}

function toBigInt(table: ResultTable, c: number, i: number, v: RowValue, min: bigint, max: bigint): bigint {
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number' && Number.isInteger(v)) b = BigInt(v);
  else throw misfit(table, c, i, v, 'not an integer');
  if (b < min || b > max) throw misfit(table, c, i, v, 'out of range');
  return b;
}

/** Utf8 column: Int32 offsets plus one data buffer, filled with Buffer.write (no per-string views). */
function utf8Data(rows: RowValue[][], c: number, valid: Validity): Data {
  const n = rows.length;
  const offsets = new Int32Array(n + 1);
  let buf = Buffer.allocUnsafe(Math.max(64, n * 16));
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const v = rows[i][c];
    if (v === null || v === undefined || v instanceof AbsentValue) {
      valid.setNull(i);
    } else {
      const s = typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : String(v);
      // UTF-16 code unit → at most 3 UTF-8 bytes.
      const worst = s.length * 3;
      if (pos + worst > buf.length) {
        let size = buf.length * 2;
        while (size < pos + worst) size *= 2;
        const bigger = Buffer.allocUnsafe(size);
        buf.copy(bigger, 0, 0, pos);
        buf = bigger;
      }
      pos += buf.write(s, pos, 'utf8');
      if (pos > 0x7fffffff) throw new TableError('utf8 column larger than 2 GiB');
    }
    offsets[i + 1] = pos;
  }
  // Copy out so the (possibly much larger, pooled) scratch buffer is not kept alive.
  const data = new Uint8Array(pos);
  data.set(buf.subarray(0, pos));
  return makeData({
    type: new Utf8(),
    length: n,
    nullCount: valid.nullCount,
    nullBitmap: valid.maybe,
    valueOffsets: offsets,
    data,
  });
}
