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
import { records } from '../helpers/records.js';

const NAME = 't-netfiles';

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
    udp: '',
    unix: '',
    /** socket:[INODE] fds of the udp and unix workload processes, from their /proc/PID/fd. */
    socketInodes: {} as Record<string, bigint[]>,
    netDev: '',
    /** `ip -o addr` of the guest, and /sys/class/net/IF/{mtu,address,flags} per interface. */
    addrs: '',
    links: '',
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
      const must = async (cmd: string): Promise<string> => {
        const r = await con.run(cmd);
        if (r.status !== 0) throw new Error(`guest command failed (${r.status}): ${cmd}\n${r.output}`);
        return r.output;
      };
      truth.udp = await must('cat /proc/net/udp');
      truth.unix = await must('cat /proc/net/unix');
      for (const role of ['udp', 'unix-server', 'unix-client']) {
        const fds = await must(`ls -l /proc/${truth.pids[role]}/fd`);
        truth.socketInodes[role] = [...fds.matchAll(/socket:\[(\d+)\]/g)].map((m) => BigInt(m[1])).sort();
      }
      truth.netDev = await must('cat /proc/net/dev');
      truth.addrs = await must('ip -o addr');
      truth.links = await must(
        'cd /sys/class/net && for i in *; do echo "$i $(cat $i/mtu) $(cat $i/address) $(cat $i/flags)"; done',
      );
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
    // UDP (udp4_format_sock: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...):
    // the udp process's sockets are the socket fds its /proc/PID/fd shows, and each is
    // the line of the guest's /proc/net/udp with that inode (address, port, state 07 = close).
    const udpLines = new Map(
      [
        ...truth.udp.matchAll(
          /^\s*\d+: ([0-9A-F]{8}):([0-9A-F]{4}) ([0-9A-F]{8}):([0-9A-F]{4}) ([0-9A-F]{2}) \S+ \S+ \S+\s+\d+\s+\d+ (\d+)/gm,
        ),
      ].map((m) => [BigInt(m[6]), m]),
    );
    const udp = of('udp');
    expect(udp.map((r) => r.Inode as bigint).sort()).toEqual(truth.socketInodes.udp);
    expect(udp.length).toBeGreaterThan(0);
    const ipv4 = (h: string) => [3, 2, 1, 0].map((i) => parseInt(h.slice(i * 2, i * 2 + 2), 16)).join('.');
    for (const r of udp) {
      const m = udpLines.get(r.Inode as bigint);
      expect(m, `udp inode ${String(r.Inode)} not in the guest's /proc/net/udp`).toBeDefined();
      expect(r).toMatchObject({
        Family: 'AF_INET',
        Type: 'DGRAM',
        Proto: 'UDP',
        'Source Addr': ipv4(m![1]),
        'Source Port': parseInt(m![2], 16),
        State: m![5] === '07' ? 'UNCONNECTED' : expect.anything(),
      });
    }
    // Every UDP socket of the guest's table is a row (they are all held by some process).
    expect(
      rows
        .filter((r) => r.Proto === 'UDP' && r.Family === 'AF_INET')
        .map((r) => r.Inode as bigint)
        .sort(),
    ).toEqual([...udpLines.keys()].sort());
    // Unix: the same with /proc/net/unix (unix_seq_show: "%pK: %08X %08X %08X %04X %02X %5lu"
    // Num RefCount Protocol Flags Type St Inode, then the path);
    // flag 00010000 is __SO_ACCEPTCON (listening), St 03 is SS_CONNECTED.
    const unixLines = new Map(
      [
        ...truth.unix.matchAll(
          /^[0-9a-f]+: [0-9A-F]+ [0-9A-F]+ ([0-9A-F]+) ([0-9A-F]+) ([0-9A-F]+) +(\d+) ?(.*)$/gm,
        ),
      ].map((m) => [BigInt(m[4]), m]),
    );
    for (const role of ['unix-server', 'unix-client']) {
      const mine = of(role);
      expect(mine.map((r) => r.Inode as bigint).sort(), role).toEqual(truth.socketInodes[role]);
      for (const r of mine) {
        const m = unixLines.get(r.Inode as bigint);
        expect(m, `unix inode ${String(r.Inode)} not in the guest's /proc/net/unix`).toBeDefined();
        const state = m![1] === '00010000' ? 'LISTEN' : m![3] === '03' ? 'CONNECTED' : 'UNCONNECTED';
        expect(r.Family).toBe('AF_UNIX');
        expect(r.Type).toBe(m![2] === '0001' ? 'STREAM' : m![2] === '0002' ? 'DGRAM' : 'SEQPACKET');
        expect(r.State, `state of unix inode ${String(r.Inode)}`).toBe(state);
        expect(String(r['Source Addr'] ?? ''), `path of unix inode ${String(r.Inode)}`).toBe(m![5]);
      }
    }
    expect(of('unix-server').map((r) => r.State)).toContain('LISTEN');
    // All in the initial network namespace.
    expect(new Set(rows.map((r) => r.NetNS)).size).toBe(1);
    expect(typeof rows[0].NetNS).toBe('bigint');
  });

  it('lsof shows the held files with the fds and sizes the guest shows, the deleted one marked', () => {
    const holder = truth.pids.holder;
    const rows = records(tables.lsof).filter((r) => r.PID === holder);
    const links = [...truth.holderFds.matchAll(/ (\d+) -> (.*)$/gm)].map((m) => [Number(m[1]), m[2]]);
    // The guest's ls shows the kernel's ` (deleted)`; lsof gives the name and the fact apart.
    expect(rows.map((r) => [r.FD, r.Deleted ? `${String(r.Path)} (deleted)` : r.Path])).toEqual(links);
    for (const r of rows) expect(r.Size, `fd ${String(r.FD)}`).toBe(BigInt(truth.sizes[r.FD as number]));
    const held = LAB_WORKLOAD.heldFiles;
    for (const f of held.slice(0, -1)) {
      expect(rows.find((r) => r.Path === f)).toMatchObject({ Type: 'REG', Process: 'labd', TID: holder });
    }
    for (const f of held.slice(0, -1)) expect(rows.find((r) => r.Path === f)?.Deleted).toBe(false);
    const deleted = rows.find((r) => r.Path === held[held.length - 1])!;
    expect(deleted).toMatchObject({ Type: 'REG', Mode: '-rw-------', Deleted: true });
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

  it("ifconfig shows the guest's interfaces (/proc/net/dev), addresses (ip addr), MTU, MAC and state (/sys)", () => {
    // Every network namespace, init's (the console's) first: its rows are these.
    const all = records(tables.ifconfig);
    const rows = all.filter((r) => r.NetNS === all[0]?.NetNS);
    const names = [...truth.netDev.matchAll(/^\s*([^\s:]+):/gm)].map((m) => m[1]).sort();
    expect(names).toContain('lo');
    expect([...new Set(rows.map((r) => String(r.Interface)))].sort()).toEqual(names);
    // `ip -o addr`: "1: lo    inet 127.0.0.1/8 scope host lo ..." (and inet6)
    const addrs = [...truth.addrs.matchAll(/^\d+: (\S+)\s+inet6? ([0-9a-f.:]+)\/(\d+)/gm)]
      .map((m) => `${m[1]} ${m[2]}/${m[3]}`)
      .sort();
    expect(addrs).toContain('lo 127.0.0.1/8');
    const shown = rows
      .filter((r) => r['IP Address'] !== null && r['IP Address'] !== undefined && r['IP Address'] !== '')
      .filter((r) => typeof r['IP Address'] === 'string')
      .map((r) => `${String(r.Interface)} ${String(r['IP Address'])}/${String(r.Prefix)}`)
      .sort();
    expect(shown).toEqual(addrs);
    for (const line of truth.links.trim().split('\n')) {
      const [name, mtu, mac, flags] = line.trim().split(' ');
      const up = (parseInt(flags, 16) & 0x1) !== 0; // IFF_UP
      const promisc = (parseInt(flags, 16) & 0x100) !== 0; // IFF_PROMISC
      for (const r of rows.filter((x) => x.Interface === name)) {
        expect(r, name).toMatchObject({
          MTU: Number(mtu),
          'MAC Address': mac,
          State: up ? 'UP' : 'DOWN',
          Promiscuous: promisc,
        });
      }
    }
  });
});
