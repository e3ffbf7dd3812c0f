/**
 * TEST DOUBLE plumbing: a unix-socket server in a temporary directory for the fake QEMU
 * endpoints (QMP, gdbstub). It closes itself, its clients and its directory when the
 * test that started it finishes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';

export interface FakeUnixServer {
  sockPath: string;
  /** Every client connection accepted so far. */
  sockets: net.Socket[];
  close(): Promise<void>;
}

/** Listens on a fresh socket; `onConnection` serves each client (socket errors are ignored). */
export async function listenUnix(
  name: string,
  onConnection: (sock: net.Socket) => void,
): Promise<FakeUnixServer> {
  const dir = mkdtempSync(path.join(tmpdir(), `vmi-${name}-`));
  const sockPath = path.join(dir, `${name}.sock`);
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  };
  onTestFinished(close);
  return { sockPath, sockets, close };
}
