/**
 * Table discovery for `vmi query` (src/sql/tables.ts) through DuckDB's own parser: plugin
 * names in FROM and JOIN, quoted identifiers, CTEs, strings that merely contain a name,
 * table-function options, unknown tables, syntax errors with their position; and the
 * DuckDB bridge (src/sql/duck.ts): typed columns in and out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OptionSpecs } from '../../src/sdk/plugin.js';
import { callEnd, discoverTables, QueryError, type PluginCatalog } from '../../src/sql/tables.js';
import { loadTable, openDuck, readResult, runSql, type Duck } from '../../src/sql/duck.js';
import { UNREADABLE, type ResultTable } from '../../src/output/index.js';
import { toArrow } from '../../src/output/arrow-table.js';

const catalog: PluginCatalog = {
  names: ['pslist', 'psaux', 'sockstat', 'lsmod', 'odd-name'],
  optionsOf: (n): OptionSpecs | undefined =>
    n === 'pslist'
      ? {
          pid: { type: 'integer', multiple: true, description: 'pid' },
          threads: { type: 'boolean', description: 'threads' },
        }
      : n === 'odd-name' || n === 'psaux' || n === 'sockstat' || n === 'lsmod'
        ? {}
        : undefined,
};

let duck: Duck;
beforeAll(async () => {
  duck = await openDuck();
});
afterAll(() => duck?.close());

const find = (sql: string) => discoverTables(duck.scalar, sql, catalog);

describe('table discovery', () => {
  it('finds the plugins of FROM and JOIN, once each, case-insensitively', async () => {
    const r = await find(
      `SELECT s.PID, a.ARGS FROM sockstat s JOIN PsAux a USING (PID) JOIN pslist p ON p.PID = s.PID, sockstat s2`,
    );
    expect(r.refs.map((x) => x.plugin)).toEqual(['sockstat', 'psaux', 'pslist']);
    expect(r.sql).toContain('FROM sockstat s');
  });

  it('ignores names inside strings and comments, and CTE names', async () => {
    const r = await find(
      `WITH lsmod AS (SELECT 1 AS x) -- FROM psaux\nSELECT 'FROM pslist' AS t, "weird"".name".x FROM lsmod, (SELECT 1 AS x) AS "weird"".name" /* sockstat */`,
    );
    expect(r.refs).toEqual([]);
  });

  it('finds quoted identifiers and subqueries', async () => {
    const r = await find(`SELECT * FROM "odd-name" WHERE 1 IN (SELECT PID FROM "pslist")`);
    expect(r.refs.map((x) => x.plugin).sort()).toEqual(['odd-name', 'pslist']);
  });

  it('names the available plugins for a table that is not one', async () => {
    await expect(find('SELECT * FROM pslist JOIN processes USING (PID)')).rejects.toThrow(
      /no table named 'processes'; the tables are the plugins: lsmod, odd-name, psaux, pslist, sockstat/,
    );
  });

  it('gives the position of a syntax error', async () => {
    const e = await find('SELECT * FROM pslist WHERE PID = = 1').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QueryError);
    expect((e as Error).message).toMatch(/syntax error at or near "=" at line 1, column 34 \(character 34\)/);
    const e2 = await find('SELECT *\nFROM pslist\nWHERE PID = = 1').catch((x: unknown) => x);
    expect((e2 as Error).message).toMatch(/at line 3, column 13/);
  });

  it('refuses statements that are not one SELECT', async () => {
    await expect(find('DROP TABLE pslist')).rejects.toThrow(QueryError);
    await expect(find('SELECT 1; SELECT 2')).rejects.toThrow(/exactly one SELECT/);
  });

  it('takes plugin options as named table parameters and splices the call out', async () => {
    const r = await find(
      `SELECT p.PID FROM pslist(pid := [1, 2], threads := true) p JOIN pslist(pid := 1) USING (PID) JOIN pslist q USING (PID)`,
    );
    expect(r.refs).toEqual([
      { plugin: 'pslist', options: { pid: ['1', '2'], threads: true }, table: 'pslist#1' },
      { plugin: 'pslist', options: { pid: ['1'] }, table: 'pslist#2' },
      { plugin: 'pslist', options: {}, table: 'pslist' },
    ]);
    expect(r.sql).toBe(
      `SELECT p.PID FROM "pslist#1" p JOIN "pslist#2" AS "pslist" USING (PID) JOIN pslist q USING (PID)`,
    );
  });

  it('rejects unknown or positional options', async () => {
    await expect(find('SELECT * FROM pslist(foo := 1)')).rejects.toThrow(/pslist has no option 'foo'/);
    await expect(find('SELECT * FROM pslist(1)')).rejects.toThrow(/name each option/);
    await expect(find('SELECT * FROM psaux(pid := 1)')).rejects.toThrow(/it takes none/);
  });

  it('finds the end of a call past quotes, comments and nested parentheses', () => {
    const sql = `x pslist (pid := (1), s := ')(', "a)b" := 1 /* ) */ -- )\n) rest`;
    const end = callEnd(sql, 2);
    expect(sql.slice(end)).toBe(' rest');
    expect(() => callEnd('pslist x', 0)).toThrow(QueryError);
  });
});

describe('DuckDB bridge', () => {
  it('keeps int64, uint64/hex64, timestamps and byte text typed, absent cells as NULL', async () => {
    const t: ResultTable = {
      plugin: 'demo',
      columns: [
        { name: 'PID', type: 'int32', description: 'Process id' },
        { name: 'INODE', type: 'int64' },
        { name: 'ADDR', type: 'hex64' },
        { name: 'WHEN_', type: 'timestamp_ms' },
        { name: 'COMM', type: 'utf8' },
        { name: 'OK', type: 'bool' },
      ],
      rows: [
        [
          1,
          9007199254740993n,
          0xffffffff81000000n,
          new Date(Date.UTC(2026, 10, 29, 1, 2, 3, 456)),
          'init\\xff',
          true,
        ],
        [2, UNREADABLE, 0n, null, 'sh', false],
      ],
      errors: [],
      metadata: {},
    };
    await loadTable(duck.connection, 'demo', t);
    const out = await readResult(
      await runSql(
        duck.connection,
        'SELECT PID, INODE, ADDR, WHEN_, COMM, OK, sum(INODE) OVER () AS S FROM demo ORDER BY PID',
      ),
      'query',
      new Map(t.columns.map((c) => [c.name, c])),
    );
    expect(out.columns.map((c) => `${c.name}:${c.type}`)).toEqual([
      'PID:int32',
      'INODE:int64',
      'ADDR:hex64',
      'WHEN_:timestamp_ms',
      'COMM:utf8',
      'OK:bool',
      'S:int64',
    ]);
    expect(out.columns[0].description).toBe('Process id');
    expect(out.rows[0]).toEqual([
      1,
      9007199254740993n,
      0xffffffff81000000n,
      new Date(Date.UTC(2026, 10, 29, 1, 2, 3, 456)),
      'init\\xff',
      true,
      9007199254740993n,
    ]);
    expect(out.rows[1].slice(0, 4)).toEqual([2, null, 0n, null]);
    // Byte text keeps its Arrow field metadata through the renderers.
    const arrow = toArrow(out);
    expect(arrow.schema.fields[4].metadata.get('vmi.encoding')).toBe('utf8-xescape');
    expect(String(arrow.schema.fields[1].type)).toBe('Int64');
    expect(String(arrow.schema.fields[3].type)).toMatch(/Timestamp/);
  });

  it('gives the position of a binder error', async () => {
    await expect(runSql(duck.connection, 'SELECT nope FROM demo')).rejects.toThrow(
      /Referenced column "nope" not found.*\(at line 1, column 8 of the query as run\)/,
    );
  });
});
