import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WakeLine } from '../../src/shadow/wake-line.js';

/** A stand-in for QEMU's wake-up chardev: a unix socket server that records what arrives. */
async function chardev(path: string): Promise<{ server: net.Server; bytes: () => number }> {
  let got = 0;
  const server = net.createServer((c) => c.on('data', (d) => (got += d.length)));
  await new Promise<void>((r) => server.listen(path, r));
  return { server, bytes: () => got };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const socketPath = () => {
  const d = mkdtempSync(join(tmpdir(), 'vmi-wake-'));
  dirs.push(d);
  return join(d, 'wake.sock');
};

describe('WakeLine', () => {
  it('begin() returns at once; a poke made before the connection goes out with it', async () => {
    const path = socketPath();
    const dev = await chardev(path);
    try {
      const line = new WakeLine(path);
      line.begin();
      expect(line.usable).toBe(true);
      line.poke(); // still connecting
      await line.settled();
      await new Promise((r) => setTimeout(r, 50));
      // Sixteen bytes: the 16550's FIFO trigger level (see poke()).
      expect(dev.bytes()).toBe(16);
      line.close();
    } finally {
      dev.server.close();
    }
  });

  it('a poke with no connection begun connects first; none after close()', async () => {
    const path = socketPath();
    const dev = await chardev(path);
    try {
      const line = new WakeLine(path);
      const conns = () => new Promise<number>((r) => dev.server.getConnections((_, n) => r(n)));
      await new Promise((r) => setTimeout(r, 20));
      expect(await conns()).toBe(0); // not connected until needed
      line.poke();
      await line.settled();
      await new Promise((r) => setTimeout(r, 50));
      expect(dev.bytes()).toBe(16);
      line.close();
      line.poke();
      await line.settled();
      await new Promise((r) => setTimeout(r, 50));
      expect(dev.bytes()).toBe(16);
      expect(await conns()).toBe(0);
      expect(line.usable).toBe(false);
    } finally {
      dev.server.close();
    }
  });

  it('a missing chardev settles as unusable: no pokes, no error', async () => {
    const line = new WakeLine(socketPath());
    line.begin();
    await line.settled();
    expect(line.usable).toBe(false);
    expect(() => line.poke()).not.toThrow();
    expect(await new WakeLine(join(socketPath(), 'none')).open()).toBe(false);
  });

  it('close() while connecting leaves no waiter hanging', async () => {
    const path = socketPath();
    const dev = await chardev(path);
    try {
      const line = new WakeLine(path);
      line.begin(60_000);
      line.close();
      // Settles at once (not after the 60 s timeout), unusable.
      const t0 = Date.now();
      await line.settled();
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(line.usable).toBe(false);
    } finally {
      dev.server.close();
    }
  });
});
