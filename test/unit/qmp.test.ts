import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { QmpClient, QmpError } from '../../src/qemu/qmp.js';
import { TimeoutError } from '../../src/util/deadline.js';
import { listenUnix } from './helpers/unix-server.js';

type Handler = (msg: Record<string, unknown>, sock: net.Socket) => void;

const GREETING = JSON.stringify({
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] },
});

async function fakeQmp(handler: Handler, opts: { greeting?: string | null } = {}) {
  return listenUnix('qmp', (s) => {
    if (opts.greeting !== null) s.write((opts.greeting ?? GREETING) + '\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (msg['execute'] === 'qmp_capabilities')
          s.write(JSON.stringify({ return: {}, id: msg['id'] }) + '\r\n');
        else handler(msg, s);
      }
    });
  });
}

describe('QmpClient', () => {
  it('matches replies by id, even out of order, and separates events', async () => {
    const pending: Record<string, unknown>[] = [];
    const srv = await fakeQmp((msg, s) => {
      pending.push(msg);
      if (pending.length === 2) {
        // answer the second first, with an event in between
        const [a, b] = pending;
        s.write(JSON.stringify({ return: { n: 2 }, id: b!['id'] }) + '\r\n');
        s.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n');
        s.write(JSON.stringify({ return: { n: 1 }, id: a!['id'] }) + '\r\n');
      }
    });
    const q = await QmpClient.connect(srv.sockPath);
    const events: string[] = [];
    q.onEvent((e) => events.push(e.event));
    const stop = q.waitForEvent('STOP', 2000);
    const [r1, r2] = await Promise.all([q.execute('one'), q.execute('two')]);
    expect(r1).toEqual({ n: 1 });
    expect(r2).toEqual({ n: 2 });
    expect(await stop).toBeUndefined();
    expect(events).toEqual(['STOP']);
    q.close();
  });

  it('maps error replies to QmpError with the class; hmp returns text', async () => {
    const srv = await fakeQmp((msg, s) => {
      if (msg['execute'] === 'human-monitor-command') {
        s.write(
          JSON.stringify({
            return: `ran ${(msg['arguments'] as Record<string, string>)['command-line']}\r\n`,
            id: msg['id'],
          }) + '\n',
        );
      } else {
        s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: 'nope' }, id: msg['id'] }) + '\n');
      }
    });
    const q = await QmpClient.connect(srv.sockPath);
    expect(await q.hmp('info status')).toBe('ran info status\r\n');
    const err = await q.execute('bogus').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect(err).toMatchObject({ qmpClass: 'CommandNotFound' });
    expect((err as Error).message).toMatch(/bogus.*nope/);
    q.close();
  });

  it('survives garbage lines and truncated JSON', async () => {
    const srv = await fakeQmp((msg, s) => {
      s.write('this is not json\n{"return": {"trunc\n[1,2]\n');
      s.write(JSON.stringify({ return: 'ok', id: 'no-such-id' }) + '\n');
      s.write(JSON.stringify({ return: 'fine', id: msg['id'] }) + '\n');
    });
    const q = await QmpClient.connect(srv.sockPath);
    expect(await q.execute('x')).toBe('fine');
    expect(q.protocolErrors.length).toBe(4);
    expect(q.protocolErrors[0]).toBeInstanceOf(QmpError);
    q.close();
  });

  it('times out a command that is never answered, naming command and socket', async () => {
    const srv = await fakeQmp(() => {});
    const q = await QmpClient.connect(srv.sockPath);
    const t0 = Date.now();
    const err = await q.execute('query-status', undefined, 150).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toBe(`QMP query-status timed out after 150 ms on ${srv.sockPath}`);
    expect(Date.now() - t0).toBeLessThan(2000);
    await expect(q.waitForEvent('STOP', 50)).rejects.toThrow(/QMP event STOP timed out after 50 ms/);
    q.close();
  });

  it('rejects pending commands when the server closes mid-command', async () => {
    const srv = await fakeQmp((_msg, s) => {
      s.write('{"return": {"partial"');
      setTimeout(() => s.destroy(), 20);
    });
    const q = await QmpClient.connect(srv.sockPath);
    const w = q.waitForEvent('STOP', 5000);
    await expect(q.execute('stop', undefined, 5000)).rejects.toThrow(/QMP stop aborted: .*closed/);
    await expect(w).rejects.toThrow(/closed/);
    await expect(q.execute('again')).rejects.toThrow(QmpError);
  });

  it('fails clearly on a missing socket, a silent server, and an error on qmp_capabilities', async () => {
    await expect(QmpClient.connect('/nonexistent/vmi/q.sock')).rejects.toThrow(
      /cannot connect to QMP socket \/nonexistent\/vmi\/q\.sock: ENOENT/,
    );
    const silent = await fakeQmp(() => {}, { greeting: null });
    await expect(QmpClient.connect(silent.sockPath, { timeoutMs: 100 })).rejects.toThrow(
      /QMP greeting timed out after 100 ms/,
    );
  });
});
