/**
 * The vmi server (src/serve) without QEMU: the protocol's framing and bounds, the table
 * codec (every cell kind comes back the same), request checks, and a server over a real
 * Unix socket in front of an API Guest with a fake session: runs from two connections take
 * turns, a bad request gets an error reply and the server goes on, an oversized frame
 * closes only its connection, a client that dies mid-request does not harm the server, the
 * socket is 0600 and removed at close, a stale socket is replaced and a live one refused,
 * and openGuest goes through a running server.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest, openGuest, type GuestInternals } from '../../src/api/guest.js';
import { AbsentValue, unreadable } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import type { AttachedSession } from '../../src/runner/run-plugins.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { ServerConnection, ServerRequestError, serverSocketPath } from '../../src/serve/client.js';
import { servedTarget, serveCli } from '../../src/server/fast-cli.js';
import {
  decodeCli,
  decodeTable,
  encodeCli,
  encodeFrame,
  encodeTable,
  FrameReader,
  MAX_REQUEST_BYTES,
  parseRequest,
  PROTOCOL_VERSION,
  ProtocolError,
  STATUS_TIMEOUT_MS,
} from '../../src/serve/protocol.js';
import { ServerRunningError, VmiServer } from '../../src/server/server.js';
import { foreignRunDir } from '../../src/targets/qmp.js';
import { guestsRoot } from '../../src/lab/host.js';
import { addFakeProcess, fakeProcGuest } from './helpers/fake-guest.js';

const TABLE: ResultTable = {
  plugin: 'pstree',
  columns: [
    { name: 'PID', type: 'int32', description: 'pid' },
    { name: 'OFF', type: 'hex64' },
    { name: 'SIZE', type: 'int64' },
    { name: 'NAME', type: 'utf8' },
    { name: 'AT', type: 'timestamp_ms' },
    { name: 'OK', type: 'bool' },
    { name: 'F', type: 'float64' },
  ],
  rows: [
    [1, 2n ** 64n - 1n, -(2n ** 63n), 'init \\x80', new Date(1700000000123), true, 1.5],
    [2, 0n, 5n, unreadable('ESRCH: /proc/2/stat'), null, false, Number.NaN],
    [3, 1n, 2 ** 40, new AbsentValue('not_available'), new Date(0), null, 1e-300],
  ],
  depths: [0, 1, 1],
  errors: ['one error'],
  metadata: { guest: 'g', 'shadow.pid': '77' },
};

const frame = (m: unknown): Buffer => encodeFrame(m);

describe('protocol framing', () => {
  it('splits a byte stream into messages, whatever the chunking', () => {
    const bytes = Buffer.concat([frame({ a: 1 }), frame({ b: 'x'.repeat(1000) }), frame([1n, null])]);
    for (const step of [1, 3, 7, bytes.length]) {
      const r = new FrameReader(MAX_REQUEST_BYTES);
      const got: unknown[] = [];
      for (let i = 0; i < bytes.length; i += step) got.push(...r.push(bytes.subarray(i, i + step)));
      expect(got).toEqual([{ a: 1 }, { b: 'x'.repeat(1000) }, [1n, null]]);
      expect(r.pending).toBe(0);
    }
  });

  it('refuses a frame over the bound before reading its body, and a body that is not MessagePack', () => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_REQUEST_BYTES + 1);
    expect(() => new FrameReader(MAX_REQUEST_BYTES).push(head)).toThrow(ProtocolError);
    const bad = Buffer.from([0, 0, 0, 1, 0x92]); // an array of two, then nothing
    expect(() => new FrameReader(MAX_REQUEST_BYTES).push(bad)).toThrow(ProtocolError);
  });
});

describe('table codec', () => {
  it('brings every cell kind back as it was (bigint, Date, absent values, depths)', () => {
    const r = new FrameReader(1 << 20);
    const [wire] = r.push(frame(encodeTable(TABLE)));
    const back = decodeTable(wire);
    expect(back.rows[0][1]).toBe(2n ** 64n - 1n);
    expect(back.rows[0][2]).toBe(-(2n ** 63n));
    expect((back.rows[0][4] as Date).getTime()).toBe(1700000000123);
    expect(back.rows[1][3]).toBeInstanceOf(AbsentValue);
    expect(back.rows[1][3]).toEqual(unreadable('ESRCH: /proc/2/stat'));
    expect((back.rows[2][3] as AbsentValue).reason).toBeUndefined();
    expect(Number.isNaN(back.rows[1][6])).toBe(true);
    expect(back).toEqual(TABLE);
  });

  it('rejects malformed tables: a short row, an unknown column type, a cell that is not a value', () => {
    const w = encodeTable(TABLE);
    expect(() => decodeTable({ ...w, rows: [[1]] })).toThrow(ProtocolError);
    expect(() => decodeTable({ ...w, columns: [{ name: 'X', type: 'evil' }] })).toThrow(ProtocolError);
    expect(() => decodeTable({ ...w, rows: w.rows.map((r) => [...r.slice(0, 6), { x: 1 }]) })).toThrow(
      ProtocolError,
    );
    expect(() => decodeTable({ ...w, metadata: { a: 1 } })).toThrow(ProtocolError);
    expect(() => decodeCli({ tables: [], problems: [], notes: [], exitCode: 'x' })).toThrow(ProtocolError);
    const cli = { tables: [TABLE], problems: ['p'], notes: [], exitCode: 3, format: 'quick', mode: 0o600 };
    const [wireCli] = new FrameReader(1 << 20).push(frame(encodeCli(cli)));
    expect(decodeCli(wireCli)).toEqual(cli);
  });
});

describe('requests', () => {
  it('checks version, op and bounds', () => {
    const v = PROTOCOL_VERSION;
    expect(parseRequest({ v, id: 4, op: 'status' })).toEqual({ v, id: 4, op: 'status' });
    expect(() => parseRequest({ v: 99, id: 1, op: 'status' })).toThrow(/version 99/);
    expect(() => parseRequest({ v, id: 1, op: 'shell' })).toThrow(/unknown op/);
    expect(() => parseRequest({ v, id: 1, op: 'run', calls: [] })).toThrow(ProtocolError);
    expect(() => parseRequest({ v, id: 1, op: 'cli', argv: Array(300).fill('x'), cwd: '/' })).toThrow(
      ProtocolError,
    );
    expect(() => parseRequest({ v, id: 1, op: 'cli', argv: ['pslist'], cwd: 'rel' })).toThrow(/absolute/);
    expect(() => parseRequest('x')).toThrow(ProtocolError);
  });

  it("carries a run request's settings, checked: limits are positive integers, flags booleans", () => {
    const v = PROTOCOL_VERSION;
    const calls = [{ plugin: 'pslist' }];
    const settings = { runLimits: { maxRows: 3 }, includeShadow: true, allowWrite: false };
    expect(parseRequest({ v, id: 2, op: 'run', calls, settings })).toEqual({
      v,
      id: 2,
      op: 'run',
      calls: [{ plugin: 'pslist', options: {} }],
      arrow: false,
      settings,
    });
    expect(parseRequest({ v, id: 2, op: 'run', calls })).not.toHaveProperty('settings');
    for (const bad of [
      'x',
      { includeShadow: 'yes' },
      { runLimits: 5 },
      { runLimits: { maxRows: 0 } },
      { runLimits: { timeoutMs: 1.5 } },
      { runLimits: { maxReadBytes: -1 } },
    ])
      expect(() => parseRequest({ v, id: 2, op: 'run', calls, settings: bad }), JSON.stringify(bad)).toThrow(
        ProtocolError,
      );
  });

  it('finds the socket where the lab and the foreign targets keep their runtime directories', () => {
    expect(serverSocketPath({ lab: 'a' })).toBe(join(guestsRoot(), 'a', 'serve.sock'));
    expect(serverSocketPath({ qmp: 'rel/q.sock' })).toBe(join(foreignRunDir('rel/q.sock'), 'serve.sock'));
  });

  it('scans a plugins run command line for the guest it names, and leaves the rest to the command', () => {
    expect(servedTarget(['pslist'])).toEqual({ lab: 'lab' });
    expect(servedTarget(['pslist', '--guest', 'a', '-r', 'json'])).toEqual({ lab: 'a' });
    expect(servedTarget(['--guest=b', 'pslist'])).toEqual({ lab: 'b' });
    expect(servedTarget(['-gc', 'pslist'])).toEqual({ lab: 'c' });
    expect(servedTarget(['pslist', '--qmp', '/q.sock'])).toEqual({ qmp: '/q.sock' });
    expect(servedTarget(['pslist', '-g', 'a', '-g', 'b'])).toBeUndefined();
    expect(servedTarget(['pslist', '--help'])).toBeUndefined();
    expect(servedTarget(['--list'])).toBeUndefined();
    expect(servedTarget(['pslist', '--capture', 'x.vmicap'])).toBeUndefined();
    expect(servedTarget(['pslist', '--guest'])).toBeUndefined();
  });
});

const FAKE: InspectedGuest = {
  name: 'fake',
  qmpSocket: '/nonexistent/qmp.sock',
  ramSize: 0,
  runDir: '/nonexistent',
};

function fakeGuest(): { guest: Guest; maxConcurrent: () => number; attaches: () => number } {
  const g = fakeProcGuest(3);
  addFakeProcess(g, 1, 'init');
  addFakeProcess(g, 2, 'sh');
  addFakeProcess(g, 3, 'sleep');
  let inFlight = 0;
  let max = 0;
  let attaches = 0;
  const internals: GuestInternals = {
    attach: async () => {
      attaches++;
      max = Math.max(max, ++inFlight);
      const stats = {
        attachMs: 1,
        batches: 0,
        calls: 0,
        runMs: 0,
        transport: 'doorbell',
        shadowPid: 999,
        victimPid: 0,
        recovered: false,
        reused: attaches > 1,
      } as SessionStats;
      const session: AttachedSession = {
        stats,
        run: async (calls) => {
          await new Promise((r) => setTimeout(r, 20));
          return g.run(calls);
        },
        async detach() {
          inFlight--;
        },
      };
      return session;
    },
    stopShadow: async () => undefined,
  };
  const guest = new Guest({ guest: FAKE, close: async () => {} }, { keepShadow: true }, internals);
  return { guest, maxConcurrent: () => max, attaches: () => attaches };
}

function rawClient(
  path: string,
): Promise<{ s: net.Socket; next: () => Promise<Record<string, unknown>>; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path });
    const r = new FrameReader(1 << 24);
    const queue: Record<string, unknown>[] = [];
    const waiters: ((m: Record<string, unknown>) => void)[] = [];
    const closed = new Promise<void>((res) => s.on('close', () => res()));
    s.on('data', (c: Buffer) => {
      for (const m of r.push(c) as Record<string, unknown>[]) {
        const w = waiters.shift();
        if (w) w(m);
        else queue.push(m);
      }
    });
    s.on('error', () => undefined);
    s.once('connect', () =>
      resolve({
        s,
        next: () => new Promise((res) => (queue.length ? res(queue.shift()!) : waiters.push(res))),
        closed,
      }),
    );
    s.once('error', reject);
  });
}

describe('vmi server over a Unix socket (fake guest)', () => {
  let dir: string;
  let oldRoot: string | undefined;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmi-serve-test-'));
    oldRoot = process.env.VMI_RUNTIME_ROOT;
    process.env.VMI_RUNTIME_ROOT = dir;
  });
  afterAll(() => {
    if (oldRoot === undefined) delete process.env.VMI_RUNTIME_ROOT;
    else process.env.VMI_RUNTIME_ROOT = oldRoot;
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves runs from two connections one at a time, survives bad requests and dead clients', async () => {
    const f = fakeGuest();
    const socketPath = serverSocketPath({ lab: 'fake' });
    const server = await VmiServer.listen({ socketPath, guest: f.guest, kind: 'serve' });
    try {
      expect(statSync(socketPath).mode & 0o777).toBe(0o600);
      const a = (await ServerConnection.connect(socketPath))!;
      const b = (await ServerConnection.connect(socketPath))!;
      const [ra, rb] = await Promise.all([
        a.request({ op: 'run', calls: [{ plugin: 'pslist' }] }),
        b.request({ op: 'run', calls: [{ plugin: 'pslist', options: { pid: [2] } }] }),
      ]);
      expect(f.maxConcurrent()).toBe(1);
      const ta = decodeTable((ra.results as { table: unknown }[])[0].table);
      const tb = decodeTable((rb.results as { table: unknown }[])[0].table);
      expect(ta.rows.map((r) => r[0])).toEqual([1, 2, 3]);
      expect(tb.rows.map((r) => r[0])).toEqual([2]);
      expect(ta.metadata.guest).toBe('fake');

      // A bad request: an error reply, and the same connection is served afterwards.
      await expect(a.request({ op: 'format-disk' })).rejects.toThrow(ServerRequestError);
      await expect(a.request({ op: 'run', calls: [{ plugin: 'nosuch' }] })).rejects.toThrow(/nosuch/);
      const st = (await a.request({ op: 'status' })).status as { requests: number; guest: string };
      expect(st.guest).toBe('fake');

      // An oversized frame closes that connection only.
      const raw = await rawClient(socketPath);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(MAX_REQUEST_BYTES + 1);
      raw.s.write(head);
      expect(((await raw.next()).error as { name: string }).name).toBe('ProtocolError');
      await raw.closed;

      // A client that dies mid-request: the server finishes the run and serves the next one.
      const dying = await rawClient(socketPath);
      dying.s.write(frame({ v: PROTOCOL_VERSION, id: 1, op: 'run', calls: [{ plugin: 'pslist' }] }));
      await new Promise((r) => setTimeout(r, 5));
      dying.s.destroy();
      const after = await b.request({ op: 'run', calls: [{ plugin: 'pslist' }] });
      expect((after.results as unknown[]).length).toBe(1);
      a.close();
      b.close();
    } finally {
      await server.close();
    }
    expect(() => statSync(socketPath)).toThrow();
  });

  it('replaces a stale socket, refuses a live server and a path that is not a socket', async () => {
    const socketPath = serverSocketPath({ lab: 'stale' });
    const f = fakeGuest();
    const first = await VmiServer.listen({ socketPath, guest: f.guest, kind: 'serve' });
    await expect(VmiServer.listen({ socketPath, guest: f.guest, kind: 'serve' })).rejects.toThrow(
      ServerRunningError,
    );
    // A killed server leaves its socket file: simulate by closing the listener without unlinking.
    await new Promise<void>((r) => (first as unknown as { server: net.Server }).server.close(() => r()));
    const stale = net.createServer();
    await new Promise<void>((r) => stale.listen(socketPath + '.x', () => r()));
    stale.close();
    // The path still exists, nothing accepts: connect says there is no server.
    writeFileSync(join(dir, 'plain'), 'x');
    expect(await ServerConnection.connect(socketPath)).toBeUndefined();
    const second = await VmiServer.listen({ socketPath, guest: f.guest, kind: 'serve' });
    await second.close();
    await expect(
      VmiServer.listen({ socketPath: join(dir, 'plain'), guest: f.guest, kind: 'serve' }),
    ).rejects.toThrow(/not a socket/);
  });

  it('openGuest goes through a running server of the guest, and attaches itself with server: false', async () => {
    const f = fakeGuest();
    const socketPath = serverSocketPath({ lab: 'viaserver' });
    const server = await VmiServer.listen({ socketPath, guest: f.guest, kind: 'serve' });
    try {
      const g = await openGuest('viaserver');
      expect(g.serverPid).toBe(process.pid);
      const r = await g.run('pslist', { pid: [1, 3] });
      expect(r.table.rows.map((row) => row[0])).toEqual([1, 3]);
      expect(r.arrow.numRows).toBe(2);
      const all = await g.runAll([{ plugin: 'pslist' }, { plugin: 'nosuch-but-checked-here' }].slice(0, 1));
      expect(all.timing.shadowPid).toBe(999);
      await g.close();
      // The run settings travel with each request and apply there (the server's Guest has none).
      const limited = await openGuest('viaserver', { runLimits: { maxRows: 1 } });
      expect(limited.serverPid).toBe(process.pid);
      await expect(limited.run('pslist')).rejects.toThrow(/row limit/);
      expect((await limited.run('pslist', { pid: [1] })).table.rows.length).toBe(1);
      await limited.close();
      // A Guest whose server goes away opens the guest itself at its next call: here there
      // is no such lab guest, so that call says so (not that the server is gone).
      const orphan = await openGuest('viaserver');
      expect(orphan.serverPid).toBe(process.pid);
      await server.close();
      await expect(orphan.run('pslist')).rejects.toThrow(/no running lab guest named 'viaserver'/);
      await orphan.close();
      await expect(openGuest('viaserver', { server: false })).rejects.toThrow(/no running lab guest/);
    } finally {
      await server.close();
    }
  });

  it('a server that accepts but never answers status is passed by within seconds, not waited for', async () => {
    const socketPath = serverSocketPath({ lab: 'mute' });
    mkdirSync(dirname(socketPath), { recursive: true });
    const mute = net.createServer((c) => c.resume()); // reads requests, answers none
    await new Promise<void>((r) => mute.listen(socketPath, r));
    try {
      const conn = await ServerConnection.connect(socketPath);
      await expect(conn!.request({ op: 'status' }, undefined, 200)).rejects.toThrow(
        /did not answer in 200 ms/,
      );
      const t0 = Date.now();
      // No server answered: openGuest attaches itself, and there is no such lab guest here.
      await expect(openGuest('mute')).rejects.toThrow(/no running lab guest/);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(STATUS_TIMEOUT_MS - 50);
      expect(Date.now() - t0).toBeLessThan(STATUS_TIMEOUT_MS + 3000);
      // The CLI's Node fast path: not served (undefined), so the command runs the ordinary way.
      mkdirSync(dirname(socketPath), { recursive: true });
      await new Promise<void>((r) => mute.close(() => r()));
      await new Promise<void>((r) => mute.listen(socketPath, r));
      const t1 = Date.now();
      expect(await serveCli(['plugins', 'run', 'pslist', '--guest', 'mute'])).toBeUndefined();
      expect(Date.now() - t1).toBeLessThan(STATUS_TIMEOUT_MS + 3000);
    } finally {
      await new Promise((r) => mute.close(r));
    }
  });
});
