/**
 * The native client of a vmi server (src/server/fast-client/vmi-client.c) without QEMU:
 * compiled here with cc, run against a scripted server on a real Unix socket, with a fake
 * `node` first on PATH that prints what it was handed. It writes a `rendered` reply's bytes
 * in order and exits with its code; sends the request the protocol says (argv, cwd,
 * render.stdoutIsTTY); hands everything else to Node with the same argv, and with
 * VMI_CLIENT_FALLBACK=1 unless it did not serve the command line at all (--qmp/--help:
 * Node may still ask a server) (no socket, a fallback reply, other commands,
 * VMI_SERVER=off, garbage or an oversized frame before any output, a server that closes
 * before answering); and after output started, a one-line error and exit 1. Also the
 * server's side: renderCliOutcome's bytes and their order, and the request check.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ResultTable } from '../../src/output/table.js';
import { encodeFrame, FrameReader, parseRequest, ProtocolError } from '../../src/serve/protocol.js';
import { renderCliOutcome } from '../../src/server/render-cli.js';

const SOURCE = join(__dirname, '..', '..', 'src', 'server', 'fast-client', 'vmi-client.c');
let work: string;
let client: string;
let rt: string;
let fakeBin: string;
const GUEST = 'nc-guest';

interface Ran {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function runClient(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(client, args, {
      cwd: work,
      env: { PATH: `${fakeBin}:/usr/bin:/bin`, VMI_RUNTIME_ROOT: rt, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // A client that hangs fails its test instead of the suite's time.
    const timer = setTimeout(() => {
      err += '[killed by the test after 20 s]';
      child.kill('SIGKILL');
    }, 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

let server: net.Server | undefined;
const requests: unknown[] = [];
/**
 * A scripted server: `answer` gets every request but the status request that rides along
 * with each `cli` one, which is answered here (unless `mute`: a server that accepts and
 * reads, but never answers anything).
 */
function serve(
  answer: (req: Record<string, unknown>, write: (b: Buffer) => void, sock: net.Socket) => void,
  opts: { mute?: boolean } = {},
): Promise<void> {
  const path = join(rt, `vmi-${process.getuid?.() ?? 0}`, 'guests', GUEST, 'serve.sock');
  mkdirSync(join(path, '..'), { recursive: true });
  rmSync(path, { force: true });
  server = net.createServer((sock) => {
    const reader = new FrameReader(1 << 20);
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      for (const m of reader.push(d) as Record<string, unknown>[]) {
        if (opts.mute) continue;
        if (m.op === 'status') {
          sock.write(encodeFrame({ v: 1, id: m.id, ok: true, status: { pid: 4242 } }));
          continue;
        }
        requests.push(m);
        answer(m, (b) => sock.write(b), sock);
      }
    });
  });
  return new Promise((r) => server!.listen(path, r));
}

const frame = (m: Record<string, unknown>): Buffer => encodeFrame({ v: 1, id: 1, ...m });
const RUN = ['plugins', 'run', 'pslist', '--guest', GUEST];
/** asked: the client says it asked the server (VMI_CLIENT_FALLBACK=1), so Node must not. */
const handedToNode = (r: Ran, args: string[], asked = true): void => {
  expect(r.stdout.toString()).toBe(`NODE fallback=${asked ? '1' : ''} ${args.join(' ')}\n`);
  expect(r.code).toBe(0);
};

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'vmi-nc-'));
  rt = join(work, 'rt');
  fakeBin = join(work, 'fakebin');
  mkdirSync(join(work, 'dist'), { recursive: true });
  mkdirSync(fakeBin);
  client = join(work, 'dist', 'vmi-client');
  const cc = spawnSync(process.env.CC ?? 'cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', client, SOURCE], {
    encoding: 'utf8',
  });
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
  // `node RUNJS ARGS…` → one line naming the hand-over; RUNJS must be ROOT/bin/run.js.
  writeFileSync(
    join(fakeBin, 'node'),
    `#!/bin/sh\n[ "$1" = "${work}/bin/run.js" ] || { echo "wrong run.js: $1"; exit 9; }\nshift\necho "NODE fallback=$VMI_CLIENT_FALLBACK $*"\n`,
  );
  chmodSync(join(fakeBin, 'node'), 0o755);
});

afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
  requests.length = 0;
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('native client', () => {
  it('writes the rendered bytes in order and exits with the code; the request is the protocol’s', async () => {
    await serve((_req, write) => {
      write(frame({ progress: 'waiting for guest' }));
      write(
        frame({
          ok: true,
          serverPid: 4242,
          rendered: {
            writes: [
              [2, Buffer.from('vmi: error: one\n')],
              [1, Buffer.from([0, 1, 2, 255, 10])],
              [2, Buffer.from('vmi: note\n')],
            ],
            exitCode: 3,
          },
        }),
      );
    });
    const r = await runClient([...RUN, '--timing', 'ünï']);
    expect(r.code).toBe(3);
    expect([...r.stdout]).toEqual([0, 1, 2, 255, 10]);
    const sock = join(rt, `vmi-${process.getuid?.() ?? 0}`, 'guests', GUEST, 'serve.sock');
    expect(r.stderr).toBe(
      `vmi: waiting for guest\nvmi: through the vmi server pid 4242 at ${sock}\nvmi: error: one\nvmi: note\n`,
    );
    expect(requests).toEqual([
      {
        v: 1,
        id: 1,
        op: 'cli',
        argv: ['pslist', '--guest', GUEST, '--timing', 'ünï'],
        cwd: work,
        render: { stdoutIsTTY: false },
      },
    ]);
    // The server's own check accepts it.
    expect(parseRequest(requests[0])).toMatchObject({ op: 'cli', render: { stdoutIsTTY: false } });
  });

  it('hands a fallback reply to Node (with --timing, says why)', async () => {
    await serve((_req, write) => write(frame({ ok: true, fallback: '--list' })));
    const args = ['plugins:run', 'pslist', `-g${GUEST}`, '--timing'];
    const r = await runClient(args);
    handedToNode(r, args);
    expect(r.stderr).toMatch(/^vmi: not through the vmi server at \S+serve\.sock: --list\n$/);
  });

  it('hands to Node without connecting: no socket, --qmp, --help, other commands, VMI_SERVER=off', async () => {
    for (const args of [RUN, ['lab', 'up'], []]) {
      handedToNode(await runClient(args), args);
    }
    // Command lines this client does not serve: Node's own fast path may still send them to
    // a server (a foreign QEMU's, found by the sha256 of its QMP path), so no fallback mark.
    for (const args of [
      ['plugins', 'run', 'pslist', '--qmp', '/x.sock'],
      ['plugins', 'run', '--help'],
      ['plugins', 'run', 'pslist', '-g', 'a', '-g', 'b'],
      ['plugins', 'run', 'pslist', '--guest=../x'],
    ]) {
      handedToNode(await runClient(args), args, false);
    }
    await serve(() => {
      throw new Error('must not be asked');
    });
    handedToNode(await runClient(RUN, { VMI_SERVER: 'off' }), RUN);
    handedToNode(await runClient(RUN, { VMI_TRUST_PACKS: '1' }), RUN);
    expect(requests).toEqual([]);
  });

  it('hands to Node when the server accepts but answers nothing, not even status, for 2 s', async () => {
    await serve(() => undefined, { mute: true });
    const t0 = Date.now();
    const r = await runClient([...RUN, '--timing']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    handedToNode(r, [...RUN, '--timing']);
    const sock = join(rt, `vmi-${process.getuid?.() ?? 0}`, 'guests', GUEST, 'serve.sock');
    expect(r.stderr).toBe(`vmi: not through the vmi server at ${sock}: no answer in 2000 ms\n`);
  });

  it('hands to Node when the server goes away, sends garbage or an oversized frame before any output', async () => {
    await serve((_req, _write, sock) => sock.destroy());
    handedToNode(await runClient(RUN), RUN);
    await new Promise<void>((r) => server!.close(() => r()));
    const garbage = [
      Buffer.from([0, 0, 0, 9, 0xcb, 1, 2, 3, 4, 5, 6, 7, 8]), // a float64
      Buffer.from([0xff, 0xff, 0xff, 0xff]), // 4 GiB
      Buffer.from([0, 0, 0, 5, 0xdf, 0xff, 0xff, 0xff, 0xff]), // a map of 2^32-1 pairs in 5 bytes
      Buffer.from([0, 0, 0, 3, 0xa5, 0x68, 0x69]), // a truncated str
      frame({
        ok: false,
        error: { name: 'ProtocolError', message: 'protocol version 1 (this server speaks 2)' },
      }),
      encodeFrame({ v: 2, id: 1, ok: true, fallback: 'x' }),
      frame({ ok: true, cli: { tables: [] } }), // a server that did not render
    ];
    for (const g of garbage) {
      await serve((_req, write) => write(g));
      handedToNode(await runClient(RUN), RUN);
      await new Promise<void>((r) => server!.close(() => r()));
      server = undefined;
    }
  });

  it('after output started: a one-line error and exit 1', async () => {
    await serve((_req, write, sock) => {
      write(frame({ progress: 'waiting' }));
      write(Buffer.from([0, 0, 0, 1, 0xc1]));
      sock.end();
    });
    let r = await runClient(RUN);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^vmi: waiting\nvmi: error: vmi server at \S+: a MessagePack type this client does not read[^\n]*\n$/,
    );
    await new Promise<void>((res) => server!.close(() => res()));
    await serve((_req, write, sock) => {
      write(frame({ progress: 'waiting' }));
      sock.end();
    });
    r = await runClient(RUN);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^vmi: waiting\nvmi: error: vmi server at \S+: the server went away before its reply\n$/,
    );
  });

  it('prints an error reply as the command does: one line, exit 1', async () => {
    await serve((_req, write) =>
      write(frame({ ok: false, error: { name: 'ServerClosingError', message: 'shutting  \n  down\nnow' } })),
    );
    const r = await runClient(RUN);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('vmi: error: shutting down now\n');
    expect(r.stdout.length).toBe(0);
  });

  it('stops quietly when the reader of stdout goes away', async () => {
    const big = Buffer.alloc(4 << 20, 0x61);
    await serve((_req, write) => write(frame({ ok: true, rendered: { writes: [[1, big]], exitCode: 0 } })));
    // Async: the scripted server answers from this process's event loop.
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('sh', ['-c', `"${client}" "$@" | head -c 10; echo " $?"`, 'sh', ...RUN], {
        env: { PATH: `${fakeBin}:/usr/bin:/bin`, VMI_RUNTIME_ROOT: rt },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.stdout).toBe('aaaaaaaaaa 0\n');
    expect(r.stderr).toBe('');
  });
});

