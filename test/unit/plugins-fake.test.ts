import { describe, expect, it } from 'vitest';
import type { ResultTable } from '../../src/output/table.js';
import { validateTable } from '../../src/output/table.js';
import { banner } from '../../src/plugins/banner.js';
import { envars } from '../../src/plugins/envars.js';
import { PluginRegistry } from '../../src/packs/registry.js';
import { builtinPlugins } from '../../src/plugins/index.js';

/** A built-in by name, case-insensitive: the CLI's registry with no pack loaded. */
const findPlugin = (name: string) => new PluginRegistry(builtinPlugins).find(name);
import { DEFAULT_BATCH_LIMITS, processForest, sliceBounds, tasksPerBatch } from '../../src/sdk/index.js';

/** Guest entries of a process plugin: the listing, then one per slice (sdk/processes.ts). */
const entriesFor = (tasks: number, names: string[], namespaces: boolean): number =>
  1 + sliceBounds(tasks, tasksPerBatch(DEFAULT_BATCH_LIMITS, names, namespaces)).length - 1;
import { lsmod } from '../../src/plugins/lsmod.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pstree } from '../../src/plugins/pstree.js';
import { sysinfo } from '../../src/plugins/sysinfo.js';
import { isAbsent } from '../../src/output/columns.js';
import { runPlugin, type RowValue } from '../../src/sdk/index.js';
import { addFakeProcess, fakeProcGuest, fakeStat, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

/** n processes whose parent is pid ⌊pid/2⌋ (1 is the root), with an environment each. */
function treeGuest(n: number): FakeGuest {
  const g = fakeProcGuest(n);
  for (let pid = 1; pid <= n; pid++) {
    g.addFile(
      `/proc/${pid}/stat`,
      fakeStat(pid, `proc${pid}`, { ppid: pid === 1 ? 0 : Math.floor(pid / 2) }),
    );
    g.addFile(`/proc/${pid}/environ`, `HOME=/root\0PID=${pid}\0EMPTY=\0NOEQ\0A=b=c\0`);
  }
  return g;
}

describe('registry', () => {
  it('has the new plugins', () => {
    expect(builtinPlugins.map((p) => p.name)).toEqual([
      'pslist',
      'pstree',
      'psaux',
      'envars',
      'lsmod',
      'mountinfo',
      'banner',
      'sysinfo',
      'sockstat',
      'lsof',
      'maps',
      'kmsg',
      'ifconfig',
      'psxview',
      'sockxview',
      'capabilities',
      'ptrace',
      'pscallstack',
      'kthreads',
      'boottime',
      'kallsyms',
      'iomem',
      'ebpf',
      'netfilter',
      'bash',
      'elfs',
      'library_list',
      'malfind',
      'vmaregexscan',
      'vmayarascan',
      'modxview',
      'check_syscall',
      'check_idt',
      'tracing',
    ]);
    expect(findPlugin('PsAux')).toBe(psaux);
  });
});

describe('psaux', () => {
  it('joins argv, shows kernel threads as [comm], in constant guest entries', async () => {
    const g = treeGuest(300);
    g.addFile('/proc/2/cmdline', '');
    g.addFile('/proc/3/cmdline', 'no-trailing-nul\0with space');
    const { table, runs } = await runPlugin(psaux, { executor: g });
    expect(runs).toBe(entriesFor(300, ['stat', 'status', 'cgroup', 'cmdline'], true));
    expect(runs).toBeLessThanOrEqual(8);
    const rows = records(table);
    expect(rows).toHaveLength(300);
    expect(rows[0]).toEqual({
      PID: 1,
      PPID: 0,
      COMM: 'proc1',
      ARGS: 'proc1 --flag',
      PID_NS_ID: 4026531836n,
      NSPID: '1',
      CGROUP: '/',
      CONTAINER: null,
    });
    expect(rows[1].ARGS).toBe('[proc2]');
    expect(rows[2].ARGS).toBe('no-trailing-nul with space');
    expect(table.errors).toEqual([]);
  });

  it('filters by --pid, skips vanished processes, marks unreadable cmdlines', async () => {
    const g = treeGuest(10);
    g.addFile('/proc/4/cmdline', '', { openErrno: 13 });
    const { table, runs } = await runPlugin(psaux, { executor: g, options: { pid: [4, 2, 999] } });
    // the namespace links and the files in one batch
    expect(runs).toBe(1);
    const rows = records(table);
    expect(rows.map((r) => r.PID)).toEqual([2, 4]);
    expect(isAbsent(rows[1].ARGS)).toBe(true);
    expect(table.errors).toEqual([expect.stringContaining('pid 4')]);
  });
});

describe('envars', () => {
  it('one row per variable, value after the first =', async () => {
    const g = treeGuest(200);
    g.addFile('/proc/2/environ', '');
    const { table, runs } = await runPlugin(envars, { executor: g });
    expect(runs).toBe(entriesFor(200, ['stat', 'environ'], false));
    expect(runs).toBeLessThanOrEqual(8);
    const rows = records(table);
    expect(rows.filter((r) => r.PID === 2)).toEqual([]);
    expect(rows.filter((r) => r.PID === 7)).toEqual([
      { PID: 7, PPID: 3, COMM: 'proc7', KEY: 'HOME', VALUE: '/root' },
      { PID: 7, PPID: 3, COMM: 'proc7', KEY: 'PID', VALUE: '7' },
      { PID: 7, PPID: 3, COMM: 'proc7', KEY: 'EMPTY', VALUE: '' },
      { PID: 7, PPID: 3, COMM: 'proc7', KEY: 'NOEQ', VALUE: '' },
      { PID: 7, PPID: 3, COMM: 'proc7', KEY: 'A', VALUE: 'b=c' },
    ]);
  });

  it('--pid, and a garbage stat gives UNREADABLE cells, not an exception', async () => {
    const g = treeGuest(5);
    g.addFile('/proc/3/stat', 'garbage');
    const { table } = await runPlugin(envars, { executor: g, options: { pid: [3] } });
    const rows = records(table);
    expect(rows).toHaveLength(5);
    expect(isAbsent(rows[0].PPID)).toBe(true);
    expect(rows[0].KEY).toBe('HOME');
    expect(table.errors).toHaveLength(1);
  });
});

describe('pstree', () => {
  it('pre-order with depths, children by PID, in constant guest entries', async () => {
    const g = treeGuest(7);
    const { table, runs } = await runPlugin(pstree, { executor: g });
    expect(runs).toBeLessThanOrEqual(3);
    expect(table.columns.map((c) => c.name)).toEqual(pstree.columns.map((c) => c.name));
    expect(records(table).map((r) => r.PID)).toEqual([1, 2, 4, 5, 3, 6, 7]);
    expect(table.depths).toEqual([0, 1, 2, 2, 1, 2, 2]);
  });

  it('orphans are roots; --pid keeps the ancestors', async () => {
    const g = treeGuest(7);
    g.addFile('/proc/6/stat', fakeStat(6, 'orphan', { ppid: 99 }));
    let { table } = await runPlugin(pstree, { executor: g });
    expect(records(table).map((r) => r.PID)).toEqual([1, 2, 4, 5, 3, 7, 6]);
    expect(table.depths).toEqual([0, 1, 2, 2, 1, 2, 0]);
    ({ table } = await runPlugin(pstree, { executor: g, options: { pid: [5] } }));
    expect(records(table).map((r) => r.PID)).toEqual([1, 2, 5]);
    expect(table.depths).toEqual([0, 1, 2]);
  });

  it('survives a parent cycle (a lying guest) and big trees', () => {
    const rec = (pid: number, ppid?: number) => ({ task: { pid, tid: pid }, ppid });
    const cyc = processForest([rec(1, 2), rec(2, 1), rec(3, 3), rec(4)]);
    expect(cyc.map((n) => [n.record.task.pid, n.depth])).toEqual([
      [3, 0],
      [4, 0],
      [1, 0],
      [2, 1],
    ]);
    // A 10000-deep chain: no recursion.
    const chain = Array.from({ length: 10000 }, (_, i) => rec(i + 1, i));
    expect(processForest(chain).at(-1)!.depth).toBe(9999);
  });

  it('pslist still works for a process added with threads', async () => {
    const g = treeGuest(3);
    addFakeProcess(g, 10, 'threaded', [10, 11]);
    const { table } = await runPlugin(pstree, { executor: g });
    expect(records(table).map((r) => r.PID)).toEqual([1, 2, 3, 10]);
  });
});

describe('lsmod', () => {
  it('hides zero offsets as N/A and reports bad lines', async () => {
    const g = fakeProcGuest(1);
    g.addFile(
      '/proc/modules',
      'dummy 16384 0 - Live 0x0000000000000000 (O)\nlib 8192 2 a,b, Live 0xffffffffc0000000\n\x00junk\nnoref 4096 - - Live 0x0\n',
    );
    const { table, runs } = await runPlugin(lsmod, { executor: g });
    expect(runs).toBe(1);
    const rows = records(table);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatchObject({ Name: 'dummy', Size: 16384, Refcount: 0, State: 'Live', Users: '' });
    expect(isAbsent(rows[0].Offset)).toBe(true);
    expect(rows[1]).toMatchObject({ Offset: 0xffffffffc0000000n, Users: 'a,b', Refcount: 2 });
    expect(isAbsent(rows[2].Refcount)).toBe(true);
    expect(table.errors).toEqual([expect.stringContaining('/proc/modules:3')]);
  });
});

describe('mountinfo', () => {
  const MI =
    '1 0 0:2 / / rw - rootfs none rw\n22 1 0:20 / /mnt/ev\\040x rw,nosuid shared:3 - tmpfs evidence rw,size=16384k\nbad\n';

  it("reads init's mounts (/proc/1) by default with the namespace id", async () => {
    const g = fakeProcGuest(2);
    g.addFile('/proc/1/mountinfo', MI);
    g.addLink('/proc/1/ns/mnt', 'mnt:[4026531840]');
    const { table, runs } = await runPlugin(mountinfo, { executor: g });
    // listing, namespace links, mountinfo
    expect(runs).toBe(3);
    const rows = records(table);
    expect(rows).toHaveLength(2);
    expect(rows[1]).toEqual({
      MNT_NS_ID: 4026531840n,
      'MOUNT ID': 22,
      PARENT_ID: 1,
      'MAJOR:MINOR': '0:20',
      ROOT: '/',
      MOUNT_POINT: '/mnt/ev x',
      MOUNT_OPTIONS: 'rw,nosuid',
      FIELDS: 'shared:3',
      FSTYPE: 'tmpfs',
      MOUNT_SRC: 'evidence',
      SB_OPTIONS: 'rw,size=16384k',
    });
    expect(table.errors).toEqual([expect.stringContaining(':3: not a mountinfo line')]);
  });

  it('--pid: one listing per namespace, bad links UNREADABLE', async () => {
    const g = fakeProcGuest(3);
    for (const pid of [1, 2, 3]) g.addFile(`/proc/${pid}/mountinfo`, MI);
    g.addLink('/proc/1/ns/mnt', 'mnt:[1]');
    g.addLink('/proc/2/ns/mnt', 'mnt:[1]');
    g.addLink('/proc/3/ns/mnt', 'net:[5]');
    const { table, runs } = await runPlugin(mountinfo, { executor: g, options: { pid: [1, 2, 3, 77] } });
    expect(runs).toBe(2);
    const ns = records(table).map((r) => r.MNT_NS_ID);
    expect(ns.slice(0, 2)).toEqual([1n, 1n]);
    expect(ns).toHaveLength(4);
    expect(isAbsent(ns[2])).toBe(true);
  });
});

describe('banner and sysinfo', () => {
  it('banner: uname fields and /proc/version', async () => {
    const g = fakeProcGuest(1);
    g.addFile('/proc/version', 'Linux version 6.1.0-fake (gcc) #1 SMP\n');
    const { table } = await runPlugin(banner, { executor: g });
    expect(records(table)).toEqual([
      {
        SYSNAME: 'Linux',
        NODENAME: 'fakeguest',
        RELEASE: '6.1.0-fake',
        VERSION: '#1 SMP',
        MACHINE: 'x86_64',
        DOMAINNAME: '(none)',
        BANNER: 'Linux version 6.1.0-fake (gcc) #1 SMP',
      },
    ]);
  });

  it('banner: a missing /proc/version is UNREADABLE, not an exception', async () => {
    const { table } = await runPlugin(banner, { executor: fakeProcGuest(1) });
    expect(isAbsent(records(table)[0].BANNER)).toBe(true);
    expect(table.errors).toHaveLength(1);
  });

  it('sysinfo: one row, memory in bytes', async () => {
    const { table, runs } = await runPlugin(sysinfo, { executor: fakeProcGuest(1) });
    expect(runs).toBe(1);
    expect(records(table)[0]).toMatchObject({
      UPTIME: 1234,
      'LOAD 1': 1,
      'TOTAL RAM': 4096000n,
      PROCESSES: 42,
    });
  });
});
