import { describe, expect, it } from 'vitest';
import { apiVersion, PolicyExecutor, runPlugin, type RowValue } from 'vmi/sdk';
import {
  CAPABILITY_NAMES,
  capabilities,
  cgroups,
  decodeCapabilities,
  parseCgroup,
  plugins,
} from '../src/index.js';
import { FakeProc } from './fake-proc.js';

function status(pid: number, name: string, caps: Record<string, string>): string {
  return (
    `Name:\t${name}\nState:\tS (sleeping)\nTgid:\t${pid}\nPid:\t${pid}\nPPid:\t1\n` +
    `Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n` +
    Object.entries(caps)
      .map(([k, v]) => `${k}:\t${v}\n`)
      .join('') +
    'NoNewPrivs:\t0\n'
  );
}

const ROOT = {
  CapInh: '0000000000000000',
  CapPrm: '000001ffffffffff',
  CapEff: '000001ffffffffff',
  CapBnd: '000001ffffffffff',
  CapAmb: '0000000000000000',
};
const NET = { ...ROOT, CapPrm: '0000000000003000', CapEff: '0000000000001000', CapAmb: '0000000000001000' };

/** A /proc/PID/stat line (what readProcesses parses for pid, comm and ppid). */
function stat(pid: number, name: string): string {
  return `${pid} (${name}) S 1 ${pid} ${pid} 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 878929 2990080 407 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n`;
}

function guest(): FakeProc {
  return new FakeProc()
    .addProcess(1, {
      stat: stat(1, 'init'),
      status: status(1, 'init', ROOT),
      comm: 'init\n',
      cgroup: '0::/\n',
    })
    .addProcess(42, {
      stat: stat(42, 'netd'),
      status: status(42, 'netd', NET),
      comm: 'netd\n',
      cgroup: '12:cpu,cpuacct:/system.slice/netd\n1:name=systemd:/a:b\n0::/system.slice/netd\n',
    });
}

function records(t: { columns: { name: string }[]; rows: RowValue[][] }): Record<string, RowValue>[] {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

describe('the pack', () => {
  it('exports its plugins, built against this SDK', () => {
    expect(plugins.map((p) => p.name)).toEqual(['capabilities', 'cgroups']);
    for (const p of plugins) expect(p.apiVersion).toBe(apiVersion);
  });
});

describe('capabilities', () => {
  it('reads the five sets of every process in 2 guest entries', async () => {
    const g = guest();
    const { table, runs } = await runPlugin(capabilities, { executor: g });
    expect(runs).toBe(2);
    expect(records(table)).toEqual([
      { PID: 1, COMM: 'init', ...ROOT },
      { PID: 42, COMM: 'netd', ...NET },
    ]);
  });

  it('--decode shows names; --pid skips the listing', async () => {
    const { table, runs } = await runPlugin(capabilities, {
      executor: guest(),
      options: { pid: [42], decode: true },
    });
    expect(runs).toBe(1);
    expect(records(table)[0]).toMatchObject({
      CapPrm: 'CAP_NET_ADMIN,CAP_NET_RAW',
      CapEff: 'CAP_NET_ADMIN',
      CapInh: '',
    });
  });

  it('a process that vanished is skipped silently', async () => {
    const { table } = await runPlugin(capabilities, { executor: guest(), options: { pid: [1, 999] } });
    expect(records(table).map((r) => r.PID)).toEqual([1]);
    expect(table.errors).toEqual([]);
  });

  it('decodes masks', () => {
    expect(decodeCapabilities('0000000000000000')).toBe('');
    expect(decodeCapabilities('000001ffffffffff').split(',')).toEqual(CAPABILITY_NAMES);
    expect(decodeCapabilities('8000000000000001')).toBe('CAP_CHOWN,CAP_63');
    expect(() => decodeCapabilities('xyz')).toThrow();
  });
});

describe('cgroups', () => {
  it('one row per hierarchy, comm and cgroup in one batch', async () => {
    const { table, runs } = await runPlugin(cgroups, { executor: guest() });
    expect(runs).toBe(2);
    expect(records(table)).toEqual([
      { PID: 1, COMM: 'init', HIERARCHY: 0, CONTROLLERS: '', PATH: '/' },
      { PID: 42, COMM: 'netd', HIERARCHY: 12, CONTROLLERS: 'cpu,cpuacct', PATH: '/system.slice/netd' },
      { PID: 42, COMM: 'netd', HIERARCHY: 1, CONTROLLERS: 'name=systemd', PATH: '/a:b' },
      { PID: 42, COMM: 'netd', HIERARCHY: 0, CONTROLLERS: '', PATH: '/system.slice/netd' },
    ]);
  });

  it('parses lines whose path has colons', () => {
    expect(parseCgroup('3:pids:/x:y\n')).toEqual([{ hierarchy: 3, controllers: 'pids', path: '/x:y' }]);
    expect(() => parseCgroup('garbage\n')).toThrow();
  });
});

describe('read-only policy', () => {
  it('both plugins pass it', async () => {
    for (const p of plugins) {
      await runPlugin(p, { executor: new PolicyExecutor(guest(), { plugin: p.name }) });
    }
  });
});
