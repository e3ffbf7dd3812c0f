import { describe, expect, it } from 'vitest';
import { AbsentValue, UNREADABLE } from '../../src/output/columns.js';
import { PluginRegistry } from '../../src/packs/registry.js';
import { builtinPlugins } from '../../src/plugins/index.js';

/** A built-in by name, case-insensitive: the CLI's registry with no pack loaded. */
const findPlugin = (name: string) => new PluginRegistry(builtinPlugins).find(name);
import { pslist } from '../../src/plugins/pslist.js';
import {
  apiVersion,
  DEFAULT_BATCH_LIMITS,
  definePlugin,
  PluginDefinitionError,
  PluginOptionError,
  resolveOptions,
  runPlugin,
  tasksPerBatch,
  sliceBounds,
  PIPELINE_SLICES,
  MIN_SLICE_TASKS,
  type ProcHints,
  type SyscallExecutor,
} from '../../src/sdk/index.js';
import { addFakeProcess, fakeProcGuest, fakeStat } from './helpers/fake-guest.js';

const col = (name: string) => pslist.columns.findIndex((c) => c.name === name);

describe('definePlugin and options', () => {
  const demo = definePlugin({
    name: 'demo',
    description: 'demo',
    version: '0.0.1',
    columns: [{ name: 'A', type: 'int32' }],
    options: {
      pid: { type: 'integer', multiple: true, description: 'pids' },
      all: { type: 'boolean', description: 'all' },
      name: { type: 'string', description: 'name' },
      depth: { type: 'integer', default: 3, description: 'depth' },
    },
    async run(ctx) {
      // Compile-time checks of the inferred option types.
      const pids: number[] = ctx.options.pid;
      const all: boolean = ctx.options.all;
      const name: string | undefined = ctx.options.name;
      const depth: number = ctx.options.depth;
      return [{ A: pids.length + (all ? 1 : 0) + (name ? 1 : 0) + depth }];
    },
  });

  it('stamps the API version and validates declarations', () => {
    expect(demo.apiVersion).toBe(apiVersion);
    expect(apiVersion).toBe(1);
    const base = { description: 'd', version: '1', run: async () => [] };
    expect(() =>
      definePlugin({ ...base, name: 'Bad Name', columns: [{ name: 'A', type: 'int32' }] }),
    ).toThrow(PluginDefinitionError);
    expect(() =>
      definePlugin({
        ...base,
        name: 'dup',
        columns: [
          { name: 'A', type: 'int32' },
          { name: 'A', type: 'utf8' },
        ],
      }),
    ).toThrow(/duplicate column/);
  });

  it('resolves raw option values', () => {
    expect(resolveOptions(demo, {})).toEqual({ pid: [], all: false, name: undefined, depth: 3 });
    expect(resolveOptions(demo, { pid: ['1', 2], all: true, name: 'x', depth: '5' })).toEqual({
      pid: [1, 2],
      all: true,
      name: 'x',
      depth: 5,
    });
    expect(resolveOptions(demo, { pid: 7 }).pid).toEqual([7]);
    expect(() => resolveOptions(demo, { pid: ['abc'] })).toThrow(PluginOptionError);
    expect(() => resolveOptions(demo, { depth: [1, 2] })).toThrow(PluginOptionError);
    expect(() => resolveOptions(demo, { bogus: 1 })).toThrow(/unknown option --bogus/);
  });

  it('registry', () => {
    expect(builtinPlugins.map((p) => p.name)).toContain('pslist');
    expect(findPlugin('PSLIST')).toBe(pslist);
    expect(findPlugin('nope')).toBeUndefined();
  });
});

/** A fake guest of `processes` processes whose executor records each batch's size. */
function countingGuest(processes: number): { executor: SyscallExecutor; sizes: number[] } {
  const g = fakeProcGuest(processes);
  const sizes: number[] = [];
  return {
    sizes,
    executor: {
      run: (calls) => {
        sizes.push(calls.length);
        return g.run(calls);
      },
    },
  };
}

