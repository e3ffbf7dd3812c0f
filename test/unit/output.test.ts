import { describe, expect, it } from 'vitest';
import {
  displayWidth,
  getRenderer,
  OutputError,
  RENDERER_NAMES,
  type ResultTable,
} from '../../src/output/index.js';
import { MemorySink, sampleTable } from './output-helpers.js';

async function render(name: string, tables: ResultTable[]): Promise<string> {
  const sink = new MemorySink();
  await getRenderer(name).render(tables, sink);
  return sink.text();
}

function tree(): ResultTable {
  return {
    plugin: 'pstree',
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
    ],
    rows: [
      [1, 'init'],
      [10, 'sh'],
      [11, 'ps'],
      [2, 'kthreadd'],
    ],
    depths: [0, 1, 2, 0],
    errors: [],
    metadata: {},
  };
}

describe('getRenderer', () => {
  it('knows the Volatility formats plus Arrow and Parquet, case-insensitively', () => {
    expect(RENDERER_NAMES).toEqual(['quick', 'pretty', 'csv', 'json', 'jsonl', 'arrow', 'arrows', 'parquet']);
    expect(getRenderer('JSON').name).toBe('json');
  });
  it('lists valid names on an unknown one', () => {
    expect(() => getRenderer('xml')).toThrow(OutputError);
    expect(() => getRenderer('xml')).toThrow(
      /unknown output format 'xml'; valid formats: quick, pretty, csv/,
    );
    expect(getRenderer('Parquet').name).toBe('parquet');
  });
});

describe('quick renderer', () => {
  it('prints Volatility quick text: blank line, header, blank line, one line per row', async () => {
    const out = await render('quick', [sampleTable()]);
    expect(out).toBe(
      [
        '',
        'PID\tPPID\tCOMM\tRSS\tOFFSET\tCREATION TIME\tKTHREAD\tCPU',
        '',
        '1\t0\tinit\t1234\t0xffff888000000000\t2026-11-25 10:00:00.000000 UTC\tFalse\t0.5',
        '2\t0\tkthreadd\t-\tN/A\t2026-11-25 10:00:01.250000 UTC\tTrue\t0',
        '42\t1\ta,b "c"\\x0ad\\x09e\t-\t0x10\t-\t-\t-1.25',
        '43\t1\théllo 世界 🚀\t9007199254740993\t0x0\t-\tFalse\t-',
        '',
      ].join('\n'),
    );
  });
  it('keeps every row on one line whatever the strings hold', async () => {
    const t = sampleTable();
    t.rows = [[1, 0, 'x\r\ny\u0000z\u2028', null, null, null, null, null]];
    const lines = (await render('quick', [t])).split('\n');
    expect(lines).toHaveLength(5);
    // Each control character as the \xNN escapes of its UTF-8 bytes (decodable like byte text).
    expect(lines[3]).toContain('x\\x0d\\x0ay\\x00z\\xe2\\x80\\xa8');
  });
  it('adds headings only for several tables and marks tree depth with stars', async () => {
    const out = await render('quick', [sampleTable(), tree()]);
    expect(out.startsWith('== pslist ==\n\nPID\t')).toBe(true);
    expect(out).toContain('\n== pstree ==\n\nPID\tCOMM\n\n1\tinit\n* 10\tsh\n** 11\tps\n2\tkthreadd\n');
    expect(await render('quick', [tree()])).not.toContain('==');
  });
  it('handles an empty table', async () => {
    const t = tree();
    t.rows = [];
    t.depths = [];
    expect(await render('quick', [t])).toBe('\nPID\tCOMM\n\n');
  });
});

describe('pretty renderer', () => {
  it('right-aligns columns under a header, separated by |', async () => {
    const out = await render('pretty', [tree()]);
    expect(out).toBe(
      [
        '    | PID |     COMM',
        '*   |   1 |     init',
        '**  |  10 |       sh',
        '*** |  11 |       ps',
        '*   |   2 | kthreadd',
        '',
      ].join('\n'),
    );
  });
  it('aligns by terminal width (CJK and emoji take two cells) and shows absent values', async () => {
    const lines = (await render('pretty', [sampleTable()])).trimEnd().split('\n');
    expect(lines).toHaveLength(5);
    const bars = lines.map((l) => {
      const at: number[] = [];
      let col = 0;
      for (const ch of l) {
        if (ch === '|') at.push(col);
        col += displayWidth(ch);
      }
      return at;
    });
    for (const b of bars) expect(b).toEqual(bars[0]);
    expect(displayWidth('héllo 世界 🚀')).toBe(13);
    expect(lines[2]).toMatch(/\|\s+- \|\s+N\/A \|/);
  });
});

describe('csv renderer', () => {
  it('writes a header and RFC 4180 quoted fields; absent values are empty', async () => {
    const out = await render('csv', [sampleTable()]);
    expect(out).toBe(
      [
        'PID,PPID,COMM,RSS,OFFSET,CREATION TIME,KTHREAD,CPU',
        '1,0,init,1234,0xffff888000000000,2026-11-25T10:00:00+00:00,False,0.5',
        '2,0,kthreadd,,,2026-11-25T10:00:01.250000+00:00,True,0',
        '42,1,"a,b ""c""\nd\te",,0x10,,,-1.25',
        '43,1,héllo 世界 🚀,9007199254740993,0x0,,False,',
        '',
      ].join('\n'),
    );
  });
  it('adds TreeDepth for trees and refuses several tables in one output', async () => {
    expect(await render('csv', [tree()])).toBe(
      'TreeDepth,PID,COMM\n0,1,init\n1,10,sh\n2,11,ps\n0,2,kthreadd\n',
    );
    expect(getRenderer('csv').combinesTables).toBe(false);
  });
});

