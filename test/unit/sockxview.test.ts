/**
 * sockxview against the fake guest: a clean guest flags nothing; a socket one view leaves
 * out (a /proc/net table without its line, a dump without its inode) is flagged with the
 * evidence; a socket that appears between views is not; without the diag modules no
 * netlink socket is even opened. Also the sock_diag codec and its policy.
 */
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_UNIX,
  decodeSockDiagChunk,
  encodeSockDiagRequest,
  IPPROTO_TCP,
} from '../../src/abi/linux/sock-diag.js';
import { sysno } from '../../src/abi/linux/syscalls.js';
import { isAbsent } from '../../src/output/columns.js';
import { validateTable, type ResultTable } from '../../src/output/table.js';
import { sockxview } from '../../src/plugins/sockxview.js';
import { checkCall, runPlugin, type Call, type RowValue } from '../../src/sdk/index.js';
import { fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

function records(t: ResultTable): Record<string, RowValue>[] {
  validateTable(t);
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}

const INET_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const inetLine = (local: string, st: string, inode: number) =>
  `   0: ${local} 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 000000003b0dccd5 100 0 0 10 0\n`;
const UNIX_HEADER = 'Num       RefCount Protocol Flags    Type St Inode Path\n';
const NETLINK =
  'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n' +
  '0000000071c9b0c8 0   0          00000000 0        0        0     2        0        9960    \n';
const NS = 'net:[4026531992]';

/**
 * pid 1 listens on tcp 127.0.0.1:22 (fd 3, inode 100) and holds a unix socket (fd 4, 101);
 * pid 2 a udp socket (fd 3, 102). A kernel netlink socket (9960) has no holder.
 */
function netGuest(): FakeGuest {
  const g = fakeProcGuest(2);
  const tables: Record<string, string | (() => string)> = {
    tcp: INET_HEADER + inetLine('0100007F:0016', '0A', 100),
    tcp6: INET_HEADER,
    udp: INET_HEADER + inetLine('00000000:0044', '07', 102),
    udp6: INET_HEADER,
    raw: INET_HEADER,
    raw6: INET_HEADER,
    unix: UNIX_HEADER + '00000000c8cb5c4a: 00000002 00000000 00000000 0001 03  101 /run/s1\n',
    netlink: NETLINK,
  };
  for (const pid of [1, 2]) {
    g.addFile(`/proc/${pid}/comm`, `proc${pid}\n`);
    g.addLink(`/proc/${pid}/ns/net`, NS);
    for (const [t, c] of Object.entries(tables)) g.addFile(`/proc/${pid}/net/${t}`, c);
  }
  const sock = (pid: number, fd: number, inode: number, proto: string) => {
    g.addLink(`/proc/${pid}/fd/${fd}`, `socket:[${inode}]`);
    g.xattrs.set(`/proc/${pid}/fd/${fd}`, new Map([['system.sockprotoname', proto]]));
  };
  g.addLink('/proc/1/fd/0', '/dev/null');
  sock(1, 3, 100, 'TCP');
  sock(1, 4, 101, 'UNIX-STREAM');
  sock(2, 3, 102, 'UDP');
  g.addLink('/proc/self/ns/net', NS);
  g.addFile('/proc/modules', 'unix_diag 16384 0 - Live 0x0\nudp_diag 16384 0 - Live 0x0\n');
  g.addFile(
    '/lib/modules/6.1.0-fake/modules.builtin',
    'kernel/net/core/sock_diag.ko\nkernel/net/ipv4/inet_diag.ko\nkernel/net/ipv4/tcp_diag.ko\n',
  );
  g.diag = new Map([
    ['2/6', [100n]],
    ['10/6', []],
    ['2/17', [102n]],
    ['10/17', []],
    ['1/0', [101n]],
  ]);
  return g;
}

async function run(g: FakeGuest) {
  const r = await runPlugin(sockxview, { executor: g });
  return { rows: records(r.table), runs: r.runs };
}

describe('sockxview', () => {
  it('flags nothing on a clean guest; every socket is in every view that applies', async () => {
    const { rows } = await run(netGuest());
    expect(
      rows.map((r) => [r.Inode, r.Proto, r.Table, r.fd_table, r.proc_net, r.sock_diag, r.HIDDEN]),
    ).toEqual([
      [100n, 'TCP', 'tcp', true, true, true, false],
      [101n, 'UNIX-STREAM', 'unix', true, true, true, false],
      [102n, 'UDP', 'udp', true, true, true, false],
      [9960n, 'NETLINK', 'netlink', false, true, expect.anything(), false],
    ]);
    expect(rows[0]).toMatchObject({ Local: '127.0.0.1:22', Holders: '1/3', EVIDENCE: '' });
    expect(isAbsent(rows[3].sock_diag)).toBe(true);
    expect(rows[3].EVIDENCE).toMatch(/held by no visible process/);
  });

  it('flags a listener left out of /proc/net/tcp, with the evidence', async () => {
    const g = netGuest();
    for (const pid of [1, 2]) g.addFile(`/proc/${pid}/net/tcp`, INET_HEADER);
    const { rows } = await run(g);
    const hidden = rows.filter((r) => r.HIDDEN);
    expect(hidden.map((r) => r.Inode)).toEqual([100n]);
    expect(hidden[0]).toMatchObject({ fd_table: true, proc_net: false, sock_diag: true, Table: 'tcp' });
    expect(hidden[0].EVIDENCE).toBe('missing from proc_net; seen by fd_table (1/3), sock_diag');
  });

  it('flags a socket the sock_diag dump leaves out', async () => {
    const g = netGuest();
    g.diag!.set('1/0', []);
    const { rows } = await run(g);
    expect(rows.filter((r) => r.HIDDEN).map((r) => [r.Inode, r.EVIDENCE])).toEqual([
      [101n, 'missing from sock_diag; seen by fd_table (1/4), proc_net unix'],
    ]);
  });

  it('does not flag a socket that shows in one view before the others', async () => {
    const g = netGuest();
    // The first read of the tcp table comes before the listener's line is there.
    let reads = 0;
    const full = INET_HEADER + inetLine('0100007F:0016', '0A', 100);
    g.addFile('/proc/1/net/tcp', () => (reads++ === 0 ? INET_HEADER : full));
    g.addFile('/proc/2/net/tcp', () => (reads++ === 0 ? INET_HEADER : full));
    const { rows } = await run(g);
    expect(rows.filter((r) => r.HIDDEN)).toEqual([]);
    expect(reads).toBeGreaterThan(2);
  });

  it('opens no netlink socket without the diag modules, and says why', async () => {
    const g = netGuest();
    g.addFile('/proc/modules', '');
    g.remove('/lib/modules');
    const r = await runPlugin(sockxview, { executor: g });
    const rows = records(r.table);
    expect(g.runs.flat().some((c) => c.nr === sysno('socket'))).toBe(false);
    expect(rows.filter((x) => x.HIDDEN)).toEqual([]);
    expect(rows.every((x) => isAbsent(x.sock_diag))).toBe(true);
  });
});

describe('sock_diag codec', () => {
  it('encodes dump requests ss would send and decodes inodes', () => {
    const tcp = encodeSockDiagRequest({ family: AF_INET, protocol: IPPROTO_TCP });
    expect(tcp.length).toBe(72);
    expect([...tcp.subarray(4, 8)]).toEqual([20, 0, 0x01, 0x03]);
    expect(encodeSockDiagRequest({ family: AF_UNIX }).length).toBe(40);
    const msg = new Uint8Array(16 + 72 + 20);
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, 88, true);
    dv.setUint16(4, 20, true);
    dv.setUint32(16 + 68, 4242, true);
    dv.setUint32(88, 20, true);
    dv.setUint16(92, 3, true);
    expect(decodeSockDiagChunk(msg, AF_INET)).toEqual({ inodes: [4242n], done: true });
    expect(() => decodeSockDiagChunk(msg.subarray(0, 40), AF_INET)).toThrow(RangeError);
  });
});