describe('pslist', () => {
  it('reads 1000 processes a batch of files at a time, pipelined, rows in pid order', async () => {
    const { executor, sizes } = countingGuest(1000);
    const { table, runs } = await runPlugin(pslist, { executor });
    const per = tasksPerBatch(DEFAULT_BATCH_LIMITS, ['stat', 'status', 'cgroup'], true);
    // stat, status and cgroup come whole in one read: openat, read, close each; and the
    // readlinkat of ns/pid.
    expect(per).toBe(Math.floor((DEFAULT_BATCH_LIMITS.maxCalls - 4) / 10));
    // The last batches: /proc/stat with the first slice, then a slice at a time, each at
    // most half a batch (the next one is rung beside it).
    const bounds = sliceBounds(1000, per);
    const want = bounds.slice(1).map((end, k) => 10 * (end - bounds[k]) + (k === 0 ? 4 : 0));
    expect(bounds).toHaveLength(12);
    expect(sizes.slice(-want.length)).toEqual(want);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(DEFAULT_BATCH_LIMITS.maxCalls / 2 + 4);
    expect(runs).toBe(sizes.length);
    expect(table.errors).toEqual([]);
    const pid = table.columns.findIndex((c) => c.name === 'PID');
    const comm = table.columns.findIndex((c) => c.name === 'COMM');
    expect(table.rows.map((r) => r[pid])).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(table.rows.every((r) => r[comm] === `proc${r[pid]}`)).toBe(true);
  });

  it('cuts whole batches when the executor does not chain (the trap transport: a VM stop each)', async () => {
    const { executor, sizes } = countingGuest(1000);
    const { table, runs } = await runPlugin(pslist, { executor, chains: false });
    const per = tasksPerBatch(DEFAULT_BATCH_LIMITS, ['stat', 'status', 'cgroup'], true);
    const bounds = sliceBounds(1000, per, false);
    // 1000 processes in 6 slices of at most a batch (11 of at most half a batch when chained).
    expect(bounds).toHaveLength(7);
    expect(Math.max(...bounds.slice(1).map((end, k) => end - bounds[k]))).toBeGreaterThan(per / 2);
    const want = bounds.slice(1).map((end, k) => 10 * (end - bounds[k]) + (k === 0 ? 4 : 0));
    expect(sizes.slice(-want.length)).toEqual(want);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(DEFAULT_BATCH_LIMITS.maxCalls);
    expect(runs).toBe(sizes.length);
    expect(table.rows).toHaveLength(1000);
    expect(sliceBounds(567, 204, false)).toEqual([0, 95, 284, 473, 567]);
  });

  it('cuts a short list into slices, the first and last half as big, so building and parsing overlap the reads', async () => {
    const { executor, sizes } = countingGuest(117);
    const { table, runs } = await runPlugin(pslist, { executor });
    // The listing, then four slices of 20, 39, 39 and 19 processes (10 calls each; the
    // first also reads /proc/stat): the first and the last half as big as the others.
    expect(PIPELINE_SLICES).toBe(4);
    expect(sizes.slice(1)).toEqual([204, 390, 390, 190]);
    expect(runs).toBe(5);
    expect(table.errors).toEqual([]);
    const pid = table.columns.findIndex((c) => c.name === 'PID');
    expect(table.rows.map((r) => r[pid])).toEqual(Array.from({ length: 117 }, (_, i) => i + 1));
    // Short lists stay whole, two slices are even; slices never exceed half a batch (the
    // next one is rung beside it), and longer lists are cut finer rather than into
    // batch-sized slices.
    expect(sliceBounds(0, 200)).toEqual([0, 0]);
    expect(sliceBounds(1, 200)).toEqual([0, 1]);
    expect(sliceBounds(MIN_SLICE_TASKS * 2 - 1, 200)).toEqual([0, MIN_SLICE_TASKS * 2 - 1]);
    expect(sliceBounds(MIN_SLICE_TASKS * 2, 200)).toEqual([0, MIN_SLICE_TASKS, MIN_SLICE_TASKS * 2]);
    expect(sliceBounds(567, 204)).toEqual([0, 47, 142, 236, 331, 425, 520, 567]);
    expect(sliceBounds(1000, 200)).toEqual([0, 50, 150, 250, 350, 450, 550, 650, 750, 850, 950, 1000]);
    expect(sliceBounds(117, 10)).toHaveLength(26);
    expect(sliceBounds(100, 40)).toEqual([0, 10, 30, 50, 70, 90, 100]);
    expect(sliceBounds(60, 20)).toEqual([0, 5, 15, 25, 35, 45, 55, 60]);
    for (const [n, per] of [
      [117, 204],
      [300, 100],
      [61, 7],
      [2068, 204],
      [117, 10],
      [5, 1],
    ]) {
      const b = sliceBounds(n, per);
      expect(b[0]).toBe(0);
      expect(b[b.length - 1]).toBe(n);
      for (let i = 1; i < b.length; i++) expect(b[i] - b[i - 1]).toBeGreaterThan(0);
      for (let i = 1; i < b.length; i++) expect(b[i] - b[i - 1]).toBeLessThanOrEqual(Math.max(1, per >> 1));
    }
  });

  it("reads the last listing's first slice right behind the new listing, keeping only listed processes", async () => {
    const g = fakeProcGuest(117);
    g.remove('/proc/10');
    const hints: ProcHints = {};
    await runPlugin(pslist, { executor: g, procHints: hints });
    expect(hints.pids).toEqual(Array.from({ length: 117 }, (_, i) => i + 1).filter((p) => p !== 10));
    // Meanwhile pid 5 exits, pid 10 is reused and pid 300 starts; and pid 7 is hidden from
    // the listing (its files still open): pslist shows what the listing shows, read ahead
    // or not (psxview compares it with other views).
    g.remove('/proc/5');
    g.hide.listing.set('/proc', new Set(['7']));
    addFakeProcess(g, 10, 'again');
    addFakeProcess(g, 300, 'new');
    const sizes: number[] = [];
    let listed = false;
    let aheadOfListing = false;
    const run = g.run.bind(g);
    const { table, runs } = await runPlugin(pslist, {
      procHints: hints,
      executor: {
        run: (calls: Parameters<typeof run>[0]) => {
          sizes.push(calls.length);
          const answer = run(calls);
          if (sizes.length === 2) aheadOfListing = !listed;
          if (sizes.length > 1) return answer;
          // The listing's answer comes late: the slice read ahead is asked for meanwhile.
          return new Promise<Awaited<typeof answer>>((resolve) =>
            setTimeout(() => {
              listed = true;
              resolve(answer);
            }, 20),
          );
        },
      },
    });
    expect(aheadOfListing).toBe(true);
    // Read ahead: the first slice of the last listing's 116 (19: 1..9, 11..20) with
    // /proc/stat; then the others the new listing has (21..117, 10 and 300) in slices.
    expect(sliceBounds(116, 204)[1]).toBe(19);
    expect(sizes[1]).toBe(19 * 10 + 4);
    expect(runs).toBe(sizes.length);
    expect(table.errors).toEqual([]);
    const pid = table.columns.findIndex((c) => c.name === 'PID');
    const comm = table.columns.findIndex((c) => c.name === 'COMM');
    const truth = [...Array.from({ length: 117 }, (_, i) => i + 1).filter((p) => p !== 5 && p !== 7), 300];
    expect(table.rows.map((r) => r[pid])).toEqual(truth);
    expect(table.rows.find((r) => r[pid] === 10)?.[comm]).toBe('again');
    expect(hints.pids).toEqual(truth);
    // A hint that is not an ascending list of pids is not used.
    hints.pids = [3, 2, 1];
    const plain: number[] = [];
    await runPlugin(pslist, {
      procHints: hints,
      executor: { run: (calls: Parameters<typeof run>[0]) => (plain.push(calls.length), run(calls)) },
    });
    const cuts = sliceBounds(truth.length, 204);
    expect(plain.slice(1)).toEqual(cuts.slice(1).map((end, k) => 10 * (end - cuts[k]) + (k === 0 ? 4 : 0)));
  });

  it('a slice that fails while the one before is parsed fails the run, handled', async () => {
    const g = fakeProcGuest(1000);
    // The read budget runs out in the third slice of files.
    const r = await runPlugin(pslist, { executor: g, runLimits: { maxReadBytes: 5 << 19 } }).catch(
      (e: Error) => e,
    );
    expect(r).toBeInstanceOf(Error);
    expect((r as Error).message).toMatch(/read limit/);
  });

  it('lists 300 processes in at most 5 guest entries', async () => {
    const g = fakeProcGuest(300);
    const { table, runs } = await runPlugin(pslist, { executor: g });
    // listing, then the namespace links with the files (two slices of ~200 processes)
    expect(runs).toBeLessThanOrEqual(5);
    expect(g.runCount).toBe(runs);
    expect(table.rows).toHaveLength(300);
    expect(table.errors).toEqual([]);
    expect(table.columns.map((c) => c.name)).toEqual([
      'PID',
      'TID',
      'PPID',
      'COMM',
      'UID',
      'GID',
      'EUID',
      'EGID',
      'CREATION TIME',
      'STATE',
      'THREADS',
      'PID_NS_ID',
      'NSPID',
      'CGROUP',
      'CONTAINER',
    ]);
    const r = table.rows[41];
    expect([r[col('PID_NS_ID')], r[col('NSPID')], r[col('CGROUP')], r[col('CONTAINER')]]).toEqual([
      4026531836n,
      '42',
      '/',
      null,
    ]);
    expect(r[col('PID')]).toBe(42);
    expect(r[col('TID')]).toBe(42);
    expect(r[col('PPID')]).toBe(1);
    expect(r[col('COMM')]).toBe('proc42');
    expect([r[col('UID')], r[col('EUID')], r[col('GID')], r[col('EGID')]]).toEqual([1000, 1001, 100, 101]);
    expect(r[col('STATE')]).toBe('S');
    expect(r[col('THREADS')]).toBe(1);
    // btime 1700000000 s + starttime (1000 + 42) ticks / 100.
    expect((r[col('CREATION TIME')] as Date).getTime()).toBe(1700000000_000 + 10_420);
    expect(g.openFds).toBe(0);
  });

  it('skips processes that vanish between listing and reading', async () => {
    const g = fakeProcGuest(10);
    g.beforeRun = (i) => {
      if (i === 1) {
        g.remove('/proc/3');
        g.remove('/proc/7/status'); // exited between the two reads
      }
    };
    const { table } = await runPlugin(pslist, { executor: g });
    expect(table.rows.map((r) => r[col('PID')])).toEqual([1, 2, 4, 5, 6, 8, 9, 10]);
    expect(table.errors).toEqual([]);
  });

  it('keeps a row with UNREADABLE cells for garbage content, and reports it', async () => {
    const g = fakeProcGuest(5);
    g.addFile('/proc/2/stat', 'garbage without parens');
    g.addFile('/proc/4/status', 'Name:\tx\nUid:\tnot numbers\n');
    g.addFile('/proc/5/status', 'x', { openErrno: 13 });
    const { table } = await runPlugin(pslist, { executor: g });
    expect(table.rows).toHaveLength(5);
    const row2 = table.rows[1];
    expect(row2[col('PID')]).toBe(2);
    expect(row2[col('COMM')]).toBeInstanceOf(AbsentValue);
    expect((row2[col('COMM')] as AbsentValue).kind).toBe(UNREADABLE.kind);
    expect(row2[col('CREATION TIME')]).toBeInstanceOf(AbsentValue);
    expect(row2[col('UID')]).toBe(1000);
    const row4 = table.rows[3];
    expect(row4[col('COMM')]).toBe('proc4');
    expect(row4[col('UID')]).toBeInstanceOf(AbsentValue);
    expect(table.rows[4][col('EGID')]).toBeInstanceOf(AbsentValue);
    expect(table.errors).toHaveLength(3);
    expect(table.errors[0]).toMatch(/^pid 2: \/proc\/2\/stat: /);
    expect(table.errors[1]).toMatch(/^pid 4: \/proc\/4\/status: Uid/);
    expect(table.errors[2]).toBe('pid 5: openat /proc/5/status: EACCES');
  });

  it('reports a broken /proc/stat once and leaves creation times unreadable', async () => {
    const g = fakeProcGuest(3);
    g.addFile('/proc/stat', 'cpu 1 2 3\n');
    const { table } = await runPlugin(pslist, { executor: g });
    expect(table.rows).toHaveLength(3);
    expect(table.rows.every((r) => r[col('CREATION TIME')] instanceof AbsentValue)).toBe(true);
    expect(table.errors).toEqual(['creation times unavailable: /proc/stat: no btime line']);
  });

  it('filters by --pid without listing /proc', async () => {
    const g = fakeProcGuest(50);
    const { table, runs } = await runPlugin(pslist, { executor: g, options: { pid: [7, 3, 999] } });
    expect(table.rows.map((r) => r[col('PID')])).toEqual([3, 7]);
    // the namespace links and the files in one batch
    expect(runs).toBe(1);
  });

  it('lists threads with --threads in a constant number of entries', async () => {
    const g = fakeProcGuest(200);
    addFakeProcess(g, 500, 'multi', [500, 501, 502]);
    g.addFile('/proc/500/task/502/stat', fakeStat(502, 'worker', { threads: 3 }));
    const { table, runs } = await runPlugin(pslist, { executor: g, options: { threads: true } });
    expect(runs).toBeLessThanOrEqual(7);
    expect(table.rows).toHaveLength(203);
    const multi = table.rows.filter((r) => r[col('PID')] === 500);
    expect(multi.map((r) => r[col('TID')])).toEqual([500, 501, 502]);
    expect(multi[2][col('COMM')]).toBe('worker');
    expect(multi[0][col('THREADS')]).toBe(3);
  });
});
