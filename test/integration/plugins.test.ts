/**
 * The plugins against a real booted lab guest, through the real shadow engine (one
 * attach for all of them), compared with what the guest's own shell reports.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import { guestProcs, unseenRows, type GuestProc } from './helpers/guest-shell.js';
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
import { records } from '../helpers/records.js';

const NAME = 't-plugins';

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
    /** /proc/PID/environ of each workload process, one KEY=VALUE a line. */
    environ: {} as Record<number, string[]>,
    /** /proc/1/mountinfo: init's mounts, which mountinfo without --pid shows. */
    mountinfo: '',
    /** The guest's process list just before and just after the plugins ran. */
    procsBefore: new Map<number, GuestProc>(),
    procsAfter: new Map<number, GuestProc>(),
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
      for (const pid of Object.values(truth.pids)) {
        const env = await con.run(`tr '\\0' '\\n' < /proc/${pid}/environ`);
        expect(env.status, `environ of ${pid}: ${env.output}`).toBe(0);
        truth.environ[pid] = env.output.split('\n').filter(Boolean);
      }
      truth.mountinfo = (await con.run('cat /proc/1/mountinfo')).output;
    } finally {
      con.close();
    }
    truth.procsBefore = await guestProcs(guest);
    const plugins = [pstree, psaux, envars, lsmod, mountinfo, banner, sysinfo];
    run = await runPluginsOnGuest(
      guest,
      plugins.map((plugin) => ({ plugin, options: {} })),
    );
    for (const t of run.tables) tables[t.plugin] = t;
    truth.procsAfter = await guestProcs(guest);
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

  it('envars shows each workload process the environment its /proc/PID/environ holds', () => {
    const rows = records(tables.envars);
    expect(Object.keys(truth.environ).length).toBeGreaterThan(5);
    for (const [pid, env] of Object.entries(truth.environ)) {
      const mine = rows
        .filter((r) => r.PID === Number(pid))
        .map((r) => `${String(r.KEY)}=${String(r.VALUE)}`);
      expect(mine.sort(), `environment of ${pid}`).toEqual([...env].sort());
    }
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

  it("mountinfo shows init's mounts exactly as /proc/1/mountinfo in the guest", () => {
    // Every mount namespace, init's first: its rows are init's mounts.
    const all = records(tables.mountinfo);
    const rows = all.filter((r) => r.MNT_NS_ID === all[0]?.MNT_NS_ID);
    // proc_pid_mountinfo(): ID PARENT MAJ:MIN ROOT POINT OPTIONS [FIELDS...] - TYPE SOURCE SB_OPTIONS
    const guestLines = truth.mountinfo
      .trim()
      .split('\n')
      .map((l) => l.trim().replace(/ +/g, ' '));
    const asLine = (r: Record<string, RowValue>) =>
      [
        r['MOUNT ID'],
        r.PARENT_ID,
        r['MAJOR:MINOR'],
        r.ROOT,
        r.MOUNT_POINT,
        r.MOUNT_OPTIONS,
        ...(r.FIELDS ? [r.FIELDS] : []),
        '-',
        r.FSTYPE,
        r.MOUNT_SRC,
        r.SB_OPTIONS,
      ]
        .map(String)
        .join(' ');
    expect(guestLines.length).toBeGreaterThan(5);
    expect(rows.map(asLine).sort()).toEqual([...guestLines].sort());
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

  it("pstree gives every process the guest's PPID, one level below its parent, init at the root", () => {
    const t = tables.pstree;
    expect(t.depths).toHaveLength(t.rows.length);
    const rows = records(t);
    // Every process the guest showed before and after the run is a row with the PPID of
    // the guest's /proc/PID/stat; every row is a process the guest showed (or the shadow).
    const byPid = new Map(rows.map((r) => [r.PID as number, r]));
    let compared = 0;
    for (const p of truth.procsAfter.values()) {
      if (truth.procsBefore.get(p.pid)?.comm !== p.comm) continue;
      const row = byPid.get(p.pid);
      expect(row, `pid ${p.pid} (${p.comm}) missing from pstree`).toBeDefined();
      expect(row!.PPID, `PPID of ${p.pid}`).toBe(p.ppid);
      compared++;
    }
    expect(compared).toBeGreaterThan(40);
    // vmi leaves its own shadow out of the evidence: no row the guest did not show.
    const extra = unseenRows(rows, truth.procsBefore, truth.procsAfter);
    expect(extra.map((r) => String(r.COMM))).toEqual([]);
    expect(t.metadata).toMatchObject({
      'shadow.pid': String(run.session.shadowPid),
      'shadow.rows': 'excluded (1)',
    });
    // The tree is the PPID relation: a row with a parent in the table sits right under it.
    rows.forEach((r, i) => {
      const parent = rows.findIndex((q) => q.PID === r.PPID);
      if (parent < 0) expect(t.depths![i], `pid ${String(r.PID)} has no parent row`).toBe(0);
      else {
        expect(parent, `parent of ${String(r.PID)} listed after it`).toBeLessThan(i);
        expect(t.depths![i], `depth of ${String(r.PID)}`).toBe(t.depths![parent] + 1);
      }
    });
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
