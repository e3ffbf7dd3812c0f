/**
 * The lake of `vmi collect` (src/sql/lake.ts, collect.ts): partition paths, file and
 * temporary names, retention, atomic writes, and what DuckDB reads back (a half-written
 * temporary file is invisible to the readers' globs; `vmi query --lake` sees the columns).
 */
import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  compactTime,
  dataFileName,
  escapePartitionValue,
  expiredDates,
  isDataFileName,
  isTempFileName,
  parseInterval,
  partitionDir,
  pluginGlob,
  tempFileName,
} from '../../src/sql/lake.js';
import { applyRetention, lakeTable, startCollect, writeLakeFile } from '../../src/sql/collect.js';
import { pslist } from '../../src/plugins/pslist.js';
import type { AttachedSession } from '../../src/runner/run-plugins.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { addFakeProcess, fakeProcGuest } from './helpers/fake-guest.js';
import { queryLake, type QueryCatalog } from '../../src/sql/query.js';
import { toParquet } from '../../src/output/renderers/parquet.js';
import { openDuck } from '../../src/sql/duck.js';
import type { ColumnSpec, ResultTable, RowValue } from '../../src/output/index.js';
import { readFileSync } from 'node:fs';
import { builtinPlugins } from '../../src/plugins/index.js';

const AT = new Date(Date.UTC(2026, 10, 29, 23, 5, 7, 89));

describe('partition paths and names', () => {
  it('builds the Hive layout, escaping values as Hive does', () => {
    expect(partitionDir({ plugin: 'pslist', host: 'hv1', guest: 'web-1', at: AT })).toBe(
      'plugin=pslist/host=hv1/guest=web-1/date=2026-11-29',
    );
    expect(escapePartitionValue('a/b=c%d')).toBe('a%2Fb%3Dc%25d');
    expect(escapePartitionValue('..')).toBe('..');
    expect(partitionDir({ plugin: 'p', host: '../x', guest: 'g\n', at: AT })).toBe(
      'plugin=p/host=..%2Fx/guest=g%0A/date=2026-11-29',
    );
    expect(escapePartitionValue('')).toBe('__HIVE_DEFAULT_PARTITION__');
  });

  it('names files by time and id; temporary names are hidden and not *.parquet', () => {
    expect(compactTime(AT)).toBe('20261129T230507089Z');
    expect(dataFileName(AT, 'deadbeef')).toBe('20261129T230507089Z-deadbeef.parquet');
    expect(dataFileName(AT)).toMatch(/^20261129T230507089Z-[0-9a-f]{8}\.parquet$/);
    const tmp = tempFileName('20261129T230507089Z-deadbeef.parquet');
    expect(tmp).toBe('.20261129T230507089Z-deadbeef.parquet.tmp');
    expect(isTempFileName(tmp)).toBe(true);
    expect(isDataFileName(tmp)).toBe(false);
    expect(isDataFileName('20261129T230507089Z-deadbeef.parquet')).toBe(true);
    expect(pluginGlob('/l', 'pslist')).toBe('/l/plugin=pslist/*/*/*/*.parquet');
  });

  it('parses intervals', () => {
    expect(parseInterval('30s')).toBe(30_000);
    expect(parseInterval('5m')).toBe(300_000);
    expect(parseInterval('250ms')).toBe(250);
    expect(parseInterval('2')).toBe(2000);
    expect(() => parseInterval('soon')).toThrow(/interval/);
    expect(() => parseInterval('5ms')).toThrow(/at least/);
  });
});

