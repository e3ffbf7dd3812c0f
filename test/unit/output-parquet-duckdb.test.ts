/**
 * vmi's Parquet output as DuckDB reads it: types, aggregates, a timestamp filter, the
 * vmi.* key-value metadata, and the samples/duckdb_pslist.mjs example end to end.
 * DuckDB is a dev dependency for these tests and the samples; the CLI never imports it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeOutput, type ResultTable, type RowValue } from '../../src/output/index.js';

const BOOT = Date.UTC(2026, 10, 25, 9, 0, 0);
const COMMS = ['init', 'sh', 'sh', 'kworker/0:1', 'sleep', 'sleep', 'sleep', 'httpd'];

/** pslist-like rows: PID, PPID, COMM, CREATION TIME (pid k started k seconds after boot), STATE. */
function pslistTable(): ResultTable {
  const rows: RowValue[][] = COMMS.map((comm, i) => {
    const pid = i + 1;
    return [pid, pid === 1 ? 0 : 1, comm, new Date(BOOT + pid * 1000), pid === 7 ? 'Z' : 'S'];
  });
  // Start time unreadable; a comm with a 0xFF byte, as byte text.
  rows.push([4242, 1, 'orph\\xffan', null, 'S']);
  return {
    plugin: 'pslist',
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'PPID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
      { name: 'CREATION TIME', type: 'timestamp_ms' },
      { name: 'STATE', type: 'utf8' },
    ],
    rows,
    errors: [],
    metadata: { guest: 'lab', 'kernel.release': '6.1.0-56-amd64' },
  };
}

function psauxTable(): ResultTable {
  const args: Record<string, string> = {
    init: '/sbin/init',
    sh: '/bin/sh -c x',
    'kworker/0:1': '[kworker/0:1]',
    sleep: 'sleep 1000',
    httpd: '/usr/sbin/nginx -g daemon off;',
  };
  return {
    plugin: 'psaux',
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'PPID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
      { name: 'ARGS', type: 'utf8' },
    ],
    rows: COMMS.map((comm, i) => [i + 1, i === 0 ? 0 : 1, comm, args[comm]]),
    errors: [],
    metadata: { guest: 'lab' },
  };
}

let dir: string;
let instance: DuckDBInstance;
let db: DuckDBConnection;

async function rows(sql: string): Promise<Record<string, unknown>[]> {
  return (await db.runAndReadAll(sql)).getRowObjectsJS();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmi-duckdb-'));
  await writeOutput([pslistTable(), psauxTable()], { format: 'parquet', output: `${dir}/` });
  instance = await DuckDBInstance.create(':memory:');
  db = await instance.connect();
  await db.run(`SET file_search_path = '${dir}'`);
});

afterAll(async () => {
  db?.closeSync();
  instance?.closeSync();
  await rm(dir, { recursive: true, force: true });
});

describe('DuckDB reads vmi parquet', () => {
  it('sees the column types', async () => {
    const types = await rows(`SELECT column_name, column_type FROM (DESCRIBE FROM 'pslist.parquet')`);
    expect(Object.fromEntries(types.map((r) => [r.column_name, r.column_type]))).toEqual({
      PID: 'INTEGER',
      PPID: 'INTEGER',
      COMM: 'VARCHAR',
      'CREATION TIME': 'TIMESTAMP WITH TIME ZONE',
      STATE: 'VARCHAR',
    });
  });

  it('counts and aggregates', async () => {
    expect(await rows(`SELECT COUNT(*) AS n, MAX(PID) AS max_pid FROM 'pslist.parquet'`)).toEqual([
      { n: 9n, max_pid: 4242 },
    ]);
    expect(
      await rows(
        `SELECT COMM, COUNT(*) AS n FROM 'pslist.parquet' GROUP BY COMM ORDER BY n DESC, COMM LIMIT 3`,
      ),
    ).toEqual([
      { COMM: 'sleep', n: 3n },
      { COMM: 'sh', n: 2n },
      { COMM: 'httpd', n: 1n },
    ]);
  });

  it('filters on the timestamp (and keeps unreadable times as NULL)', async () => {
    const since = new Date(BOOT + 6000).toISOString();
    const late = await rows(
      `SELECT PID, "CREATION TIME" AS t FROM 'pslist.parquet' WHERE "CREATION TIME" >= TIMESTAMPTZ '${since}' ORDER BY PID`,
    );
    expect(late.map((r) => r.PID)).toEqual([6, 7, 8]);
    expect(late[0].t).toEqual(new Date(BOOT + 6000));
    expect(await rows(`SELECT PID FROM 'pslist.parquet' WHERE "CREATION TIME" IS NULL`)).toEqual([
      { PID: 4242 },
    ]);
  });

  it('joins pslist and psaux on PID', async () => {
    const joined = await rows(
      `SELECT p.PID, a.ARGS FROM 'pslist.parquet' p LEFT JOIN 'psaux.parquet' a USING (PID) ORDER BY p.PID`,
    );
    expect(joined).toHaveLength(9);
    expect(joined[7]).toEqual({ PID: 8, ARGS: '/usr/sbin/nginx -g daemon off;' });
    expect(joined[8]).toEqual({ PID: 4242, ARGS: null });
  });

  it('reads the vmi.* key-value metadata', async () => {
    const kv = await rows(
      `SELECT decode(key) AS k, decode(value) AS v FROM parquet_kv_metadata('pslist.parquet') WHERE decode(key) LIKE 'vmi.%' ORDER BY k`,
    );
    expect(kv).toEqual([
      { k: 'vmi.guest', v: 'lab' },
      { k: 'vmi.kernel.release', v: '6.1.0-56-amd64' },
      { k: 'vmi.plugin', v: 'pslist' },
      { k: 'vmi.text_encoding', v: 'utf8-xescape' },
    ]);
  });
});

describe('samples/duckdb_pslist.mjs', () => {
  it('runs every query of samples/duckdb_pslist.sql against the output directory', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['samples/duckdb_pslist.mjs', dir, '--json'],
      { timeout: 60_000 },
    );
    const results = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { title: string; rows: Record<string, unknown>[] });
    const byTitle = (prefix: string) => results.find((r) => r.title.startsWith(prefix))?.rows;
    expect(byTitle('processes and kernel threads')).toEqual([{ processes: 9, zombies: 1, max_pid: 4242 }]);
    expect(byTitle('processes per COMM')?.[0]).toEqual({ COMM: 'sleep', n: 3 });
    const newest = byTitle('newest processes');
    expect(newest?.[0]).toMatchObject({ PID: 8, COMM: 'httpd', ARGS: '/usr/sbin/nginx -g daemon off;' });
    expect(newest?.[0]['CREATION TIME']).toBe(new Date(BOOT + 8000).toISOString());
    expect(byTitle('processes started in the last minute')?.map((r) => r.PID)).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    expect(byTitle('command line differs')).toEqual([
      { PID: 8, COMM: 'httpd', ARGS: '/usr/sbin/nginx -g daemon off;' },
    ]);
    expect(byTitle('names with bytes that are not UTF-8')).toEqual([
      { PID: 4242, COMM: 'orph\\xffan', comm_bytes: '6F727068FF616E' },
    ]);
    expect(byTitle('vmi metadata')).toContainEqual({ key: 'vmi.plugin', value: 'pslist' });
  });
});
