import { describe, expect, it } from 'vitest';
import { flagSets, splitArgv } from '../../src/cli/split-argv.js';
import PluginsRunCommand from '../../src/commands/plugins/run.js';
import { builtinLabModules, parseKernelAlias, pickNewestOf } from '../../src/lab/kernel.js';
import type { ResultTable } from '../../src/output/table.js';
import { pslist } from '../../src/plugins/pslist.js';
import { pstree } from '../../src/plugins/pstree.js';
import { existingGdbstub, foreignGuestName, foreignRunDir } from '../../src/targets/qmp.js';
import { GUEST_COLUMN, mergeGuestTables, type GuestOutcome } from '../../src/runner/multi-guest.js';
import type { PluginsRun } from '../../src/runner/run-plugins.js';

function table(plugin: string, rows: unknown[][], extra: Partial<ResultTable> = {}): ResultTable {
  return {
    plugin,
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
    ],
    rows: rows as ResultTable['rows'],
    errors: [],
    metadata: { guest: 'x' },
    ...extra,
  };
}

function outcome(guest: string, tables: ResultTable[]): GuestOutcome {
  const run = { tables, byRequest: tables, pluginMs: {}, session: {} } as unknown as PluginsRun;
  return { guest, ms: 1, run };
}

describe('mergeGuestTables', () => {
  it('puts GUEST first and concatenates rows in guest order', () => {
    const merged = mergeGuestTables(
      [{ plugin: pslist, options: {} }],
      [
        outcome('a', [
          table('pslist', [[1, 'init']], { metadata: { 'kernel.release': '6.1', 'shadow.pid': '812' } }),
        ]),
        { guest: 'b', ms: 1, error: new Error('gone') },
        outcome('c', [
          table(
            'pslist',
            [
              [1, 'init'],
              [2, 'kthreadd'],
            ],
            { errors: ['pid 9: EACCES'], metadata: { guest: 'x', 'shadow.pid': '90' } },
          ),
        ]),
      ],
    );
    expect(merged).toHaveLength(1);
    const [t] = merged;
    expect(t.columns[0]).toEqual(GUEST_COLUMN);
    expect(t.columns.map((c) => c.name)).toEqual(['GUEST', 'PID', 'COMM']);
    expect(t.rows).toEqual([
      ['a', 1, 'init'],
      ['c', 1, 'init'],
      ['c', 2, 'kthreadd'],
    ]);
    expect(t.errors).toEqual(['guest c: pid 9: EACCES']);
    expect(t.metadata.guest).toBe('a,c');
    expect(t.metadata['kernel.release']).toBe('6.1');
    // Every guest's own shadow, by guest.
    expect(t.metadata['shadow.pid']).toBe('a=812,c=90');
  });

  it('keeps tree depths aligned with rows', () => {
    const [t] = mergeGuestTables(
      [{ plugin: pstree, options: {} }],
      [
        outcome('a', [
          table(
            'pstree',
            [
              [1, 'init'],
              [5, 'sh'],
            ],
            { depths: [0, 1] },
          ),
        ]),
        outcome('b', [table('pstree', [[1, 'init']], { depths: [0] })]),
      ],
    );
    expect(t.depths).toEqual([0, 1, 0]);
    expect(t.rows).toHaveLength(3);
  });

  it('still gives the plugin columns when every guest failed', () => {
    const [t] = mergeGuestTables(
      [{ plugin: pslist, options: {} }],
      [{ guest: 'a', ms: 1, error: new Error('x') }],
    );
    expect(t.rows).toEqual([]);
    expect(t.columns.slice(1).map((c) => c.name)).toEqual(pslist.columns.map((c) => c.name));
  });
});

