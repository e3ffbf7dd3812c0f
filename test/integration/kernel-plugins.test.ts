/**
 * The kernel-facing plugins of issue 17 on one booted lab guest, each checked against the
 * guest's own console: Cap* and TracerPid lines of /proc/PID/status (the labkern caps,
 * sleep and trace helpers), /proc/PID/stack of the tracee and of kernel threads,
 * /proc/kallsyms as root, /proc/iomem, /proc/stat btime, /proc/PID/fdinfo of the bpf
 * helper's program and map, and the nf_tables ruleset and iptables tables the lab set at
 * boot (read back by `labkern nft-list` and /proc/net/ip_tables_names).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { boottime } from '../../src/plugins/boottime.js';
import { capabilities } from '../../src/plugins/capabilities.js';
import { ebpf } from '../../src/plugins/ebpf.js';
import { iomem } from '../../src/plugins/iomem.js';
import { kallsyms } from '../../src/plugins/kallsyms.js';
import { kthreads } from '../../src/plugins/kthreads.js';
import { netfilter } from '../../src/plugins/netfilter.js';
import { pscallstack } from '../../src/plugins/pscallstack.js';
import { ptrace } from '../../src/plugins/ptrace.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';
import { records } from '../helpers/records.js';
import { guestSh } from './helpers/guest-shell.js';

const NAME = 'p17a-kernel';
const K = LAB_WORKLOAD.kernel;

const field = (text: string, key: string): string | undefined =>
  new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();

describe('kernel-facing plugins on a lab guest', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const t: Record<string, Record<string, RowValue>[]> = {};
  const truth: Record<string, string> = {};
  let pids: Record<string, number> = {};

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    pids = parseLabPids(await guestSh(guest, `cat ${LAB_WORKLOAD.pidsFile}`));
    const sh = async (k: string, cmd: string) => (truth[k] = await guestSh(guest, cmd));
    await sh('caps', `grep Cap /proc/${pids[K.caps]}/status`);
    await sh('tracee', `cat /proc/${pids[K.tracee]}/status`);
    await sh('traceeStack', `cat /proc/${pids[K.tracee]}/stack`);
    await sh('kthreadd', 'cat /proc/2/task/2/children');
    await sh('kstack3', 'cat /proc/3/stack');
    await sh(
      'ksyms',
      "grep -E ' (T|t) (kthread|__do_sys_pause)$' /proc/kallsyms; grep vmilab /proc/kallsyms",
    );
    await sh('ksymsCount', 'wc -l < /proc/kallsyms');
    await sh('iomem', 'cat /proc/iomem');
    await sh('btime', 'grep btime /proc/stat');
    await sh('bpfLog', `cat /var/log/lab-${K.bpf}.log`);
    const fds = /map fd (\d+) prog fd (\d+)/.exec(truth.bpfLog);
    await sh('mapInfo', `cat /proc/${pids[K.bpf]}/fdinfo/${fds?.[1]}`);
    await sh('progInfo', `cat /proc/${pids[K.bpf]}/fdinfo/${fds?.[2]}`);
    await sh('nft', '/usr/sbin/labkern nft-list');
    await sh('iptNames', 'cat /proc/net/ip_tables_names');
    run = await runPluginsOnGuest(guest, [
      { plugin: capabilities, options: {} },
      { plugin: ptrace, options: {} },
      { plugin: pscallstack, options: { pid: [pids[K.tracee]] } },
      { plugin: kthreads, options: {} },
      { plugin: boottime, options: {} },
      { plugin: kallsyms, options: {} },
      { plugin: iomem, options: {} },
      { plugin: ebpf, options: {} },
      { plugin: netfilter, options: {} },
    ]);
    for (const tab of run.tables as ResultTable[]) t[tab.plugin] = records(tab);
    console.log('plugin ms on the lab guest:', run.pluginMs, 'batches:', run.session.batches);
  }, 400_000);

  afterAll(async () => {
    await labDown(NAME);
  });

  it('runs every plugin without problems', () => {
    expect(Object.keys(t)).toEqual([
      'capabilities',
      'ptrace',
      'pscallstack',
      'kthreads',
      'boottime',
      'kallsyms',
      'iomem',
      'ebpf',
      'netfilter',
    ]);
    for (const tab of run.tables) expect(tab.errors, tab.plugin).toEqual([]);
  });

  it('capabilities: the helper’s five sets, masks and names, as its status says', () => {
    const row = t.capabilities.find((r) => r.Pid === pids[K.caps])!;
    for (const key of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])
      expect(row[key], key).toBe(BigInt(`0x${field(truth.caps, key)}`));
    expect(row.cap_inheritable).toBe('CAP_NET_BIND_SERVICE, CAP_NET_RAW');
    expect(row.cap_ambient).toBe('CAP_NET_RAW');
    expect(String(row.cap_bounding)).not.toMatch(/CAP_SYS_MODULE/);
    expect(String(row.cap_effective)).not.toMatch(/CAP_SYS_BOOT/);
    expect(String(row.cap_permitted)).toMatch(/CAP_SYS_BOOT/);
  });

  it('ptrace: the tracee and its tracer, as TracerPid says', () => {
    const tracer = Number(field(truth.tracee, 'TracerPid'));
    expect(tracer).toBe(pids[K.tracer]);
    const tracee = t.ptrace.find((r) => r.TID === pids[K.tracee])!;
    expect(tracee['Tracer TID']).toBe(tracer);
    const tracerRow = t.ptrace.find((r) => r.TID === tracer)!;
    expect(tracerRow['Tracee TID']).toBe(pids[K.tracee]);
  });

  it('pscallstack: the tracee’s frames as /proc/PID/stack prints them, with kallsyms values', () => {
    const frames = truth.traceeStack
      .split('\n')
      .filter((l) => l.startsWith('[<'))
      .map((l) => l.replace(/^\[<[0-9a-f]+>\] /, ''));
    const rows = t.pscallstack.filter((r) => r.TID === pids[K.tracee]);
    expect(rows.map((r) => r.Frame)).toEqual(frames);
    const pause = /^(\S+) ([Tt]) __do_sys_pause$/m.exec(truth.ksyms);
    const first = rows.find((r) => r.Name === '__do_sys_pause')!;
    expect(first.Value).toBe(BigInt(`0x${pause![1]}`) + (first.Offset as bigint));
  });

  it('kthreads: kthreadd’s children, and the function of pid 3 from its stack', () => {
    const kids = truth.kthreadd.split(/\s+/).filter(Boolean).map(Number);
    const tids = new Set(t.kthreads.map((r) => r.TID));
    expect(kids.filter((k) => !tids.has(k))).toEqual([]);
    expect(tids.has(2)).toBe(true);
    expect(tids.has(pids[K.caps])).toBe(false);
    const lines = truth.kstack3.split('\n').filter((l) => l.startsWith('[<'));
    const k = lines.findIndex((l) => / kthread\+/.test(l));
    const fn = /\] ([^+]+)\+/.exec(lines[k - 1])![1];
    const row = t.kthreads.find((r) => r.TID === 3)!;
    expect(row.Symbol).toBe(fn);
    expect(typeof row['Handler Address']).toBe('bigint');
  });

  it('boottime: btime of /proc/stat, and the clocks within a second of it', () => {
    const btime = Number(/btime (\d+)/.exec(truth.btime)![1]) * 1000;
    const row = t.boottime[0];
    expect(row.BTIME).toBe(btime);
    expect(Math.abs((row['Boot Time'] as number) - btime)).toBeLessThan(1500);
    expect(row.Clocksource).toBeTruthy();
  });

  it('kallsyms: every line, real addresses as root, modules and bpf programs', () => {
    expect(t.kallsyms.length).toBe(Number(truth.ksymsCount.trim()));
    const kt = /^(\S+) (\S) kthread$/m.exec(truth.ksyms)!;
    const row = t.kallsyms.find((r) => r.SymbolName === 'kthread' && r.ModuleName === 'kernel')!;
    expect(row.Addr).toBe(BigInt(`0x${kt[1]}`));
    expect(row.Type).toBe(kt[2]);
    const prog = /^(\S+) t (bpf_prog_\S+_vmilab_sockflt)\t\[bpf\]$/m.exec(truth.ksyms)!;
    expect(t.kallsyms.find((r) => r.SymbolName === prog[2])).toMatchObject({
      Addr: BigInt(`0x${prog[1]}`),
      SubSystem: 'bpf',
      ModuleName: 'bpf',
    });
    expect(t.kallsyms.some((r) => r.ModuleName === 'nf_tables')).toBe(true);
  });

  it('iomem: the tree of /proc/iomem, with depths', () => {
    const lines = truth.iomem.split('\n').filter((l) => / : /.test(l));
    expect(
      t.iomem.map(
        (r) =>
          `${'  '.repeat(r.Depth as number)}${(r.Start as bigint).toString(16).padStart(8, '0')}-${(r.End as bigint).toString(16).padStart(8, '0')} : ${String(r.Name)}`,
      ),
    ).toEqual(lines);
    expect(t.iomem.some((r) => r.Name === 'Kernel code' && r.Depth === 1)).toBe(true);
  });

  it('ebpf: the helper’s socket filter and map, as their fdinfo says', () => {
    const prog = t.ebpf.find((r) => r.Kind === 'prog' && r.Name === K.bpfProgName)!;
    expect(prog.ID).toBe(Number(field(truth.progInfo, 'prog_id')));
    expect(prog.Tag).toBe(field(truth.progInfo, 'prog_tag'));
    expect(field(truth.progInfo, 'prog_type')).toBe('1');
    expect(prog.Type).toBe('socket_filter');
    const map = t.ebpf.find((r) => r.Kind === 'map' && r.Name === K.bpfMapName)!;
    expect(map.ID).toBe(Number(field(truth.mapInfo, 'map_id')));
    expect(map.Type).toBe('array');
    expect(prog.Maps).toBe(String(map.ID));
    expect(String(prog.Holders)).toContain(`${pids[K.bpf]}(labkern):`);
  });

  it('netfilter: the nf_tables table, chain and rule the lab set, and the iptables filter table', () => {
    const nft = truth.nft;
    const table = /^nft table 1 (\S+) handle (\d+)$/m.exec(nft)!;
    const chain = /^nft chain 1 (\S+) (\S+) handle (\d+) type (\S+)$/m.exec(nft)!;
    const rule = /^nft rule 1 (\S+) (\S+) handle (\d+)$/m.exec(nft)!;
    const nf = t.netfilter.filter((r) => r.Module === 'nf_tables');
    expect(nf.find((r) => r.Kind === 'table')).toMatchObject({
      Table: table[1],
      Proto: 'inet',
      Handle: Number(table[2]),
    });
    expect(nf.find((r) => r.Kind === 'chain')).toMatchObject({
      Table: chain[1],
      Chain: chain[2],
      Handle: Number(chain[3]),
      'Chain Type': chain[4],
      Hook: 'input',
      Priority: 0,
      Policy: 'accept',
    });
    const r = nf.find((x) => x.Kind === 'rule')!;
    expect(r).toMatchObject({
      Table: rule[1],
      Chain: rule[2],
      Handle: Number(rule[3]),
      Comment: K.nftComment,
    });
    expect(String(r.Rule)).toMatch(/cmp eq reg 1 0x7a69 .*immediate drop/);
    const ipt = t.netfilter.filter((x) => x.Module === 'ip_tables');
    expect([...new Set(ipt.map((x) => x.Table))]).toEqual(truth.iptNames.split(/\s+/).filter(Boolean));
    expect(ipt.filter((x) => x.Kind === 'chain').map((x) => [x.Chain, x.Policy])).toEqual([
      ['INPUT', 'ACCEPT'],
      ['FORWARD', 'ACCEPT'],
      ['OUTPUT', 'ACCEPT'],
    ]);
  });
});
