import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, TimeUnit, type Table } from 'apache-arrow';
import { readParquet, ParquetFile } from 'parquet-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  getRenderer,
  OutputError,
  TableError,
  writeOutput,
  type ResultTable,
} from '../../src/output/index.js';
import { CollectingStream, MemorySink, sampleTable, T0, expectSampleValues } from './output-helpers.js';

async function parquetBytes(table: ResultTable): Promise<Buffer> {
  const sink = new MemorySink();
  await getRenderer('parquet').render([table], sink);
  return sink.bytes();
}

/** Reads Parquet back through parquet-wasm into an apache-arrow Table. */
function readBack(bytes: Uint8Array): Table {
  return tableFromIPC(readParquet(bytes).intoIPCStream());
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmi-parquet-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('parquet renderer', () => {
  it('writes a Parquet file (PAR1 magic at both ends), zstd-compressed', async () => {
    const bytes = await parquetBytes(sampleTable());
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('PAR1');
    expect(bytes.subarray(bytes.length - 4).toString('latin1')).toBe('PAR1');
    const file = await ParquetFile.fromFile(new Blob([new Uint8Array(bytes)]));
    const meta = file.metadata();
    expect(meta.fileMetadata().numRows()).toBe(4);
    expect(meta.rowGroup(0).column(0).compression()).toBe(5); // Compression.ZSTD
  });

  it('round-trips values and Arrow types, nulls included', async () => {
    const t = readBack(await parquetBytes(sampleTable()));
    const types = Object.fromEntries(t.schema.fields.map((f) => [f.name, f.type]));
    expect(String(types.PID)).toBe('Int32');
    expect(String(types.PPID)).toBe('Int32');
    expect(String(types.RSS)).toBe('Int64');
    expect(String(types.OFFSET)).toBe('Uint64');
    expect(String(types.KTHREAD)).toBe('Bool');
    expect(String(types.CPU)).toBe('Float64');
    // Parquet's BYTE_ARRAY strings come back as Utf8 or LargeUtf8 depending on the reader.
    expect(String(types.COMM)).toMatch(/^(Large)?Utf8$/);
    const ts = types['CREATION TIME'] as unknown as { unit: TimeUnit; timezone: string };
    expect(ts.unit).toBe(TimeUnit.MILLISECOND);
    expect(ts.timezone).toBe('UTC');

    expectSampleValues(t);
  });

  it('keeps the vmi.* schema metadata, field metadata and errors', async () => {
    const bytes = await parquetBytes(sampleTable());
    const t = readBack(bytes);
    const meta = t.schema.metadata;
    expect(meta.get('vmi.plugin')).toBe('pslist');
    expect(meta.get('vmi.guest.name')).toBe('lab1');
    expect(meta.get('vmi.kernel.release')).toBe('6.1.0-56-amd64');
    const errors = JSON.parse(meta.get('vmi.errors') ?? '[]') as string[];
    expect(errors[0]).toBe('row for pid 99 lost: batch failed (EFAULT)');
    expect(t.schema.fields.find((f) => f.name === 'OFFSET')?.metadata.get('vmi.type')).toBe('hex64');
    expect(t.schema.fields[0].metadata.get('vmi.description')).toBe('process id');

    // Also as plain Parquet key-value metadata, for readers that ignore ARROW:schema.
    const file = await ParquetFile.fromFile(new Blob([new Uint8Array(bytes)]));
    const kv = file.metadata().fileMetadata().keyValueMetadata() as Map<string, string>;
    expect(kv.get('vmi.plugin')).toBe('pslist');
    expect(kv.get('vmi.guest.name')).toBe('lab1');
    expect(kv.has('ARROW:schema')).toBe(true);
  });

  it('writes tree tables with their TreeDepth column, and empty tables', async () => {
    const tree: ResultTable = {
      plugin: 'pstree',
      columns: [{ name: 'PID', type: 'int32' }],
      rows: [[1], [2], [3]],
      depths: [0, 1, 1],
      errors: [],
      metadata: {},
    };
    const t = readBack(await parquetBytes(tree));
    expect(t.schema.fields.map((f) => f.name)).toEqual(['TreeDepth', 'PID']);
    expect([...(t.getChild('TreeDepth') ?? [])]).toEqual([0, 1, 1]);

    const empty: ResultTable = { ...sampleTable(), rows: [] };
    const e = readBack(await parquetBytes(empty));
    expect(e.numRows).toBe(0);
    expect(e.schema.fields.map((f) => f.name)).toContain('CREATION TIME');
  });

  it('fails on a misfit value before writing anything', async () => {
    const bad: ResultTable = { ...sampleTable(), rows: [[1.5, 0, 'x', 1n, 0n, T0, false, 0]] };
    await expect(parquetBytes(bad)).rejects.toThrow(TableError);
  });

  it('writes -o FILE and one <plugin>.parquet per table with -o DIR', async () => {
    const file = join(dir, 'one.parquet');
    expect(await writeOutput([sampleTable()], { format: 'parquet', output: file })).toEqual([file]);
    expect(readBack(await readFile(file)).numRows).toBe(4);

    const out = join(dir, 'several') + '/';
    const psaux: ResultTable = { ...sampleTable(), plugin: 'psaux' };
    const written = await writeOutput([sampleTable(), psaux], { format: 'parquet', output: out });
    expect(written.map((p) => p.slice(out.length))).toEqual(['pslist.parquet', 'psaux.parquet']);
    expect((await readdir(out)).sort()).toEqual(['psaux.parquet', 'pslist.parquet']);
    expect(readBack(await readFile(join(out, 'psaux.parquet'))).schema.metadata.get('vmi.plugin')).toBe(
      'psaux',
    );
  });

  it('refuses a terminal and several tables on one stream', async () => {
    const tty = new CollectingStream();
    tty.isTTY = true;
    await expect(writeOutput([sampleTable()], { format: 'parquet', stdout: tty })).rejects.toThrow(
      /binary and stdout is a terminal/,
    );
    const pipe = new CollectingStream();
    await expect(
      writeOutput([sampleTable(), sampleTable()], { format: 'parquet', stdout: pipe }),
    ).rejects.toThrow(OutputError);
    await writeOutput([sampleTable()], { format: 'parquet', stdout: pipe });
    expect(readBack(Buffer.concat(pipe.chunks)).numRows).toBe(4);
  });
});