describe('json renderers', () => {
  it('writes a list of row objects with __children, indented like Volatility', async () => {
    const out = await render('json', [sampleTable()]);
    expect(out).toContain('[\n  {\n    "PID": 1,\n    "PPID": 0,\n    "COMM": "init",\n');
    expect(out).toContain('"RSS": 9007199254740993,'); // exact, not rounded through a double
    const parsed = JSON.parse(out) as Record<string, unknown>[];
    expect(parsed).toHaveLength(4);
    expect(parsed[0]).toEqual({
      PID: 1,
      PPID: 0,
      COMM: 'init',
      RSS: 1234,
      OFFSET: '0xffff888000000000',
      'CREATION TIME': '2026-11-25T10:00:00+00:00',
      KTHREAD: false,
      CPU: 0.5,
      __children: [],
    });
    expect(parsed[1]).toMatchObject({
      RSS: null,
      OFFSET: null,
      'CREATION TIME': '2026-11-25T10:00:01.250000+00:00',
    });
    expect(parsed[2]).toMatchObject({ COMM: 'a,b "c"\nd\te', RSS: null, OFFSET: '0x10', KTHREAD: null });
    expect(parsed[3].COMM).toBe('héllo 世界 🚀');
  });
  it('nests tree rows in __children', async () => {
    const parsed = JSON.parse(await render('json', [tree()])) as unknown;
    expect(parsed).toEqual([
      {
        PID: 1,
        COMM: 'init',
        __children: [{ PID: 10, COMM: 'sh', __children: [{ PID: 11, COMM: 'ps', __children: [] }] }],
      },
      { PID: 2, COMM: 'kthreadd', __children: [] },
    ]);
  });
  it('keys several tables by plugin name and writes [] for an empty table', async () => {
    const empty = { ...tree(), plugin: 'lsmod', rows: [], depths: [] };
    const out = await render('json', [tree(), empty, tree()]);
    const parsed = JSON.parse(out) as Record<string, unknown[]>;
    expect(Object.keys(parsed)).toEqual(['pstree', 'lsmod', 'pstree-2']);
    expect(parsed.lsmod).toEqual([]);
    expect(await render('json', [empty])).toBe('[]\n');
  });
  it('jsonl writes one compact object per top-level row', async () => {
    const lines = (await render('jsonl', [sampleTable()])).trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe(
      '{"PID": 1, "PPID": 0, "COMM": "init", "RSS": 1234, "OFFSET": "0xffff888000000000", ' +
        '"CREATION TIME": "2026-11-25T10:00:00+00:00", "KTHREAD": false, "CPU": 0.5, "__children": []}',
    );
    expect((JSON.parse(lines[2]) as { COMM: string }).COMM).toBe('a,b "c"\nd\te');
    const multi = (await render('jsonl', [tree(), sampleTable()])).trimEnd().split('\n');
    expect(multi).toHaveLength(6);
    expect(JSON.parse(multi[0])).toMatchObject({ __plugin: 'pstree', PID: 1 });
    expect(JSON.parse(multi[5])).toMatchObject({ __plugin: 'pslist', PID: 43 });
  });
});

describe('large tables', () => {
  it('renders 100k rows as quick text and csv quickly', async () => {
    const rows = Array.from({ length: 100_000 }, (_, i) => [i, i >> 1, `proc-${i}`, BigInt(i) * 4096n, T(i)]);
    const t: ResultTable = {
      plugin: 'big',
      columns: [
        { name: 'PID', type: 'int32' },
        { name: 'PPID', type: 'int32' },
        { name: 'COMM', type: 'utf8' },
        { name: 'Start', type: 'hex64' },
        { name: 'CREATION TIME', type: 'timestamp_ms' },
      ],
      rows,
      errors: [],
      metadata: {},
    };
    for (const name of ['quick', 'csv', 'jsonl', 'pretty']) {
      const t0 = performance.now();
      const out = await render(name, [t]);
      console.log(`${name}: 100k rows in ${(performance.now() - t0).toFixed(0)} ms (${out.length} chars)`);
      expect(out.length).toBeGreaterThan(100_000 * 20);
    }
  });
});

function T(i: number): Date {
  return new Date(1_700_000_000_000 + i * 1000);
}

describe('lazily loaded renderers', () => {
  it('describe themselves exactly as the modules they load', async () => {
    const { getRenderer } = await import('../../src/output/registry.js');
    const modules = {
      arrow: (await import('../../src/output/renderers/arrow.js')).arrowRenderer,
      arrows: (await import('../../src/output/renderers/arrows.js')).arrowsRenderer,
      parquet: (await import('../../src/output/renderers/parquet.js')).parquetRenderer,
    };
    for (const [name, mod] of Object.entries(modules)) {
      const lazy = getRenderer(name);
      for (const key of ['name', 'description', 'binary', 'extension', 'combinesTables'] as const) {
        expect(lazy[key], `${name}.${key}`).toEqual(mod[key]);
      }
    }
  });
});