describe('sock_diag policy', () => {
  const int = (v: number) => ({ kind: 'int', value: BigInt(v) }) as const;
  const socketCall = (domain: number, proto: number): Call => ({
    nr: sysno('socket'),
    args: [int(domain), int(3), int(proto)],
  });
  const sendto = (fd: Call['args'][number], data: Uint8Array): Call => ({
    nr: sysno('sendto'),
    args: [fd, { kind: 'in', data }, int(data.length), int(0), int(0), int(0)],
  });
  const recv = (fd: Call['args'][number], flags: number): Call => ({
    nr: sysno('recvfrom'),
    args: [fd, { kind: 'out', size: 64, keep: 'ret' }, int(64), int(flags), int(0), int(0)],
  });
  const opts = { plugin: 't' };
  const req = encodeSockDiagRequest({ family: AF_INET, protocol: IPPROTO_TCP });
  const check = (batch: Call[]) => batch.map((c) => checkCall(c, opts, batch)?.message);

  it('allows the dump on a socket of the same batch', () => {
    const ref = { kind: 'result', index: 0 } as const;
    expect(check([socketCall(16, 4), sendto(ref, req), recv(ref, 0x40)])).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('refuses other sockets, fd numbers, SOCK_DESTROY, and flags', () => {
    const ref = { kind: 'result', index: 0 } as const;
    expect(check([socketCall(2, 6)])[0]).toMatch(/socket other than/);
    expect(check([socketCall(16, 0)])[0]).toMatch(/socket other than/);
    // An fd number could be a socket the shadow inherited from its victim.
    expect(check([sendto(int(3), req)])[0]).toMatch(/NETLINK_SOCK_DIAG socket opened in the same batch/);
    expect(check([recv(int(3), 0x40)])[0]).toMatch(/NETLINK_SOCK_DIAG socket opened in the same batch/);
    const destroy = new Uint8Array(req);
    destroy[4] = 21;
    expect(check([socketCall(16, 4), sendto(ref, destroy)])[1]).toMatch(/dump request/);
    const two = new Uint8Array(req.length * 2);
    two.set(req);
    two.set(req, req.length);
    expect(check([socketCall(16, 4), sendto(ref, two)])[1]).toMatch(/dump request/);
    expect(check([socketCall(16, 4), recv(ref, 0x2)])[1]).toMatch(/MSG_DONTWAIT/);
  });
});