describe('kernel aliases', () => {
  it('reads series and flavour', () => {
    expect(parseKernelAlias('6.1')).toEqual({ series: '6.1', flavour: 'amd64' });
    expect(parseKernelAlias('6.12-rt')).toEqual({ series: '6.12', flavour: 'rt-amd64' });
    expect(parseKernelAlias('6.1-cloud-amd64')).toEqual({ series: '6.1', flavour: 'cloud-amd64' });
    expect(parseKernelAlias('linux-image-6.1.0-56-amd64')).toBeUndefined();
    expect(parseKernelAlias('6.2')).toBeUndefined();
  });

  it('picks the newest package of a series and flavour', () => {
    const out = [
      'linux-image-6.12.107+deb12-rt-amd64-unsigned - Linux 6.12',
      'linux-image-6.12.117+deb12-rt-amd64-unsigned - Linux 6.12',
      'linux-image-6.12.113+deb12-rt-amd64-unsigned - Linux 6.12',
      'linux-image-6.12.119+deb12-amd64-unsigned - Linux 6.12',
      'linux-image-6.12.117+deb12-rt-amd64-dbg - Debug',
    ].join('\n');
    expect(pickNewestOf(out, '6.12', 'rt-amd64')).toBe('linux-image-6.12.117+deb12-rt-amd64-unsigned');
    const out61 =
      'linux-image-6.1.0-9-cloud-amd64 - x\nlinux-image-6.1.0-56-cloud-amd64 - x\nlinux-image-6.1.0-57-amd64 - x';
    expect(pickNewestOf(out61, '6.1', 'cloud-amd64')).toBe('linux-image-6.1.0-56-cloud-amd64');
    expect(pickNewestOf('', '6.1', 'amd64')).toBeUndefined();
  });

  it('knows lab modules built into a config', () => {
    expect(builtinLabModules('CONFIG_DUMMY=y\nCONFIG_NLS_UTF8=m\n')).toEqual(['dummy']);
    expect(builtinLabModules('# CONFIG_DUMMY is not set\n')).toEqual([]);
  });
});

describe('foreign guest helpers', () => {
  it('keys the run dir by the QMP path', () => {
    const a = foreignRunDir('/run/vm1/qmp.sock', '/tmp/vmi-0');
    expect(a).toMatch(/^\/tmp\/vmi-0\/foreign\/[0-9a-f]{16}$/);
    expect(foreignRunDir('/run/vm1/../vm1/qmp.sock', '/tmp/vmi-0')).toBe(a);
    expect(foreignRunDir('/run/vm2/qmp.sock', '/tmp/vmi-0')).not.toBe(a);
  });

  it('names the guest', () => {
    expect(foreignGuestName('web 1', '/x/qmp.sock')).toBe('web_1');
    expect(foreignGuestName(undefined, '/run/vm1.qmp')).toBe('vm1');
  });

  it('finds an existing gdbstub chardev', () => {
    expect(existingGdbstub([{ label: 'serial0', filename: 'pty:/dev/pts/3' }])).toBeUndefined();
    expect(existingGdbstub([{ label: 'gdb', filename: 'disconnected:unix:/tmp/g.sock,server=on' }])).toBe(
      '/tmp/g.sock',
    );
    expect(
      existingGdbstub([{ label: 'gdb', filename: 'disconnected:tcp:0.0.0.0:1234,server=on' }]),
    ).toBeNull();
  });
});

describe('plugins run argv with several guests', () => {
  it('keeps every --guest and --all-guests as the command own flags', () => {
    const { own, rest } = splitArgv(
      ['pslist', '--guest', 'a', '-g', 'b', '--pid', '1', '--all-guests', '--qmp', '/q.sock'],
      new Set(['guest', 'g', 'qmp']),
      new Set(['all-guests']),
    );
    expect(own).toEqual(['--guest', 'a', '-g', 'b', '--all-guests', '--qmp', '/q.sock']);
    expect(rest).toEqual(['pslist', '--pid', '1']);
  });

  it("takes the command's own flag sets from its flag declarations", () => {
    const { valued, booleans } = flagSets(PluginsRunCommand.flags);
    expect([...valued].sort()).toEqual(
      [
        'guest',
        'g',
        'renderer',
        'r',
        'output',
        'o',
        'output-mode',
        'transport',
        'qmp',
        'capture',
        'victim-pid',
        'plugin-timeout',
        'max-read',
        'trust-pack',
        'trust',
        'wait',
      ].sort(),
    );
    expect([...booleans].sort()).toEqual(
      [
        'list',
        'timing',
        'help',
        'all-guests',
        'allow-write',
        'all',
        'accept-partial-context',
        'include-shadow',
      ].sort(),
    );
  });
});
