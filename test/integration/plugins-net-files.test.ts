/**
 * sockstat, lsof, maps, kmsg and ifconfig against a real booted lab guest (one attach for
 * all of them), compared with what the guest's own shell reports.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { ifconfig } from '../../src/plugins/ifconfig.js';
import { kmsg } from '../../src/plugins/kmsg.js';
import { lsof } from '../../src/plugins/lsof.js';
import { maps } from '../../src/plugins/maps.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';

const NAME = 't-netfiles';

function records(t: ResultTable): Record<string, RowValue>[] {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

const hex = (v: RowValue, width: number) => (v as bigint).toString(16).padStart(width, '0');

describe('network and file plugins on the lab guest', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const tables: Record<string, ResultTable> = {};
  const truth = {
    pids: {} as Record<string, number>,
    tcp: '',
    holderFds: '',
    sizes: {} as Record<number, number>,
    holderMaps: '',
    linuxVersion: '',
  };

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    const con = await GuestConsole.connect(guest.serialSocket);
    try {
      truth.pids = parseLabPids((await con.run(`cat ${LAB_WORKLOAD.pidsFile}`)).output);
      const holder = truth.pids.holder;
      truth.tcp = (await con.run('cat /proc/net/tcp')).output;
      truth.holderFds = (await con.run(`ls -l /proc/${holder}/fd`)).output;
      for (const line of (
        await con.run(`cd /proc/${holder}/fd && for f in *; do echo $f $(stat -L -c %s $f); done`)
      ).output
        .trim()
        .split('\n')) {
        const [fd, size] = line.split(' ');
        truth.sizes[Number(fd)] = Number(size);
      }
      truth.holderMaps = (await con.run(`cat /proc/${holder}/maps`)).output;
      truth.linuxVersion = (await con.run(`dmesg | grep -m1 'Linux version'`)).output.trim();
    } finally {
      con.close();
    }
    run = await runPluginsOnGuest(
      guest,
      [sockstat, lsof, maps, kmsg, ifconfig].map((plugin) => ({ plugin, options: {} })),
    );
    for (const t of run.tables) tables[t.plugin] = t;
    console.log('plugin ms on the lab guest:', run.pluginMs, 'batches:', run.session.batches);
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  it('reports no problems', () => {
    for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
  });

  it('sockstat shows the tcp listener, the established pair, the udp socket and the unix listener', () => {
    const rows = records(tables.sockstat);
    const of = (role: string) => rows.filter((r) => r.PID === truth.pids[role]);
    const server = of('tcp-server');
    expect(server.find((r) => r.State === 'LISTEN')).toMatchObject({
      Family: 'AF_INET',
      Type: 'STREAM',
      Proto: 'TCP',
      'Source Addr': '127.0.0.1',
      'Source Port': LAB_WORKLOAD.tcpPort,
      'Process Name': 'labd',
    });
    const accepted = server.find((r) => r.State === 'ESTABLISHED')!;
    const client = of('tcp-client').find((r) => r.State === 'ESTABLISHED')!;
    expect(accepted['Source Port']).toBe(LAB_WORKLOAD.tcpPort);
    expect(client['Destination Port']).toBe(LAB_WORKLOAD.tcpPort);
    expect(client['Source Port']).toBe(accepted['Destination Port']);
    expect(client['Destination Addr']).toBe('127.0.0.1');
    // The guest's own table has the pair with the same ephemeral port (hex, state 01).
    const port = (client['Source Port'] as number).toString(16).toUpperCase().padStart(4, '0');
    expect(truth.tcp).toMatch(new RegExp(`0100007F:${port} 0100007F:2328 01 `));
    expect(of('httpd').find((r) => r.State === 'LISTEN')?.['Source Port']).toBe(LAB_WORKLOAD.httpPort);
    expect(of('udp')).toEqual([
      expect.objectContaining({
        Family: 'AF_INET',
        Type: 'DGRAM',
        Proto: 'UDP',
        'Source Addr': '127.0.0.1',
        'Source Port': LAB_WORKLOAD.udpPort,
        State: 'UNCONNECTED',
      }),
    ]);
    const unix = of('unix-server');
    expect(unix.find((r) => r.State === 'LISTEN')).toMatchObject({
      Family: 'AF_UNIX',
      Type: 'STREAM',
      'Source Addr': LAB_WORKLOAD.unixSocket,
    });
    expect(unix.find((r) => r.State === 'CONNECTED')?.['Source Addr']).toBe(LAB_WORKLOAD.unixSocket);
    expect(of('unix-client').map((r) => [r.Family, r.State])).toEqual([['AF_UNIX', 'CONNECTED']]);
    // All in the initial network namespace.
    expect(new Set(rows.map((r) => r.NetNS)).size).toBe(1);
    expect(typeof rows[0].NetNS).toBe('bigint');
  });

  it('lsof shows the held files with the fds and sizes the guest shows, the deleted one marked', () => {
    const holder = truth.pids.holder;
    const rows = records(tables.lsof).filter((r) => r.PID === holder);
    const links = [...truth.holderFds.matchAll(/ (\d+) -> (.*)$/gm)].map((m) => [Number(m[1]), m[2]]);
    expect(rows.map((r) => [r.FD, r.Path])).toEqual(links);
    for (const r of rows) expect(r.Size, `fd ${String(r.FD)}`).toBe(BigInt(truth.sizes[r.FD as number]));
    const held = LAB_WORKLOAD.heldFiles;
    for (const f of held.slice(0, -1)) {
      expect(rows.find((r) => r.Path === f)).toMatchObject({ Type: 'REG', Process: 'labd', TID: holder });
    }
    const deleted = rows.find((r) => r.Path === `${held[held.length - 1]} (deleted)`)!;
    expect(deleted).toMatchObject({ Type: 'REG', Mode: '-rw-------' });
    expect(deleted.Size as bigint).toBeGreaterThan(0n);
    expect(deleted.Modified).toBeInstanceOf(Date);
  });

  it('maps shows the mmap-ed held file exactly like /proc/PID/maps in the guest', () => {
    const holder = truth.pids.holder;
    const rows = records(tables.maps).filter((r) => r.PID === holder);
    const asLine = (r: Record<string, RowValue>) =>
      `${hex(r.Start, 8)}-${hex(r.End, 8)} ${String(r.Flags)} ${hex(r.PgOff, 8)} ` +
      `${(r.Major as number).toString(16).padStart(2, '0')}:${(r.Minor as number).toString(16).padStart(2, '0')} ` +
      `${String(r.Inode)} ${String(r['File Path'])}`.trimEnd();
    const guestLines = truth.holderMaps
      .trim()
      .split('\n')
      .map((l) => l.replace(/ +/g, ' ').trimEnd());
    expect(rows.map(asLine)).toEqual(guestLines);
    const mapped = rows.find((r) => r['File Path'] === LAB_WORKLOAD.heldFiles[0])!;
    expect(mapped).toMatchObject({ Flags: 'r--s', PgOff: 0n, Process: 'labd' });
  });

  it("kmsg has dmesg's Linux version line", () => {
    const m = /^\[\s*(\d+\.\d+)\] (.*)$/.exec(truth.linuxVersion)!;
    expect(m).not.toBeNull();
    const row = records(tables.kmsg).find((r) => r.MESSAGE === m[2])!;
    expect(row).toBeDefined();
    expect(row.TIMESTAMP).toBe(Number(m[1]));
    expect(row.FACILITY).toBe('kern');
    expect(tables.kmsg.rows.length).toBeGreaterThan(50);
  });

  it('ifconfig shows lo UP with 127.0.0.1/8', () => {
    const lo = records(tables.ifconfig).filter((r) => r.Interface === 'lo');
    expect(lo.find((r) => r['IP Address'] === '127.0.0.1')).toMatchObject({
      Prefix: 8,
      State: 'UP',
      MTU: 65536,
      'MAC Address': '00:00:00:00:00:00',
      Promiscuous: false,
    });
    expect(lo.find((r) => r['IP Address'] === '::1')?.Prefix).toBe(128);
    expect(records(tables.ifconfig).find((r) => r.Interface === 'dummy0')?.State).toBe('DOWN');
  });
});
