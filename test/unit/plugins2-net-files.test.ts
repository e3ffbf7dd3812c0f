import { describe, expect, it } from 'vitest';
import {
  formatIpv6,
  ipv4FromHexLe,
  ipv6FromHex,
  ipv6FromHexLeWords,
  prefixOfMask,
} from '../../src/abi/linux/inet.js';
import { parseKmsg } from '../../src/abi/linux/kmsg.js';
import {
  parseFibTrie,
  parseIfInet6,
  parseInetSockets,
  parseIpv4Routes,
  parseMaps,
  parseNetDev,
  parseNetlinkSockets,
  parseUnixSockets,
} from '../../src/abi/linux/proc/index.js';
import { isAbsent } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { validateTable } from '../../src/output/table.js';
import { ifconfig } from '../../src/plugins/ifconfig.js';
import { builtinPlugins } from '../../src/plugins/index.js';
import { kmsg } from '../../src/plugins/kmsg.js';
import { lsof, modeString } from '../../src/plugins/lsof.js';
import { maps } from '../../src/plugins/maps.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { runPlugin, type RowValue } from '../../src/sdk/index.js';
import { addFakeProcess, fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

const TCP_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const tcpLine = (sl: number, local: string, rem: string, st: string, inode: number) =>
  `  ${sl}: ${local} ${rem} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 000000003b0dccd5 100 0 0 10 0\n`;
const TCP6_HEADER =
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const UNIX =
  'Num       RefCount Protocol Flags    Type St Inode Path\n' +
  '00000000c8cb5c4a: 00000002 00000000 00010000 0001 01  9925 /run/vmi-lab/control.sock\n' +
  '00000000b23d0b70: 00000003 00000000 00000000 0001 03  9940 /run/vmi-lab/control.sock\n' +
  '00000000af9a9397: 00000003 00000000 00000000 0001 03  9928\n' +
  '00000000af9a9398: 00000002 00000000 00000000 0002 01  9950 @abstract name\n';
const NETLINK =
  'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n' +
  '0000000071c9b0c8 0   4242       00000000 0        0        0     2        0        9960    \n';

describe('inet address text', () => {
  it('decodes the hex forms the kernel prints', () => {
    expect(ipv4FromHexLe('0100007F')).toBe('127.0.0.1');
    expect(ipv4FromHexLe('0F02000A')).toBe('10.0.2.15');
    expect(ipv4FromHexLe('zz')).toBeUndefined();
    expect(ipv6FromHexLeWords('00000000000000000000000001000000')).toBe('::1');
    expect(ipv6FromHexLeWords('0000000000000000FFFF00000100007F')).toBe('::ffff:127.0.0.1');
    expect(ipv6FromHex('fe800000000000000200000000000001')).toBe('fe80::200:0:0:1');
    expect(ipv6FromHex('20010db8000000000000000000000001')).toBe('2001:db8::1');
    expect(formatIpv6([0, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7])).toBe('1:0:2:3:4:5:6:7');
    expect(prefixOfMask(0xffffff00)).toBe(24);
    expect(prefixOfMask(0)).toBe(0);
    expect(prefixOfMask(0xff00ff00)).toBeUndefined();
  });
});

describe('socket table parsers', () => {
  it('parses tcp, tcp6, unix and netlink lines; bad lines become errors', () => {
    const tcp = parseInetSockets(
      TCP_HEADER +
        tcpLine(0, '0100007F:2328', '00000000:0000', '0A', 9938) +
        '   1: garbage line\n' +
        tcpLine(2, '0100007F:EDFE', '0100007F:2328', '01', 9922),
      false,
      '/proc/1/net/tcp',
    );
    expect(tcp.entries).toEqual([
      expect.objectContaining({ localAddr: '127.0.0.1', localPort: 9000, state: 10, inode: 9938n }),
      expect.objectContaining({ remoteAddr: '127.0.0.1', remotePort: 9000, localPort: 60926, state: 1 }),
    ]);
    expect(tcp.errors.map((e) => e.message)).toEqual([expect.stringContaining('/proc/1/net/tcp:3')]);
    const tcp6 = parseInetSockets(
      TCP6_HEADER +
        tcpLine(
          0,
          '00000000000000000000000001000000:1F90',
          '00000000000000000000000000000000:0000',
          '0A',
          77,
        ),
      true,
    );
    expect(tcp6.entries[0]).toMatchObject({
      family: 'AF_INET6',
      localAddr: '::1',
      localPort: 8080,
      remoteAddr: '::',
    });
    const unix = parseUnixSockets(UNIX + 'not a line\n');
    expect(unix.entries.map((u) => [u.inode, u.path, u.state, u.flags, u.type])).toEqual([
      [9925n, '/run/vmi-lab/control.sock', 1, 0x10000, 1],
      [9940n, '/run/vmi-lab/control.sock', 3, 0, 1],
      [9928n, '', 3, 0, 1],
      [9950n, '@abstract name', 1, 0, 2],
    ]);
    expect(unix.errors).toHaveLength(1);
    expect(parseNetlinkSockets(NETLINK).entries).toEqual([{ protocol: 0, portId: 4242, inode: 9960n }]);
  });
});

describe('maps parser', () => {
  it('parses paths, pseudo paths, anonymous mappings and deleted files', () => {
    const { entries, errors } = parseMaps(
      '00400000-00401000 r--p 00000000 00:02 291                                /usr/sbin/labd\n' +
        '004aa000-004af000 rw-p 00000000 00:00 0 \n' +
        '7f951a98c000-7f951a98d000 r--s 00001000 fe:1a 2                          /tmp/a b (deleted)\n' +
        '7ffe1036b000-7ffe1038c000 rw-p 00000000 00:00 0                          [stack]\n' +
        'zzzz-yyyy r--p\n',
      '/proc/9/maps',
    );
    expect(entries).toHaveLength(4);
    expect(entries[0]).toEqual({
      start: 0x400000n,
      end: 0x401000n,
      flags: 'r--p',
      pgoff: 0n,
      major: 0,
      minor: 2,
      inode: 291n,
      path: '/usr/sbin/labd',
    });
    expect(entries[1].path).toBe('');
    expect(entries[2]).toMatchObject({
      major: 0xfe,
      minor: 0x1a,
      pgoff: 0x1000n,
      path: '/tmp/a b (deleted)',
    });
    expect(entries[3].path).toBe('[stack]');
    expect(errors[0].message).toContain('/proc/9/maps:5');
  });
});

describe('interface parsers', () => {
  it('parses net/dev, if_inet6, route and fib_trie', () => {
    const dev = parseNetDev(
      'Inter-|   Receive                                                |  Transmit\n' +
        ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n' +
        '    lo:     291       5    0    0    0     0          0         0      291       5    0    0    0     0       0          0\n' +
        '  eth0: 1 2 3\n',
    );
    expect(dev.entries).toEqual([{ name: 'lo', rxBytes: 291n, rxPackets: 5n, txBytes: 291n, txPackets: 5n }]);
    expect(dev.errors).toHaveLength(1);
    expect(parseIfInet6('00000000000000000000000000000001 01 80 10 80       lo\n').entries).toEqual([
      { address: '::1', ifindex: 1, prefixLen: 128, scope: 0x10, flags: 0x80, name: 'lo' },
    ]);
    const routes = parseIpv4Routes(
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
        'eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n',
    );
    expect(routes.entries).toEqual([
      {
        iface: 'eth0',
        destination: '10.0.2.0',
        gateway: '0.0.0.0',
        flags: 1,
        metric: 0,
        mask: '255.255.255.0',
      },
    ]);
    const fib = parseFibTrie(
      'Main:\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n' +
        '  +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.0\n           /8 host LOCAL\n     |-- 127.255.255.255\n        /32 link BROADCAST\n' +
        'weird\n',
    );
    expect(fib.entries).toEqual([
      { table: 'Main', address: '127.0.0.1', prefixLen: 32, scope: 'host', type: 'LOCAL' },
      { table: 'Local', address: '127.0.0.0', prefixLen: 8, scope: 'host', type: 'LOCAL' },
      { table: 'Local', address: '127.255.255.255', prefixLen: 32, scope: 'link', type: 'BROADCAST' },
    ]);
    expect(fib.errors).toHaveLength(1);
  });
});

describe('kmsg parser', () => {
  it('splits prefix, time and caller; glues prefix-less lines to the line before', () => {
    expect(
      parseKmsg(
        '<5>[    0.000000] Linux version 6.1\n<14>[   12.500001][    T1]   indented\nstray piece\n<4>no time\n',
      ),
    ).toEqual([
      { level: 5, facility: 0, timestamp: 0, message: 'Linux version 6.1' },
      { level: 6, facility: 1, timestamp: 12.500001, caller: 'T1', message: '  indented\nstray piece' },
      { level: 4, facility: 0, message: 'no time' },
    ]);
    expect(parseKmsg('orphan')).toEqual([{ message: 'orphan' }]);
  });
});

/** pid p (1..n) holds a listening tcp socket (fd 3) and a unix socket (fd 4); all in one netns. */
function netGuest(n: number): FakeGuest {
  const g = fakeProcGuest(n);
  let tcp = TCP_HEADER;
  let unix = 'Num       RefCount Protocol Flags    Type St Inode Path\n';
  for (let pid = 1; pid <= n; pid++) {
    g.addFile(`/proc/${pid}/comm`, `proc${pid}\n`);
    g.addLink(`/proc/${pid}/ns/net`, pid === n ? 'net:[4026532000]' : 'net:[4026531992]');
    g.addLink(`/proc/${pid}/fd/0`, '/dev/null');
    g.addLink(`/proc/${pid}/fd/3`, `socket:[${10000 + pid}]`);
    g.addLink(`/proc/${pid}/fd/4`, `socket:[${20000 + pid}]`);
    tcp += tcpLine(
      pid,
      '0100007F:' + (1000 + pid).toString(16).toUpperCase().padStart(4, '0'),
      '00000000:0000',
      '0A',
      10000 + pid,
    );
    unix += `00000000c8cb5c4a: 00000002 00000000 00000000 0001 03  ${20000 + pid} /run/s${pid}\n`;
  }
  // Every process can be the one its namespace's tables are read through.
  for (let pid = 1; pid <= n; pid++) {
    g.addFile(`/proc/${pid}/net/tcp`, tcp);
    g.addFile(`/proc/${pid}/net/tcp6`, TCP6_HEADER);
    g.addFile(`/proc/${pid}/net/udp`, TCP_HEADER);
    g.addFile(`/proc/${pid}/net/udp6`, TCP6_HEADER);
    g.addFile(`/proc/${pid}/net/raw`, TCP_HEADER);
    g.addFile(`/proc/${pid}/net/raw6`, TCP6_HEADER);
    g.addFile(`/proc/${pid}/net/unix`, unix);
    g.addFile(`/proc/${pid}/net/netlink`, NETLINK);
  }
  return g;
}

describe('registry', () => {
  it('registers the network and file plugins', () => {
    const names = builtinPlugins.map((p) => p.name);
    for (const n of ['sockstat', 'lsof', 'maps', 'kmsg', 'ifconfig']) expect(names).toContain(n);
  });
});

describe('sockstat', () => {
  it('ties sockets to processes in constant guest entries', async () => {
    const g = netGuest(200);
    const { table, runs } = await runPlugin(sockstat, { executor: g });
    expect(runs).toBeLessThanOrEqual(6);
    const rows = records(table);
    expect(rows).toHaveLength(400);
    expect(rows[0]).toEqual({
      NetNS: 4026531992n,
      'Process Name': 'proc1',
      PID: 1,
      TID: 1,
      FD: 3,
      Inode: 10001n,
      Family: 'AF_INET',
      Type: 'STREAM',
      Proto: 'TCP',
      'Source Addr': '127.0.0.1',
      'Source Port': 1001,
      'Destination Addr': '0.0.0.0',
      'Destination Port': 0,
      State: 'LISTEN',
    });
    expect(rows[1]).toMatchObject({
      Family: 'AF_UNIX',
      'Source Addr': '/run/s1',
      State: 'CONNECTED',
      Proto: null,
    });
    expect(rows[399]).toMatchObject({ NetNS: 4026532000n, PID: 200, FD: 4 });
    expect(table.errors).toEqual([]);
  });

  it('filters by --pid, --unix and --inet; unknown sockets are N/A; bad lines warn', async () => {
    const g = netGuest(5);
    g.addLink('/proc/2/fd/7', 'socket:[999999]');
    g.addFile('/proc/2/net/udp', TCP_HEADER + '  0: hostile\n');
    const r1 = await runPlugin(sockstat, { executor: g, options: { pid: [2], unix: true } });
    expect(records(r1.table).map((r) => [r.FD, r.Family])).toEqual([[4, 'AF_UNIX']]);
    expect(r1.runs).toBeLessThanOrEqual(4);
    const r2 = await runPlugin(sockstat, { executor: g, options: { pid: [2] } });
    const rows = records(r2.table);
    expect(rows.map((r) => r.FD)).toEqual([3, 4, 7]);
    expect(isAbsent(rows[2].Family)).toBe(true);
    expect(r2.table.errors).toEqual([expect.stringContaining('/proc/2/net/udp:2')]);
    const r3 = await runPlugin(sockstat, { executor: g, options: { pid: [2], inet: true } });
    expect(records(r3.table).map((r) => r.FD)).toEqual([3]);
  });
  it('reads a namespace through a second process when the first one is gone', async () => {
    const g = netGuest(5);
    g.remove('/proc/1/net');
    const { table } = await runPlugin(sockstat, { executor: g });
    const rows = records(table);
    expect(rows.filter((r) => r.PID === 1).map((r) => r.Family)).toEqual(['AF_INET', 'AF_UNIX']);
    expect(table.errors).toEqual([]);
  });
});

describe('lsof', () => {
  it('one row per descriptor with link target and statx, in constant guest entries', async () => {
    const g = netGuest(150);
    // Unlinked (link count 0) beside a file really named `r (deleted)` (still linked).
    g.addLink('/proc/3/fd/5', '/tmp/deleted-but-open.tmp (deleted)', { nlink: 0 });
    g.addLink('/proc/3/fd/6', '/x/' + 'a'.repeat(400));
    g.addLink('/proc/3/fd/7', '/tmp/r (deleted)', { nlink: 1 });
    g.addLink('/proc/3/fd/8', '/tmp/r (deleted) (deleted)', { nlink: 0 });
    g.remove('/proc/4/fd/3');
    const { table, runs } = await runPlugin(lsof, { executor: g });
    expect(runs).toBeLessThanOrEqual(7);
    const rows = records(table);
    const p3 = rows.filter((r) => r.PID === 3);
    expect(p3.map((r) => [r.FD, r.Path, r.Deleted])).toEqual([
      [0, '/dev/null', false],
      [3, 'socket:[10003]', false],
      [4, 'socket:[20003]', false],
      [5, '/tmp/deleted-but-open.tmp', true],
      [6, '/x/' + 'a'.repeat(400), false],
      [7, '/tmp/r (deleted)', false],
      [8, '/tmp/r (deleted)', true],
    ]);
    // The fake's statx does not follow links: it reports the link itself.
    expect(p3[0]).toMatchObject({
      Process: 'proc3',
      TID: 3,
      Type: 'LNK',
      Mode: 'lrwxrwxrwx',
      Device: '0:0',
      Size: 0n,
    });
    expect(rows.filter((r) => r.PID === 4).map((r) => r.FD)).toEqual([0, 4]);
    expect(table.errors).toEqual([]);
  });

  it('mode strings as ls prints them', () => {
    expect(modeString(0o100644)).toBe('-rw-r--r--');
    expect(modeString(0o104755)).toBe('-rwsr-xr-x');
    expect(modeString(0o041777)).toBe('drwxrwxrwt');
    expect(modeString(0o020666)).toBe('crw-rw-rw-');
    expect(modeString(0o004600)).toBe('?rwS------');
    expect(modeString(0o002640)).toBe('?rw-r-S---');
  });

  it('filters by --pid and skips vanished processes', async () => {
    const g = netGuest(5);
    const { table, runs } = await runPlugin(lsof, { executor: g, options: { pid: [2, 77] } });
    expect(runs).toBe(2);
    expect(records(table).map((r) => r.FD)).toEqual([0, 3, 4]);
  });
});

describe('maps', () => {
  it('every mapping of every process, big maps included, bad lines warn', async () => {
    const g = fakeProcGuest(100);
    const line = (i: number) =>
      `${(0x400000 + i * 0x1000).toString(16)}-${(0x401000 + i * 0x1000).toString(16)} r-xp 00000000 08:01 1234                       /usr/bin/x\n`;
    for (let pid = 1; pid <= 100; pid++) {
      g.addFile(`/proc/${pid}/comm`, `proc${pid}\n`);
      g.addFile(`/proc/${pid}/maps`, line(0) + '00000000-00001000 rw-p 00000000 00:00 0 \n');
    }
    g.addFile('/proc/7/maps', Array.from({ length: 2000 }, (_, i) => line(i)).join(''));
    g.addFile('/proc/8/maps', 'bad\n' + line(0));
    g.addFile('/proc/2/maps', '');
    const { table, runs } = await runPlugin(maps, { executor: g });
    // 1 listing + 1 for all files; the 220 KB maps of pid 7 alone costs 3 follow-ups.
    expect(runs).toBeLessThanOrEqual(5);
    const rows = records(table);
    expect(rows.filter((r) => r.PID === 7)).toHaveLength(2000);
    expect(rows.filter((r) => r.PID === 2)).toHaveLength(0);
    expect(rows[0]).toEqual({
      PID: 1,
      Process: 'proc1',
      Start: 0x400000n,
      End: 0x401000n,
      Flags: 'r-xp',
      PgOff: 0n,
      Major: 8,
      Minor: 1,
      Inode: 1234n,
      'File Path': '/usr/bin/x',
      Deleted: false,
    });
    expect(isAbsent(rows[1].Deleted)).toBe(true); // anonymous memory: no file
    expect(table.errors).toEqual([expect.stringContaining('/proc/8/maps:1')]);
  });

  it('Deleted from the link count of map_files, one more batch only when a path has the suffix', async () => {
    const g = fakeProcGuest(3);
    for (let pid = 1; pid <= 3; pid++) g.addFile(`/proc/${pid}/comm`, `proc${pid}\n`);
    const m = (a: number, path: string) =>
      `${a.toString(16)}000-${(a + 1).toString(16)}000 r--s 00000000 00:1a ${a}                          ${path}\n`;
    g.addFile('/proc/1/maps', m(0x10, '/usr/bin/x'));
    g.addFile(
      '/proc/2/maps',
      m(0x20, '/tmp/r (deleted)') + m(0x21, '/tmp/r (deleted)') + m(0x22, '/tmp/q (deleted)'),
    );
    g.addFile('/proc/3/maps', '');
    // 0x20: an unlinked `r`; 0x21: a file really named `r (deleted)`; 0x22: statx refused.
    g.addLink('/proc/2/map_files/20000-21000', '/tmp/r (deleted)', { nlink: 0 });
    g.addLink('/proc/2/map_files/21000-22000', '/tmp/r (deleted)', { nlink: 1 });
    const { table, runs } = await runPlugin(maps, { executor: g });
    expect(runs).toBe(3);
    const rows = records(table);
    expect(rows.map((r) => [r.PID, r['File Path'], isAbsent(r.Deleted) ? 'unreadable' : r.Deleted])).toEqual([
      [1, '/usr/bin/x', false],
      [2, '/tmp/r', true],
      [2, '/tmp/r (deleted)', false],
      [2, '/tmp/q (deleted)', 'unreadable'],
    ]);
    expect(table.errors).toEqual([expect.stringContaining('/proc/2/map_files/22000-23000')]);
    // Without a suffixed path, no extra batch.
    g.addFile('/proc/2/maps', m(0x20, '/usr/lib/y'));
    expect((await runPlugin(maps, { executor: g })).runs).toBe(2);
  });
});

describe('kmsg', () => {
  it('rows from syslog READ_ALL in one guest entry', async () => {
    const g = fakeProcGuest(1);
    g.syslogText = '<5>[    0.000000] Linux version 6.1.0-fake\n<6>[    1.250000] second\n';
    const { table, runs } = await runPlugin(kmsg, { executor: g });
    expect(runs).toBe(1);
    const rows = records(table);
    expect(rows[0]).toMatchObject({
      LEVEL: 5,
      FACILITY: 'kern',
      TIMESTAMP: 0,
      MESSAGE: 'Linux version 6.1.0-fake',
    });
    expect(rows[1].TIMESTAMP).toBe(1.25);
    expect(isAbsent(rows[1].CALLER)).toBe(true);
  });

  it('a failed read is a warning, not a failure', async () => {
    const g = fakeProcGuest(1);
    const { table } = await runPlugin(kmsg, { executor: g });
    expect(table.rows).toEqual([]);
    expect(table.errors).toEqual([expect.stringContaining('syslog: ENOSYS')]);
  });
});

describe('ifconfig', () => {
  const INIT_NET = 'net:[4026531992]';
  function ifGuest(): FakeGuest {
    const g = fakeProcGuest(1);
    g.addLink('/proc/self/ns/net', INIT_NET);
    g.addLink('/proc/1/ns/net', INIT_NET);
    g.addFile(
      '/proc/self/net/dev',
      'Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n' +
        '    lo:     291       5    0    0    0     0          0         0      291       5    0    0    0     0       0          0\n' +
        '  eth0:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n' +
        'dummy0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n',
    );
    g.addFile(
      '/proc/self/net/if_inet6',
      '00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000005054fffe123456 02 40 20 80 eth0\n',
    );
    g.addFile(
      '/proc/self/net/fib_trie',
      'Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.2.0\n        /24 link UNICAST\n' +
        'Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.2.15\n        /32 host LOCAL\n' +
        '     |-- 192.168.9.9\n        /32 host LOCAL\n' +
        '     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.0\n           /8 host LOCAL\n        |-- 127.0.0.1\n           /32 host LOCAL\n',
    );
    g.addFile(
      '/proc/self/net/route',
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
        'eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n' +
        'eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n',
    );
    const sysfs = (name: string, mac: string, mtu: number, flags: string) => {
      g.addFile(`/sys/class/net/${name}/address`, mac + '\n');
      g.addFile(`/sys/class/net/${name}/mtu`, `${mtu}\n`);
      g.addFile(`/sys/class/net/${name}/flags`, flags + '\n');
    };
    sysfs('lo', '00:00:00:00:00:00', 65536, '0x9');
    sysfs('eth0', '52:54:00:12:34:56', 1500, '0x1103');
    sysfs('dummy0', 'be:61:75:55:6c:81', 1500, '0x82');
    return g;
  }

  it('interfaces with IPv4 from fib_trie + route, IPv6 from if_inet6, in four guest entries', async () => {
    const g = ifGuest();
    const { table, runs } = await runPlugin(ifconfig, { executor: g });
    // listing, namespace links, net files, sysfs
    expect(runs).toBe(4);
    const rows = records(table);
    expect(rows.map((r) => [r.Interface, r['IP Address'], r.Prefix, r.State])).toEqual([
      ['lo', '127.0.0.1', 8, 'UP'],
      ['lo', '::1', 128, 'UP'],
      ['eth0', '10.0.2.15', 24, 'UP'],
      ['dummy0', null, null, 'DOWN'],
      [expect.anything(), '192.168.9.9', 32, expect.anything()],
    ]);
    expect(isAbsent(rows[4].Interface)).toBe(true);
    expect(rows.every((r) => r.NetNS === 4026531992n)).toBe(true);
    expect(rows[2]).toMatchObject({
      'MAC Address': '52:54:00:12:34:56',
      Promiscuous: true,
      MTU: 1500,
      'RX Bytes': 1000n,
      'TX Bytes': 2000n,
    });
    // The malformed if_inet6 line (31 hex digits) warns.
    expect(table.errors).toEqual([expect.stringContaining('if_inet6:2')]);
  });

  it('hostile sysfs content gives unreadable cells', async () => {
    const g = ifGuest();
    g.addFile('/sys/class/net/eth0/mtu', 'lots\n');
    g.addFile('/sys/class/net/eth0/flags', '', { openErrno: 13 });
    const rows = records((await runPlugin(ifconfig, { executor: g })).table);
    const eth0 = rows.find((r) => r.Interface === 'eth0')!;
    expect(isAbsent(eth0.MTU)).toBe(true);
    expect(isAbsent(eth0.State)).toBe(true);
    expect(isAbsent(eth0.Promiscuous)).toBe(true);
    expect(eth0['IP Address']).toBe('10.0.2.15');
  });

  it('every network namespace, through /proc/PID/net of a process in it', async () => {
    const g = ifGuest();
    for (const pid of [2, 3]) {
      addFakeProcess(g, pid, `ns${pid}`);
      g.addLink(`/proc/${pid}/ns/net`, 'net:[4026532300]');
    }
    // pid 2 exits before its files are read: pid 3 is the second reader.
    g.addFile(
      '/proc/3/net/dev',
      'Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n' +
        '    lo:      84       1    0    0    0     0          0         0       84       1    0    0    0     0       0          0\n',
    );
    g.addFile('/proc/3/net/if_inet6', '');
    g.addFile(
      '/proc/3/net/fib_trie',
      'Main:\n  +-- 0.0.0.0/0 3 0 5\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.9.9.9\n        /32 host LOCAL\n',
    );
    g.addFile(
      '/proc/3/net/route',
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n',
    );
    const { table } = await runPlugin(ifconfig, { executor: g });
    const rows = records(table).filter((r) => r.NetNS === 4026532300n);
    expect(rows.map((r) => [r.Interface, r['IP Address'], r.Prefix, r['RX Bytes']])).toEqual([
      ['lo', '10.9.9.9', 32, 84n],
    ]);
    // sysfs shows init's namespace only: no borrowed lo cells from it.
    expect(isAbsent(rows[0].State) && isAbsent(rows[0].MTU)).toBe(true);
    expect(records(table).filter((r) => r.NetNS === 4026531992n)).toHaveLength(5);
  });
});