describe('retention', () => {
  const now = new Date(Date.UTC(2026, 10, 29, 0, 30));
  it('keeps today and the N-1 days before it', () => {
    const dates = ['2026-11-29', '2026-11-28', '2026-11-27', '2026-10-01', 'junk', '2025-13-45'];
    expect(expiredDates(dates, 1, now)).toEqual(['2026-11-28', '2026-11-27', '2026-10-01']);
    expect(expiredDates(dates, 2, now)).toEqual(['2026-11-27', '2026-10-01']);
    expect(expiredDates(dates, 60, now)).toEqual([]);
    expect(() => expiredDates(dates, 0, now)).toThrow(RangeError);
  });

  it('deletes expired date partitions only', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vmi-ret-'));
    try {
      for (const d of ['2026-11-29', '2026-11-20']) {
        const dir = join(root, 'plugin=pslist/host=h/guest=g', `date=${d}`);
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'x.parquet'), 'x');
      }
      const removed = await applyRetention(root, 7, now);
      expect(removed).toEqual([join(root, 'plugin=pslist/host=h/guest=g/date=2026-11-20')]);
      expect(await readdir(join(root, 'plugin=pslist/host=h/guest=g'))).toEqual(['date=2026-11-29']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

function psTable(guest: string, pids: number[]): ResultTable {
  return {
    plugin: 'pslist',
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
      { name: 'UID', type: 'int64' },
    ],
    rows: pids.map((p) => [p, `p${p}`, 0n]),
    errors: [],
    metadata: { guest },
  };
}

const catalog: QueryCatalog = {
  names: builtinPlugins.map((p) => p.name),
  optionsOf: (n) => builtinPlugins.find((p) => p.name === n)?.options,
  columnsOf: (n) => builtinPlugins.find((p) => p.name === n)!.columns,
  request: () => {
    throw new Error('not in a lake test');
  },
};

describe('lake files and readers', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmi-lake-'));
    const t1 = new Date(Date.UTC(2026, 10, 29, 10, 0, 0));
    const t2 = new Date(Date.UTC(2026, 10, 29, 10, 0, 30));
    for (const [at, round, pids] of [
      [t1, 1, [1, 2]],
      [t2, 2, [1, 2, 77]],
    ] as const) {
      for (const guest of ['a', 'b']) {
        const dir = join(root, partitionDir({ plugin: 'pslist', host: 'hv', guest, at }));
        await mkdir(dir, { recursive: true });
        const bytes = await toParquet(lakeTable(psTable(guest, [...pids]), at, round, '9.9.9'));
        await writeLakeFile(dir, dataFileName(at), bytes);
      }
    }
    // What a collector killed mid-write leaves: half a file under the temporary name.
    const dir = join(root, partitionDir({ plugin: 'pslist', host: 'hv', guest: 'a', at: t2 }));
    const half = (await toParquet(lakeTable(psTable('a', [5]), t2, 3, '9.9.9'))).slice(0, 100);
    await writeFile(join(dir, tempFileName(dataFileName(t2))), half);
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('readers see whole files only: the temporary file matches no data glob', async () => {
    const duck = await openDuck();
    try {
      for (const glob of [pluginGlob(root, 'pslist'), join(root, '**', '*.parquet')]) {
        const n = await duck.scalar(`SELECT count(*) FROM read_parquet('${glob}', hive_partitioning = true)`);
        expect(n).toBe('10');
      }
      const meta = await duck.scalar(
        `SELECT string_agg(decode(key) || '=' || decode(value), ' ') FROM parquet_kv_metadata('${pluginGlob(root, 'pslist')}') WHERE decode(key) IN ('vmi.version', 'vmi.schema') AND file_name LIKE '%guest=a%' AND file_name LIKE '%T100000%'`,
      );
      expect(meta).toContain('vmi.version=9.9.9');
      expect(meta).toContain('"name":"COLLECTED_AT","type":"timestamp_ms"');
    } finally {
      duck.close();
    }
  });

  it('vmi query --lake: what started between two collections, per guest', async () => {
    const r = await queryLake(
      `SELECT GUEST, PID, COMM FROM pslist WHERE COLLECTED_AT = (SELECT max(COLLECTED_AT) FROM pslist)
       AND PID NOT IN (SELECT PID FROM pslist p WHERE p.COLLECTED_AT < (SELECT max(COLLECTED_AT) FROM pslist)) ORDER BY GUEST`,
      catalog,
      root,
    );
    expect(r.table.rows).toEqual([
      ['a', 77, 'p77'],
      ['b', 77, 'p77'],
    ]);
    const cols = await queryLake('SELECT * FROM pslist LIMIT 1', catalog, root);
    expect(cols.table.columns.map((c) => `${c.name}:${c.type}`)).toEqual([
      'GUEST:utf8',
      'HOST:utf8',
      'COLLECTED_AT:timestamp_ms',
      'PID:int32',
      'COMM:utf8',
      'UID:int64',
    ]);
    await expect(queryLake('SELECT * FROM lsmod', catalog, root)).rejects.toThrow(/has no files of lsmod/);
    await expect(queryLake('SELECT * FROM pslist(pid := 1)', catalog, root)).rejects.toThrow(/do not apply/);
  });
});

describe('startCollect with fake guests (no QEMU)', () => {
  const fakeGuest = (name: string) => {
    const g = fakeProcGuest(3);
    addFakeProcess(g, 1, 'init');
    addFakeProcess(g, 2, name === 'a' ? 'sh' : 'httpd');
    const stats = {
      attachMs: 1,
      batches: 0,
      calls: 0,
      runMs: 0,
      transport: 'trap',
      shadowPid: 999,
      victimPid: 1,
    } as SessionStats;
    const session: AttachedSession = { stats, run: (calls) => g.run(calls), detach: async () => {} };
    const guest: InspectedGuest = { name, qmpSocket: '/nonexistent', ramSize: 0, runDir: '/nonexistent' };
    return { target: { name, resolve: async () => guest }, session };
  };

  it('writes rounds × guests × plugins files, stops after the current file on stop(), leaves no temp file', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vmi-collect-'));
    try {
      const a = fakeGuest('a');
      const b = fakeGuest('b');
      const sessions = new Map([
        ['a', a.session],
        ['b', b.session],
      ]);
      const lines: string[] = [];
      const c = startCollect([a.target, b.target], [{ plugin: pslist, options: {} }], {
        dir: root,
        version: '1.2.3',
        rounds: 2,
        intervalMs: 100,
        host: 'hv/1',
        log: (l) => lines.push(l),
        attach: async (g) => sessions.get(g.name)!,
      });
      const rounds = await c.done;
      expect(rounds.map((r) => [r.round, r.files, r.failures])).toEqual([
        [1, 2, 0],
        [2, 2, 0],
      ]);
      expect(
        lines.filter((l) => /^round \d\/2 at .*: 2 files, \d+ rows, 2 guests, 0 failures/.test(l)).length,
      ).toBe(2);
      const files = await readdir(root, { recursive: true });
      const data = files.filter((f) => f.endsWith('.parquet'));
      expect(data.length).toBe(4);
      expect(files.some((f) => f.endsWith('.tmp'))).toBe(false);
      for (const f of data)
        expect(f).toMatch(
          /^plugin=pslist\/host=hv%2F1\/guest=[ab]\/date=\d{4}-\d{2}-\d{2}\/\d{8}T\d{9}Z-[0-9a-f]{8}\.parquet$/,
        );

      // Until stopped: stop() in the middle of the run ends it after the file being written.
      const stopRoot = join(root, 'stop');
      let stopped = false;
      const c2 = startCollect([a.target, b.target], [{ plugin: pslist, options: {} }], {
        dir: stopRoot,
        version: '1.2.3',
        intervalMs: 100,
        log: () => undefined,
        attach: async (g) => {
          if (!stopped) {
            stopped = true;
            c2.stop();
          }
          return sessions.get(g.name)!;
        },
      });
      const r2 = await c2.done;
      expect(r2.length).toBe(1);
      expect(r2[0].files).toBe(0);
      expect((await readdir(stopRoot, { recursive: true })).filter((f) => f.endsWith('.parquet'))).toEqual(
        [],
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('docs/sql.md lake examples', () => {
  it('every SQL example of the lake section runs on a lake with the plugins’ columns', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vmi-doc-'));
    try {
      const now = Date.now();
      const sample = (c: ColumnSpec, i: number): RowValue =>
        c.type === 'utf8'
          ? c.name === 'State'
            ? 'LISTEN'
            : c.name === 'CONTAINER'
              ? 'docker:abc'
              : `v${i}`
          : c.type === 'int32'
            ? i
            : c.type === 'timestamp_ms'
              ? new Date(now - 1000)
              : c.type === 'bool'
                ? true
                : c.type === 'float64'
                  ? 1
                  : BigInt(i);
      for (const [k, at] of [new Date(now - 60_000), new Date(now - 30_000)].entries()) {
        for (const plugin of ['pslist', 'sockstat', 'lsmod']) {
          const p = builtinPlugins.find((x) => x.name === plugin)!;
          const t: ResultTable = {
            plugin,
            columns: [...p.columns],
            rows: Array.from({ length: 3 + k }, (_, i) => p.columns.map((c) => sample(c, i))),
            errors: [],
            metadata: { guest: 'g' },
          };
          const dir = join(root, partitionDir({ plugin, host: 'h', guest: 'g', at }));
          await mkdir(dir, { recursive: true });
          await writeLakeFile(dir, dataFileName(at), await toParquet(lakeTable(t, at, k + 1, 'x')));
        }
      }
      const doc = readFileSync(join(import.meta.dirname, '../../docs/sql.md'), 'utf8');
      const section = doc.slice(
        doc.indexOf('## `vmi query --lake DIR`'),
        doc.indexOf('## The same files in other engines'),
      );
      const blocks = [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]);
      expect(blocks.length).toBe(5);
      const counts: number[] = [];
      for (const sql of blocks) counts.push((await queryLake(sql, catalog, root)).table.rows.length);
      // Row 3 of each plugin appears in the second round only: one new process, listener and
      // module; the fixed date of the modules example is in the past, so every module is "since".
      expect(counts).toEqual([1, 1, 1, 4, 2]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
