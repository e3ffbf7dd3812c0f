import { tableFromIPC, tableToIPC, TimeUnit, Type, type Table } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import {
  absentNotes,
  getRenderer,
  TableError,
  toArrow,
  type ColumnType,
  type ResultTable,
} from '../../src/output/index.js';
import { MemorySink, sampleTable, expectSampleValues } from './output-helpers.js';

async function roundTrip(name: 'arrow' | 'arrows', table: ResultTable): Promise<Table> {
  const sink = new MemorySink();
  await getRenderer(name).render([table], sink);
  return tableFromIPC(sink.bytes());
}

describe('toArrow', () => {
  it('maps column types and values; nulls for null and absent markers', async () => {
    for (const format of ['arrow', 'arrows'] as const) {
      const t = await roundTrip(format, sampleTable());
      const types = Object.fromEntries(t.schema.fields.map((f) => [f.name, f.type]));
      expect(types.PID.typeId).toBe(Type.Int);
      expect(String(types.PID)).toBe('Int32');
      expect(String(types.RSS)).toBe('Int64');
      expect(String(types.OFFSET)).toBe('Uint64');
      expect(String(types.COMM)).toBe('Utf8');
      expect(String(types.KTHREAD)).toBe('Bool');
      expect(String(types.CPU)).toBe('Float64');
      expect(types['CREATION TIME'].typeId).toBe(Type.Timestamp);
      expect((types['CREATION TIME'] as { unit: TimeUnit }).unit).toBe(TimeUnit.MILLISECOND);
      expect((types['CREATION TIME'] as { timezone: string }).timezone).toBe('UTC');

      expectSampleValues(t);
      expect(t.getChild('RSS')?.nullCount).toBe(2);
    }
  });

  it('carries metadata, column types and errors in the schema', async () => {
    const t = await roundTrip('arrow', sampleTable());
    const meta = t.schema.metadata;
    expect(meta.get('vmi.plugin')).toBe('pslist');
    expect(meta.get('vmi.guest.name')).toBe('lab1');
    expect(meta.get('vmi.kernel.release')).toBe('6.1.0-56-amd64');
    const errors = JSON.parse(meta.get('vmi.errors') ?? '[]') as string[];
    expect(errors[0]).toBe('row for pid 99 lost: batch failed (EFAULT)');
    expect(errors).toContain('RSS: unreadable (1 row: 2)');
    expect(errors).toContain('CREATION TIME: unreadable: ESRCH (1 row: 2)');
    expect(errors).toContain('OFFSET: not available (1 row: 1)');
    const offset = t.schema.fields.find((f) => f.name === 'OFFSET');
    expect(offset?.metadata.get('vmi.type')).toBe('hex64');
    expect(t.schema.fields[0].metadata.get('vmi.description')).toBe('process id');
  });

  it('omits vmi.errors when there are none and adds TreeDepth for trees', () => {
    const t = toArrow({
      plugin: 'pstree',
      columns: [{ name: 'PID', type: 'int32' }],
      rows: [[1], [2]],
      depths: [0, 1],
      errors: [],
      metadata: {},
    });
    expect(t.schema.metadata.has('vmi.errors')).toBe(false);
    expect(t.schema.fields.map((f) => f.name)).toEqual(['TreeDepth', 'PID']);
    expect([...(t.getChild('TreeDepth') ?? [])]).toEqual([0, 1]);
  });

  it('aggregates absent-value notes instead of one line per cell', () => {
    const t = sampleTable();
    t.rows = Array.from({ length: 50 }, (_, i) => [i, 0, null, null, null, null, null, null]);
    t.rows[7][3] = sampleTable().rows[2][3];
    expect(absentNotes(t)).toEqual(['RSS: unreadable (1 row: 7)']);
  });

  it('rejects values that do not fit the column, naming plugin, column and row', () => {
    const bad = (type: ColumnType, v: unknown) => () =>
      toArrow({
        plugin: 'p',
        columns: [{ name: 'X', type }],
        rows: [[1], [v as never]],
        errors: [],
        metadata: {},
      });
    expect(bad('int32', 2 ** 31)).toThrow(/p: column 'X' \(int32\) row 1: not a 32-bit integer/);
    expect(bad('int32', 'x')).toThrow(TableError);
    expect(bad('uint64', -1)).toThrow(/out of range/);
    expect(bad('int64', 1n << 63n)).toThrow(/out of range/);
    expect(bad('bool', 1)).toThrow(/not a boolean/);
    expect(() =>
      toArrow({
        plugin: 'p',
        columns: [{ name: 'X', type: 'int32' }],
        rows: [[1, 2]],
        errors: [],
        metadata: {},
      }),
    ).toThrow(/row 0 has 2 cells, expected 1/);
  });

  it('builds a 200k-row table quickly', () => {
    const n = 200_000;
    const rows = Array.from({ length: n }, (_, i) => [
      i,
      i >> 1,
      `process-${i}`,
      BigInt(i) * 4096n,
      new Date(1_700_000_000_000 + i),
      i % 97 === 0 ? null : `/usr/bin/prog${i % 13} --flag=${i}`,
    ]);
    const table: ResultTable = {
      plugin: 'big',
      columns: [
        { name: 'PID', type: 'int32' },
        { name: 'PPID', type: 'int32' },
        { name: 'COMM', type: 'utf8' },
        { name: 'Start', type: 'hex64' },
        { name: 'CREATION TIME', type: 'timestamp_ms' },
        { name: 'ARGS', type: 'utf8' },
      ],
      rows,
      errors: [],
      metadata: {},
    };
    const t0 = performance.now();
    const t = toArrow(table);
    const t1 = performance.now();
    const bytes = tableToIPC(t, 'file');
    const t2 = performance.now();
    console.log(
      `toArrow: ${n} rows × 6 columns in ${(t1 - t0).toFixed(0)} ms; IPC file ${bytes.length} bytes in ${(t2 - t1).toFixed(0)} ms`,
    );
    expect(tableFromIPC(bytes).numRows).toBe(n);
    expect(t.getChild('ARGS')?.get(n - 1)).toBe(`/usr/bin/prog${(n - 1) % 13} --flag=${n - 1}`);
    expect(t.getChild('ARGS')?.nullCount).toBe(Math.ceil(n / 97));
    expect(t1 - t0).toBeLessThan(10_000);
  });
});
