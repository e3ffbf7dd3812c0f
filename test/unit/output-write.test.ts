import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { tableFromIPC } from 'apache-arrow';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OutputError, writeFileAtomic, writeOutput, type ResultTable } from '../../src/output/index.js';
import { CollectingStream, sampleTable } from './output-helpers.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmi-output-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function lsmod(): ResultTable {
  return {
    plugin: 'lsmod',
    columns: [
      { name: 'Name', type: 'utf8' },
      { name: 'Size', type: 'uint64' },
    ],
    rows: [['e1000', 131072n]],
    errors: [],
    metadata: {},
  };
}

describe('writeOutput', () => {
  it('writes quick text to the stream by default', async () => {
    const out = new CollectingStream();
    expect(await writeOutput([lsmod()], { stdout: out })).toEqual([]);
    expect(out.text()).toBe('\nName\tSize\n\ne1000\t131072\n');
  });

  it('refuses binary output on a terminal and several tables in a one-table format', async () => {
    const tty = new CollectingStream();
    tty.isTTY = true;
    await expect(writeOutput([lsmod()], { format: 'arrow', stdout: tty })).rejects.toThrow(
      /binary.*terminal/,
    );
    await expect(
      writeOutput([lsmod(), sampleTable()], { format: 'csv', stdout: new CollectingStream() }),
    ).rejects.toThrow(OutputError);
    await expect(
      writeOutput([lsmod(), sampleTable()], { format: 'arrow', output: join(dir, 'x.arrow') }),
    ).rejects.toThrow(/-o DIR/);
    expect(await readdir(dir)).toEqual([]);
  });

  it('pipes Arrow IPC bytes to a non-terminal stream', async () => {
    const out = new CollectingStream();
    await writeOutput([lsmod()], { format: 'arrows', stdout: out });
    const t = tableFromIPC(Buffer.concat(out.chunks));
    expect([...(t.getChild('Size') ?? [])]).toEqual([131072n]);
  });

  it('writes one file, replacing an existing one', async () => {
    const path = join(dir, 'out.arrow');
    await writeFile(path, 'old');
    expect(await writeOutput([sampleTable()], { format: 'arrow', output: path })).toEqual([path]);
    const t = tableFromIPC(await readFile(path));
    expect(t.numRows).toBe(4);
    expect(t.schema.metadata.get('vmi.plugin')).toBe('pslist');
    expect(await readdir(dir)).toEqual(['out.arrow']);
  });

  it('writes <dir>/<plugin>.<ext> per table for a directory', async () => {
    const out = join(dir, 'results') + '/';
    const files = await writeOutput([sampleTable(), lsmod(), lsmod()], { format: 'arrow', output: out });
    expect(files.map((f) => f.slice(out.length))).toEqual(['pslist.arrow', 'lsmod.arrow', 'lsmod-2.arrow']);
    expect((await readdir(out)).sort()).toEqual(['lsmod-2.arrow', 'lsmod.arrow', 'pslist.arrow']);
    const csvFiles = await writeOutput([lsmod()], { format: 'csv', output: dir });
    expect(await readFile(csvFiles[0], 'utf8')).toBe('Name,Size\ne1000,131072\n');
  });

  it('combines several tables into one text file with headings', async () => {
    const path = join(dir, 'all.txt');
    await writeOutput([lsmod(), lsmod()], { format: 'quick', output: path });
    expect(await readFile(path, 'utf8')).toBe(
      '== lsmod ==\n\nName\tSize\n\ne1000\t131072\n\n== lsmod-2 ==\n\nName\tSize\n\ne1000\t131072\n',
    );
  });
});

describe('streamSink', () => {
  it('respects backpressure of a slow stream and delivers everything in order', async () => {
    const received: Buffer[] = [];
    let drains = 0;
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        received.push(chunk);
        setImmediate(cb);
      },
    });
    slow.on('drain', () => drains++);
    const big: ResultTable = {
      ...lsmod(),
      rows: Array.from({ length: 20_000 }, (_, i) => [`mod${i}`, BigInt(i)]),
    };
    await writeOutput([big], { format: 'csv', stdout: slow });
    const text = Buffer.concat(received).toString('utf8');
    expect(text.split('\n')).toHaveLength(20_002);
    expect(text.endsWith('mod19999,19999\n')).toBe(true);
    expect(drains).toBeGreaterThan(0);
  });
});

describe('writeFileAtomic', () => {
  it('leaves no file (and no temp file) when rendering throws midway', async () => {
    const path = join(dir, 'half.txt');
    await expect(
      writeFileAtomic(path, async (sink) => {
        await sink.write('first part\n');
        throw new Error('guest went away');
      }),
    ).rejects.toThrow('guest went away');
    expect(await readdir(dir)).toEqual([]);
  });

  it('names the path asked for, not its temporary file, when the directory cannot take it', async () => {
    const path = join(dir, 'no-such-dir', 'x.csv');
    await expect(writeFileAtomic(path, async () => undefined)).rejects.toThrow(
      `cannot write ${path}: ENOENT`,
    );
  });

  it('keeps the previous file intact when a rewrite fails', async () => {
    const path = join(dir, 'keep.csv');
    await writeFile(path, 'previous');
    const bad: ResultTable = { ...lsmod(), rows: [['x', -1]] }; // uint64 cannot be negative
    await expect(writeOutput([bad], { format: 'arrow', output: path })).rejects.toThrow(/out of range/);
    expect(await readFile(path, 'utf8')).toBe('previous');
    expect(await readdir(dir)).toEqual(['keep.csv']);
  });
});

describe('a closed pipe (vmi … | head -1)', () => {
  /** A pipe whose reader exits after the first chunk: later writes fail with EPIPE, as Node reports it. */
  class HeadPipe extends Writable {
    writes = 0;
    override _write(_chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
      this.writes++;
      if (this.writes === 1) return cb();
      cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' }));
    }
  }
  /** Many rows: the text renderers flush every 64 KiB, so the output takes several writes. */
  function big(): ResultTable {
    const t = lsmod();
    t.rows = Array.from({ length: 20000 }, (_, i) => [`module_${i}_${'x'.repeat(20)}`, BigInt(i)]);
    return t;
  }

  for (const format of ['quick', 'pretty', 'csv', 'json', 'jsonl', 'arrows']) {
    it(`${format}: ends the rendering quietly, without an unhandled error`, async () => {
      const pipe = new HeadPipe();
      const uncaught: unknown[] = [];
      const onUncaught = (e: unknown): void => void uncaught.push(e);
      process.on('uncaughtException', onUncaught);
      try {
        await expect(writeOutput([big()], { format, stdout: pipe })).resolves.toEqual([]);
        // A second table after the reader left is refused quietly too.
        await expect(writeOutput([big()], { format, stdout: pipe })).resolves.toEqual([]);
        await new Promise((r) => setTimeout(r, 20));
      } finally {
        process.off('uncaughtException', onUncaught);
      }
      expect(pipe.writes).toBe(2);
      expect(uncaught).toEqual([]);
    });
  }

  it('other stream errors still fail the output', async () => {
    const broken = new Writable({
      write(_c, _e, cb) {
        cb(Object.assign(new Error('write EIO'), { code: 'EIO' }));
      },
    });
    broken.on('error', () => undefined);
    await expect(writeOutput([big()], { format: 'csv', stdout: broken })).rejects.toThrow(/EIO/);
  });
});
