/**
 * The plugins against a real booted lab guest, through the real shadow engine (one
 * attach for all of them), compared with what the guest's own shell reports.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import { isAbsent, type RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { banner } from '../../src/plugins/banner.js';
import { envars } from '../../src/plugins/envars.js';
import { lsmod } from '../../src/plugins/lsmod.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pstree } from '../../src/plugins/pstree.js';
import { sysinfo } from '../../src/plugins/sysinfo.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';

const NAME = 't-plugins';

/** Rows of a table as objects keyed by column name. */
function records(t: ResultTable): Record<string, RowValue>[] {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

describe('plugins on the lab guest', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const tables: Record<string, ResultTable> = {};
  const truth = {
    pids: {} as Record<string, number>,
    modules: '',
    cmdline: '',
    release: '',
    memTotalKiB: 0,
    init: '',
  };

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    const con = await GuestConsole.connect(guest.serialSocket);
    try {
      truth.pids = parseLabPids((await con.run(`cat ${LAB_WORKLOAD.pidsFile}`)).output);
      truth.modules = (await con.run('cat /proc/modules')).output;
      truth.cmdline = (
        await con.run(`cat /proc/${truth.pids['worker-1']}/cmdline | tr '\\0' ' '`)
      ).output.trimEnd();
      truth.release = (await con.run('uname -r')).output.trim();
      truth.memTotalKiB = Number(
        /^MemTotal:\s+(\d+) kB/m.exec((await con.run('cat /proc/meminfo')).output)![1],
      );
    } finally {
      con.close();
    }
    const plugins = [pstree, psaux, envars, lsmod, mountinfo, banner, sysinfo];
    run = await runPluginsOnGuest(
      guest,
      plugins.map((plugin) => ({ plugin, options: {} })),
    );
    for (const t of run.tables) tables[t.plugin] = t;
    console.log('plugin ms on the lab guest:', run.pluginMs);
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  it('reports no problems', () => {
    for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
  });

  it('psaux shows a worker argv as the guest does', () => {
    const pid = truth.pids['worker-1'];
    const row = records(tables.psaux).find((r) => r.PID === pid)!;
    expect(row).toBeDefined();
    expect(row.ARGS).toBe(truth.cmdline);
    expect(row.ARGS).toBe(`/usr/sbin/labd ${LAB_WORKLOAD.workers[0].args.join(' ')}`);
    expect(row.COMM).toBe('labd');
    // Kernel threads: empty cmdline, shown as [comm].
    const kthreadd = records(tables.psaux).find((r) => r.PID === 2)!;
    expect(kthreadd.ARGS).toBe('[kthreadd]');
    expect(tables.psaux.errors).toEqual([]);
  });

  it('envars shows each worker its own LAB_SECRET', () => {
    const rows = records(tables.envars);
    LAB_WORKLOAD.workers.forEach((w) => {
      const pid = truth.pids[w.role];
      const mine = rows.filter((r) => r.PID === pid);
      expect(mine.find((r) => r.KEY === 'LAB_SECRET')?.VALUE).toBe(w.secret);
      expect(mine.find((r) => r.KEY === 'LAB_ROLE')?.VALUE).toBe(w.role);
    });
    // Kernel threads have no environment.
    expect(rows.some((r) => r.PID === 2)).toBe(false);
  });

  it('lsmod shows dummy with the size /proc/modules reports', () => {
    const line = truth.modules.split('\n').find((l) => l.startsWith('dummy '))!;
    expect(line).toBeDefined();
    const [, size, refcount, , state, offset] = line.split(' ');
    const row = records(tables.lsmod).find((r) => r.Name === 'dummy')!;
    expect(row.Size).toBe(Number(size));
    expect(row.Refcount).toBe(Number(refcount));
    expect(row.State).toBe(state);
    expect(records(tables.lsmod).map((r) => r.Name)).toContain('nls_utf8');
    expect(tables.lsmod.columns.slice(0, 3).map((c) => c.name)).toEqual(['Offset', 'Name', 'Size']);
    // The console shell and the shadow are both root (CAP_SYSLOG): the same address, or both hidden.
    if (BigInt(offset) === 0n) expect(isAbsent(row.Offset)).toBe(true);
    else expect(row.Offset).toBe(BigInt(offset));
  });

  it('mountinfo shows the evidence tmpfs', () => {
    const rows = records(tables.mountinfo);
    const ev = rows.find((r) => r.MOUNT_POINT === '/mnt/evidence')!;
    expect(ev).toBeDefined();
    expect(ev.FSTYPE).toBe('tmpfs');
    expect(ev.MOUNT_SRC).toBe('evidence');
    expect(String(ev.MOUNT_OPTIONS)).toContain('nosuid');
    expect(typeof ev.MNT_NS_ID).toBe('bigint');
    expect(ev.MNT_NS_ID as bigint).toBeGreaterThan(0n);
    expect(rows.find((r) => r.MOUNT_POINT === '/proc')?.FSTYPE).toBe('proc');
    expect(tables.mountinfo.errors).toEqual([]);
  });

  it('pstree puts a worker one level below its parent, init at the root', () => {
    const t = tables.pstree;
    expect(t.depths).toHaveLength(t.rows.length);
    const rows = records(t);
    const at = (pid: number) => rows.findIndex((r) => r.PID === pid);
    expect(t.depths![at(1)]).toBe(0);
    const w = at(truth.pids['worker-2']);
    const parent = at(rows[w].PPID as number);
    expect(parent).toBeGreaterThanOrEqual(0);
    expect(parent).toBeLessThan(w);
    expect(t.depths![w]).toBe(t.depths![parent] + 1);
  });

  it('banner release is uname -r of the guest', () => {
    const [row] = records(tables.banner);
    expect(row.RELEASE).toBe(truth.release);
    expect(row.NODENAME).toBe(LAB_WORKLOAD.hostname);
    expect(row.SYSNAME).toBe('Linux');
    expect(String(row.BANNER)).toContain(`Linux version ${truth.release}`);
  });

  it('sysinfo total RAM matches MemTotal', () => {
    const [row] = records(tables.sysinfo);
    const total = Number(row['TOTAL RAM'] as bigint);
    const expected = truth.memTotalKiB * 1024;
    expect(Math.abs(total - expected) / expected).toBeLessThan(0.01);
    expect(row.PROCESSES as number).toBeGreaterThan(10);
    expect(row.UPTIME as number).toBeGreaterThan(0);
  });
});