describe('renderCliOutcome (the server side)', () => {
  const table: ResultTable = {
    plugin: 'pslist',
    columns: [
      { name: 'PID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
    ],
    rows: [
      [1, 'init'],
      [2, 'kthreadd'],
    ],
    errors: ['row 3 unreadable'],
    metadata: {},
  };
  const outcome = {
    tables: [table],
    problems: ['psaux: boom'],
    notes: ['timing 1 ms'],
    exitCode: 0,
    mode: 0o600,
  };

  it('is problems, the table, its errors, the notes, in order', async () => {
    const r = await renderCliOutcome({ ...outcome, format: 'csv' }, { stdoutIsTTY: false });
    expect(r.exitCode).toBe(0);
    expect(r.writes.map(([fd, b]) => [fd, Buffer.from(b).toString()])).toEqual([
      [2, 'vmi: error: psaux: boom\n'],
      [1, 'PID,COMM\n1,init\n2,kthreadd\n'],
      [2, 'vmi: pslist: row 3 unreadable\nvmi: timing 1 ms\n'],
    ]);
  });

  it('refuses binary output to a terminal as the command does; writes -o files atomically', async () => {
    const tty = await renderCliOutcome({ ...outcome, format: 'arrow' }, { stdoutIsTTY: true });
    expect(tty.exitCode).toBe(1);
    expect(tty.writes.map(([fd, b]) => [fd, Buffer.from(b).toString()])).toEqual([
      [
        2,
        'vmi: error: psaux: boom\nvmi: error: arrow output is binary and stdout is a terminal; write it to a file with -o FILE or pipe it\n',
      ],
    ]);
    const file = join(work, 'out.json');
    const r = await renderCliOutcome(
      { ...outcome, format: 'json', output: file, mode: 0o640 },
      { stdoutIsTTY: true },
    );
    expect(r.writes.every(([fd]) => fd === 2)).toBe(true);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toHaveLength(2);
    expect(statSync(file).mode & 0o777).toBe(0o640);
  });

  it('the request check: render must be { stdoutIsTTY: bool }', () => {
    const base = { v: 1, id: 1, op: 'cli', argv: [], cwd: '/' };
    expect(parseRequest({ ...base, render: { stdoutIsTTY: true } })).toMatchObject({
      render: { stdoutIsTTY: true },
    });
    expect(() => parseRequest({ ...base, render: { stdoutIsTTY: 1 } })).toThrow(ProtocolError);
    expect(() => parseRequest({ ...base, render: 'yes' })).toThrow(ProtocolError);
  });
});
