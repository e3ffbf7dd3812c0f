import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { GdbClient, GdbError, GdbTimeoutError } from '../../src/qemu/gdb.js';
import { RspParser, framePacket } from '../../src/qemu/gdb-rsp.js';
import { listenUnix } from './helpers/unix-server.js';

/** A scripted fake stub: handler(payload) returns replies to send (or null for none). */
async function fakeStub(
  handler: (payload: string, sock: net.Socket) => string[] | null,
  opts: { onConnect?: (s: net.Socket) => void; nackFirst?: number } = {},
) {
  const received: string[] = [];
  let nacks = opts.nackFirst ?? 0;
  const server = await listenUnix('gdb', (s) => {
    opts.onConnect?.(s);
    const p = new RspParser();
    s.on('data', (d) => {
      for (const ev of p.feed(d)) {
        if (ev.type !== 'packet') continue;
        const payload = ev.data.toString('latin1');
        received.push(payload);
        if (nacks > 0) {
          nacks--;
          s.write('-');
          continue;
        }
        s.write('+');
        const replies = payload.startsWith('qSupported')
          ? ['PacketSize=1000;multiprocess+']
          : handler(payload, s);
        for (const r of replies ?? []) s.write(framePacket(r));
      }
    });
  });
  return { ...server, received };
}

describe('GdbClient against a fake stub', () => {
  it('drains the unsolicited stop on connect and maps E/empty replies', async () => {
    const stub = await fakeStub(
      (p) => {
        if (p === 'g') return ['00'.repeat(608)];
        if (p.startsWith('Hg')) return ['E22'];
        if (p.startsWith('Qqemu')) return [''];
        return ['OK'];
      },
      { onConnect: (s) => s.write(framePacket('T02thread:p01.01;')) },
    );
    const g = await GdbClient.connect(stub.sockPath, { timeoutMs: 1000 });
    expect(g.supported['PacketSize']).toBe('1000');
    expect((await g.readRegisters()).length).toBe(608);
    await expect(g.selectThread('g', 'p1.9')).rejects.toThrow(/Hgp1\.9 failed: E22/);
    await expect(g.setPhysicalMemoryMode(true)).rejects.toThrow('unsupported: Qqemu.PhyMemMode:1');
    // the connect-time stop was drained: a wait for a stop times out
    await expect(g.waitForStop(50)).rejects.toBeInstanceOf(GdbTimeoutError);
    g.close();
  });

  it('retransmits on nack and splits memory reads and writes', async () => {
    const stub = await fakeStub(
      (p) => {
        const m = /^m([0-9a-f]+),([0-9a-f]+)$/.exec(p);
        if (m) return ['ab'.repeat(parseInt(m[2]!, 16))];
        return ['OK'];
      },
      { nackFirst: 2 },
    );
    const g = await GdbClient.connect(stub.sockPath, { timeoutMs: 1000 });
    expect(g.stats.retransmits).toBe(2);
    const mem = await g.readMemory(0x1000n, 5000);
    expect(mem.length).toBe(5000);
    expect(mem.every((b) => b === 0xab)).toBe(true);
    expect(stub.received.filter((p) => p.startsWith('m'))).toEqual(['m1000,7ff', 'm17ff,7ff', 'm1ffe,38a']);
    await g.writeMemory(0n, new Uint8Array(4500));
    expect(stub.received.filter((p) => p.startsWith('M')).map((p) => p.split(':')[0])).toEqual([
      'M0,7d0',
      'M7d0,7d0',
      'Mfa0,1f4',
    ]);
    g.close();
  });

  it('times out a request that is never answered, and continueAndWait interrupts', async () => {
    const stub = await fakeStub((p, s) => {
      if (p === 'g') return null;
      if (p === 'c') {
        s.once('data', (d) => {
          if (d.includes(0x03)) s.write(framePacket('T02thread:p01.01;'));
        });
        return null;
      }
      return ['OK'];
    });
    const g = await GdbClient.connect(stub.sockPath, { timeoutMs: 200 });
    await expect(g.readRegisters()).rejects.toThrow(/no reply to g after 200 ms/);
    const err = await g.continueAndWait(100).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GdbTimeoutError);
    expect((err as Error).message).toMatch(/continue did not stop within 100 ms/);
    expect(g.running).toBe(false);
    expect(g.lastStop).toMatchObject({ signal: 2, thread: 'p1.1' });
    g.close();
  });

  it('rejects pending waits when the socket closes, and refuses to send while running', async () => {
    const stub = await fakeStub((p, s) => {
      if (p === 'c') setTimeout(() => s.destroy(), 30);
      return null;
    });
    const g = await GdbClient.connect(stub.sockPath, { timeoutMs: 5000 });
    await g.resume();
    await expect(g.readRegisters()).rejects.toThrow(/running/);
    await expect(g.waitForStop(5000)).rejects.toThrow(/closed/);
    await expect(g.readRegisters()).rejects.toBeInstanceOf(GdbError);
  });

  it('collects qRcmd output and reports a missing socket clearly', async () => {
    const stub = await fakeStub((p) =>
      p.startsWith('qRcmd')
        ? [
            'O' + Buffer.from('VM status: ').toString('hex'),
            'O' + Buffer.from('paused\r\n').toString('hex'),
            'OK',
          ]
        : ['OK'],
    );
    const g = await GdbClient.connect(stub.sockPath);
    expect(await g.monitor('info status')).toBe('VM status: paused\r\n');
    expect(stub.received).toContain('qRcmd,' + Buffer.from('info status').toString('hex'));
    g.close();
    await expect(GdbClient.connect('/nonexistent/g.sock')).rejects.toThrow(/\/nonexistent\/g\.sock: ENOENT/);
  });
});
