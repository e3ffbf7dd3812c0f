/**
 * `vmi serve` on a booted lab guest (docs/serve.md), against the guest's own console:
 * two `plugins run pslist` at once go through the server, both exit 0 and match the
 * console's process list; outputs (stdout, -o files, stderr, exit codes, errors) are byte
 * for byte those of the same command without a server; the API's openGuest goes through
 * it; a bad request gets an error reply and the server keeps serving; SIGINT removes the
 * socket and the shadow; SIGKILL leaves nothing in the guest but the resident shadow,
 * which the next vmi reuses, and a stale socket that the next server replaces; `vmi watch`
 * serves the guest it watches. A foreign QEMU served with --qmp: the server holds its one
 * QMP connection, and further vmi commands on it go through the server. The native client
 * (bin/vmi → dist/vmi-client, with a `node` on PATH that fails, so Node cannot have done
 * it): pslist through it matches the console, every format's bytes, stderr and exit codes
 * are those of the command without a server, and what it does not serve (no server,
 * --qmp, --help, a command line the server's parser refuses) is Node's output exactly.
 */
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openGuest } from '../../src/api/index.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { bootForeignQemu, type ForeignQemu } from '../../src/lab/foreign-qemu.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { foreignRunDir } from '../../src/targets/qmp.js';
import { serverSocketPath } from '../../src/serve/client.js';
import { encodeFrame, FrameReader, PROTOCOL_VERSION } from '../../src/serve/protocol.js';
import { PLAIN_TERMINAL, requireBuilt, ROOT, runVmi, VMI_BIN, type Ran } from './helpers/cli.js';
import {
  expectRowsMatchConsole,
  guestProcs as consoleProcs,
  guestSh,
  kworker,
  lasting,
  type GuestProc,
} from './helpers/guest-shell.js';

const NAME = 'serve-t';
const DIRECT = { ...PLAIN_TERMINAL, VMI_SERVER: 'off' };
/** The `vmi` command as npm installs it: the sh wrapper that execs the native client. */
const VMI_SH = join(ROOT, 'bin', 'vmi');

interface RanBytes {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program with stdout as bytes (binary formats), stdin and stdout not a terminal. */
function runBytes(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<RanBytes> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: ROOT,
        env: { ...process.env, ...env },
        encoding: 'buffer',
        maxBuffer: 64 << 20,
        timeout: 300_000,
      },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : 1) : 0,
          stdout,
          stderr: stderr.toString(),
        }),
    );
  });
}

interface Server {
  child: ChildProcessByStdio<null, Readable, Readable>;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startServer(target: string[] = ['--guest', NAME]): Promise<Server> {
  const child = spawn(process.execPath, [VMI_BIN, 'serve', ...target, '-v'], {
    cwd: ROOT,
    env: { ...process.env, ...PLAIN_TERMINAL },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const s: Server = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout.on('data', (d: Buffer) => (s.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (s.stderr += d.toString()));
  const deadline = Date.now() + 240_000;
  while (!s.stdout.includes('serving ')) {
    if (child.exitCode !== null) throw new Error(`vmi serve exited: ${s.stderr}`);
    if (Date.now() > deadline) throw new Error(`vmi serve never got ready: ${s.stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return s;
}

/**
 * The guest's process list from its console, without vmi's own shadow (tables leave the
 * shadow's rows out; the SIGKILL test looks for it by name).
 */
async function guestProcs(guest: LabGuest): Promise<Map<number, GuestProc>> {
  const all = await consoleProcs(guest);
  for (const [pid, p] of all) if (p.comm === 'vmi-shadow') all.delete(pid);
  return all;
}

const pslistJson = (r: Ran): Record<string, unknown>[] => JSON.parse(r.stdout) as Record<string, unknown>[];

/** The same command through the server and without it: identical bytes, stderr and exit code. */
async function expectSameBothWays(args: string[], outDirs?: [string, string]): Promise<Ran> {
  const served = await runVmi(outDirs ? [...args, '-o', `${outDirs[0]}/`] : args, { env: PLAIN_TERMINAL });
  const direct = await runVmi(outDirs ? [...args, '-o', `${outDirs[1]}/`] : args, { env: DIRECT });
  expect(served.code, `${args.join(' ')}: ${served.stderr}`).toBe(direct.code);
  expect(served.stdout, args.join(' ')).toBe(direct.stdout);
  expect(served.stderr, args.join(' ')).toBe(direct.stderr);
  if (outDirs) {
    const files = readdirSync(outDirs[0]).sort();
    expect(files.length).toBeGreaterThan(0);
    expect(readdirSync(outDirs[1]).sort()).toEqual(files);
    for (const f of files)
      expect(readFileSync(join(outDirs[0], f)).equals(readFileSync(join(outDirs[1], f))), f).toBe(true);
  }
  return served;
}

describe('vmi serve (lab guest)', () => {
  let guest: LabGuest;
  let server: Server | undefined;
  let work: string;
  const socket = (): string => serverSocketPath({ lab: NAME });

  beforeAll(async () => {
    requireBuilt('dist/commands/serve.js', 'dist/server/fast-cli.js');
    work = mkdtempSync(join(tmpdir(), 'vmi-serve-'));
    guest = await labUp({ name: NAME });
  }, 300_000);

  afterAll(async () => {
    server?.child.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
    await labDown(NAME);
  }, 120_000);

  it('serves two pslist runs at once: both exit 0 through the server and match the console', async () => {
    server = await startServer();
    expect(existsSync(socket())).toBe(true);
    const before = await guestProcs(guest);
    const args = ['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json', '--timing'];
    const [a, b] = await Promise.all([
      runVmi(args, { env: PLAIN_TERMINAL }),
      runVmi(args, { env: PLAIN_TERMINAL }),
    ]);
    const after = await guestProcs(guest);
    for (const r of [a, b]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/through the vmi server pid \d+ at /);
      expectRowsMatchConsole(pslistJson(r), before, after, 'pslist through the server');
    }
    expect(server.stderr.match(/served plugins run pslist/g)?.length).toBe(2);
  }, 300_000);

  it('writes the same bytes, stderr and exit codes with and without the server', async () => {
    server ??= await startServer();
    // Quiet, stable tables: every format, to stdout and to -o DIR/ files.
    const stable = ['plugins', 'run', 'lsmod', 'banner', 'mountinfo', '--guest', NAME];
    await expectSameBothWays([...stable, '-r', 'quick']);
    await expectSameBothWays([...stable, '-r', 'pretty']);
    for (const fmt of ['csv', 'json', 'jsonl']) {
      await expectSameBothWays(
        [...stable, '-r', fmt],
        [mkdtempSync(join(work, 's')), mkdtempSync(join(work, 'd'))],
      );
    }
    // Errors: an unknown plugin (the server's reply), a bad flag (the command's own parser).
    const unknown = await expectSameBothWays(['plugins', 'run', 'nosuch', '--guest', NAME]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^vmi: error: .*nosuch/);
    const badFlag = await expectSameBothWays(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'nope']);
    expect(badFlag.code).not.toBe(0);
    const binaryToTty = await expectSameBothWays([
      'plugins',
      'run',
      'lsmod',
      'banner',
      '--guest',
      NAME,
      '-r',
      'arrow',
    ]);
    expect(binaryToTty.code).toBe(1);
    // Arrow files: same schema and cells; only the collection time differs.
    const [sa, da] = [join(work, 'served.arrow'), join(work, 'direct.arrow')];
    const pa = ['plugins', 'run', 'lsmod', '--guest', NAME, '-r', 'arrow', '-o'];
    expect((await runVmi([...pa, sa], { env: PLAIN_TERMINAL })).code).toBe(0);
    expect((await runVmi([...pa, da], { env: DIRECT })).code).toBe(0);
    const [ts, td] = [tableFromIPC(readFileSync(sa)), tableFromIPC(readFileSync(da))];
    expect(ts.toArray().map((r) => r.toJSON())).toEqual(td.toArray().map((r) => r.toJSON()));
    const meta = (t: typeof ts): Record<string, string> =>
      Object.fromEntries([...t.schema.metadata].filter(([k]) => k !== 'vmi.collection.time'));
    expect(meta(ts)).toEqual(meta(td));
    // pslist: the rows of both paths (sorted by PID) agree with each other and the console.
    const before = await guestProcs(guest);
    const ps = ['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json'];
    const viaServer = await runVmi(ps, { env: PLAIN_TERMINAL });
    const direct = await runVmi(ps, { env: DIRECT });
    const after = await guestProcs(guest);
    // The lab guest is not still (a workload's `sleep` comes and goes, kworkers rename
    // themselves): compare the processes the console showed both times, as it named them.
    const steady = (pid: number): boolean =>
      kworker(before.get(pid)?.comm ?? '?') === kworker(after.get(pid)?.comm ?? '!');
    const key = (rows: Record<string, unknown>[]) =>
      rows
        .filter((r) => steady(r.PID as number))
        .map(
          (r) =>
            `${String(r.PID)} ${String(r.PPID)} ${kworker(String(r.COMM))} ${String(r['CREATION TIME'])}`,
        )
        .sort();
    expectRowsMatchConsole(pslistJson(viaServer), before, after, 'served');
    expectRowsMatchConsole(pslistJson(direct), before, after, 'direct');
    expect(key(pslistJson(viaServer))).toEqual(key(pslistJson(direct)));
  }, 600_000);

  it('the native client: same bytes as without a server; Node gets what it does not serve', async () => {
    requireBuilt('dist/vmi-client');
    server ??= await startServer();
    // A `node` that fails loudly first on PATH: whatever succeeds below did not use Node.
    const noNode = join(work, 'no-node');
    mkdirSync(noNode, { recursive: true });
    writeFileSync(join(noNode, 'node'), '#!/bin/sh\necho "node was run: $*" >&2\nexit 99\n');
    chmodSync(join(noNode, 'node'), 0o755);
    const NATIVE = { ...PLAIN_TERMINAL, PATH: `${noNode}:${process.env.PATH ?? ''}` };
    const native = (args: string[]): Promise<RanBytes> => runBytes(VMI_SH, args, NATIVE);
    const direct = (args: string[]): Promise<RanBytes> =>
      runBytes(process.execPath, [VMI_BIN, ...args], DIRECT);
    const same = async (args: string[], viaNative = native): Promise<RanBytes> => {
      const [a, b] = [await viaNative(args), await direct(args)];
      expect(a.stderr, args.join(' ')).toBe(b.stderr);
      expect(a.code, `${args.join(' ')}: ${a.stderr}`).toBe(b.code);
      expect(a.stdout.equals(b.stdout), `${args.join(' ')}: stdout differs`).toBe(true);
      return a;
    };

    // pslist through the native client: the console's processes, and the direct path's rows.
    const before = await guestProcs(guest);
    const ps = await native(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json', '--timing']);
    const after = await guestProcs(guest);
    expect(ps.code, ps.stderr).toBe(0);
    expect(ps.stderr).toMatch(/^vmi: through the vmi server pid \d+ at \S+serve\.sock$/m);
    const rows = JSON.parse(ps.stdout.toString()) as Record<string, unknown>[];
    expectRowsMatchConsole(rows, before, after, 'pslist through the native client');

    // Every text format, byte for byte; errors; a binary stream; -o files.
    const stable = ['plugins', 'run', 'lsmod', 'banner', 'mountinfo', '--guest', NAME];
    for (const fmt of ['quick', 'pretty', 'json', 'jsonl']) {
      const r = await same([...stable, '-r', fmt]);
      expect(r.stdout.length, `${fmt}: exit ${r.code} ${r.stderr}`).toBeGreaterThan(0);
    }
    expect(
      (await same(['plugins', 'run', 'lsmod', '--guest', NAME, '-r', 'csv'])).stdout.length,
    ).toBeGreaterThan(0);
    // Errors: several tables for a one-table format; an unknown plugin.
    expect((await same([...stable, '-r', 'csv'])).stderr).toMatch(/^vmi: error: csv output holds one table/);
    expect((await same(['plugins:run', 'nosuch', `-g${NAME}`])).code).toBe(1);
    expect((await same([...stable, '-r', 'arrows'])).stderr).toMatch(/^vmi: error: .*-o DIR\//);
    const [sd, dd] = [mkdtempSync(join(work, 'ns')), mkdtempSync(join(work, 'nd'))];
    const csvOut = [
      'plugins',
      'run',
      'lsmod',
      'banner',
      '--guest',
      NAME,
      '-r',
      'csv',
      '--output-mode',
      '0640',
    ];
    expect((await native([...csvOut, '-o', `${sd}/`])).code).toBe(0);
    expect((await direct([...csvOut, '-o', `${dd}/`])).code).toBe(0);
    const files = readdirSync(sd).sort();
    expect(files).toEqual(readdirSync(dd).sort());
    expect(files.length).toBe(2);
    for (const f of files) {
      expect(readFileSync(join(sd, f)).equals(readFileSync(join(dd, f))), f).toBe(true);
      expect(statSync(join(sd, f)).mode & 0o777).toBe(0o640);
    }
    // Arrow IPC on stdout: same cells and metadata; only the collection time differs.
    const arrowArgs = ['plugins', 'run', 'lsmod', '--guest', NAME, '-r', 'arrows'];
    const [na, da] = [await native(arrowArgs), await direct(arrowArgs)];
    expect([na.code, da.code, na.stderr]).toEqual([0, 0, '']);
    const [ta, tb] = [tableFromIPC(na.stdout), tableFromIPC(da.stdout)];
    expect(ta.toArray().map((r) => r.toJSON())).toEqual(tb.toArray().map((r) => r.toJSON()));
    const meta = (t: typeof ta): Record<string, string> =>
      Object.fromEntries([...t.schema.metadata].filter(([k]) => k !== 'vmi.collection.time'));
    expect(meta(ta)).toEqual(meta(tb));
    // Parquet to -o FILE (written by the server): the same cells.
    const [sp, dp] = [join(sd, 'l.parquet'), join(dd, 'l.parquet')];
    const pq = ['plugins', 'run', 'lsmod', '--guest', NAME, '-r', 'parquet', '-o'];
    expect([(await native([...pq, sp])).code, (await direct([...pq, dp])).code]).toEqual([0, 0]);
    const rowsOf = (f: string): unknown[] =>
      tableFromIPC(readParquet(readFileSync(f)).intoIPCStream())
        .toArray()
        .map((r) => r.toJSON());
    expect(rowsOf(sp)).toEqual(rowsOf(dp));
    expect(rowsOf(sp).length).toBeGreaterThan(0);
    // A binary format to a terminal (script(1) gives the client a tty): the command's refusal.
    const onTty = (env: string, cmd: string): Promise<RanBytes> =>
      runBytes(
        'script',
        ['-qec', `env ${env} ${cmd} plugins run lsmod --guest ${NAME} -r arrow`, '/dev/null'],
        {
          PATH: NATIVE.PATH,
        },
      );
    const ttyNative = await onTty('', VMI_SH);
    const ttyDirect = await onTty('VMI_SERVER=off', `${process.execPath} ${VMI_BIN}`);
    expect(ttyNative.stdout.toString()).toMatch(
      /^vmi: error: arrow output is binary and stdout is a terminal/,
    );
    expect(ttyNative.stdout.toString()).toBe(ttyDirect.stdout.toString());

    // Not served by the native client: Node's output exactly (real Node on PATH here).
    const viaWrapper = (args: string[]): Promise<RanBytes> => runBytes(VMI_SH, args, PLAIN_TERMINAL);
    const help = await same(['plugins', 'run', '--help'], viaWrapper);
    expect(help.stdout.toString()).toMatch(/USAGE/);
    const qmp = await same(['plugins', 'run', 'banner', '--qmp', join(work, 'no-qmp.sock')], viaWrapper);
    expect(qmp.code).toBe(1);
    // A command line the server's parser refuses: its fallback, then the command's own error.
    expect(
      (await same(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'nope'], viaWrapper)).code,
    ).not.toBe(0);
    // No server (its socket moved away): Node runs the command the ordinary way.
    renameSync(socket(), `${socket()}.away`);
    try {
      const r = await same(['plugins', 'run', 'banner', '--guest', NAME, '-r', 'json'], viaWrapper);
      expect(r.code, r.stderr).toBe(0);
    } finally {
      renameSync(`${socket()}.away`, socket());
    }
    expect(server!.child.exitCode).toBe(null); // the server goes on serving
  }, 600_000);

  it('openGuest goes through the server; a bad request gets an error reply and the server keeps serving', async () => {
    const g = await openGuest(NAME);
    try {
      expect(g.serverPid).toBe(server!.child.pid);
      const before = await guestProcs(guest);
      const r = await g.run('pslist');
      const after = await guestProcs(guest);
      const rows = r.table.rows.map((row) =>
        Object.fromEntries(r.table.columns.map((c, i) => [c.name, row[i]])),
      );
      expectRowsMatchConsole(rows, before, after, 'openGuest through the server');
    } finally {
      await g.close();
    }
    const replies = await new Promise<Record<string, unknown>[]>((resolve, reject) => {
      const s = net.createConnection({ path: socket() });
      const reader = new FrameReader(1 << 20);
      const got: Record<string, unknown>[] = [];
      s.on('data', (d: Buffer) => {
        got.push(...(reader.push(d) as Record<string, unknown>[]));
        if (got.length === 2) {
          s.end();
          resolve(got);
        }
      });
      s.on('error', reject);
      s.write(encodeFrame({ v: PROTOCOL_VERSION, id: 7, op: 'rm -rf' }));
      s.write(encodeFrame({ v: PROTOCOL_VERSION, id: 8, op: 'cli', argv: [1, 2], cwd: '/' }));
    });
    expect(replies.map((m) => [m.id, m.ok])).toEqual([
      [7, false],
      [8, false],
    ]);
    const again = await runVmi(['plugins', 'run', 'banner', '--guest', NAME, '--timing'], {
      env: PLAIN_TERMINAL,
    });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/through the vmi server/);
  }, 300_000);

  it('a program whose only work is openGuest through the server gets its table; a server that does not answer is passed by', async () => {
    server ??= await startServer();
    // A user's program: top-level await and nothing else to keep Node alive (the API's
    // idle connection does not; a request in flight must).
    const script = join(work, 'api-only.mjs');
    writeFileSync(
      script,
      `import { openGuest } from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))};
const g = await openGuest(${JSON.stringify(NAME)});
const r = await g.run('lsmod');
const at = r.table.columns.findIndex((c) => c.name === 'Name');
process.stdout.write(JSON.stringify({ server: g.serverPid ?? null, names: r.table.rows.map((row) => row[at]) }));
await g.close();
`,
    );
    const modules = async (): Promise<string[]> =>
      (await guestSh(guest, "cut -d' ' -f1 /proc/modules")).split('\n').filter(Boolean).sort();
    const truth = await modules();
    expect(truth.length).toBeGreaterThan(0);
    const run = async (): Promise<{ server: number | null; names: string[] }> => {
      const r = await runBytes(process.execPath, [script], PLAIN_TERMINAL);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.length, 'the program printed its table').toBeGreaterThan(0);
      return JSON.parse(r.stdout.toString()) as { server: number | null; names: string[] };
    };
    const served = await run();
    expect(served.server).toBe(server.child.pid);
    expect(served.names.sort()).toEqual(truth);
    // A stopped server still accepts connections (the kernel does) but never answers: the
    // program attaches itself after the status wait instead of hanging.
    server.child.kill('SIGSTOP');
    try {
      const alone = await run();
      expect(alone.server).toBeNull();
      expect(alone.names.sort()).toEqual(await modules());
      // The `vmi` command too (its native client, then Node attaching itself).
      const cli = await runBytes(
        VMI_SH,
        ['plugins', 'run', 'lsmod', '--guest', NAME, '-r', 'json'],
        PLAIN_TERMINAL,
      );
      expect(cli.code, cli.stderr).toBe(0);
      const rows = JSON.parse(cli.stdout.toString()) as { Name: string }[];
      expect(rows.map((r) => r.Name).sort()).toEqual(await modules());
    } finally {
      server.child.kill('SIGCONT');
    }
    const again = await runVmi(['plugins', 'run', 'banner', '--guest', NAME, '--timing'], {
      env: PLAIN_TERMINAL,
    });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/through the vmi server/);
  }, 300_000);

  it('SIGKILL leaves only the resident shadow: the next vmi reuses it, the next server replaces the socket', async () => {
    server ??= await startServer();
    const shadowPid = Number(
      (
        await runVmi(['plugins', 'run', 'banner', '--guest', NAME, '-r', 'json', '--timing'], {
          env: PLAIN_TERMINAL,
        })
      ).stderr.match(/shadow pid (\d+)/)?.[1],
    );
    expect(shadowPid).toBeGreaterThan(1);
    // A program's Guest, opened through the server, outlives it (below).
    const api = await openGuest(NAME);
    expect(api.serverPid).toBe(server!.child.pid);
    expect((await api.run('banner')).table.rows.length).toBeGreaterThan(0);
    server!.child.kill('SIGKILL');
    await server!.exited;
    server = undefined;
    expect(existsSync(socket())).toBe(true); // stale: nothing accepts on it
    // In the guest: the shadow is the only vmi process (truth: the console).
    const procs = await consoleProcs(guest);
    expect(procs.get(shadowPid)?.comm).toBe('vmi-shadow');
    expect([...procs.values()].filter((p) => /vmi/.test(p.comm)).map((p) => p.pid)).toEqual([shadowPid]);
    // The next vmi ignores the stale socket and reuses the resident shadow.
    const before = await guestProcs(guest);
    const next = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json', '--timing'], {
      env: PLAIN_TERMINAL,
    });
    const after = await guestProcs(guest);
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).not.toMatch(/through the vmi server/);
    expect(next.stderr).toMatch(new RegExp(`shadow pid ${shadowPid}\\b`));
    expectRowsMatchConsole(pslistJson(next), before, after, 'after SIGKILL');
    // The Guest's next call opens the guest in its own process and goes on.
    try {
      const b2 = await guestProcs(guest);
      const r = await api.run('pslist');
      const a2 = await guestProcs(guest);
      expect(api.serverPid).toBeUndefined();
      const rows = r.table.rows.map((row) =>
        Object.fromEntries(r.table.columns.map((c, i) => [c.name, row[i]])),
      );
      expectRowsMatchConsole(rows, b2, a2, 'API Guest after its server was killed');
    } finally {
      await api.close();
    }
    // A new server replaces the stale socket and serves; SIGINT then removes socket and shadow.
    server = await startServer();
    const served = await runVmi(['plugins', 'run', 'banner', '--guest', NAME, '--timing'], {
      env: PLAIN_TERMINAL,
    });
    expect(served.code, served.stderr).toBe(0);
    expect(served.stderr).toMatch(/through the vmi server/);
    server.child.kill('SIGINT');
    expect((await server.exited).code).toBe(0);
    server = undefined;
    expect(existsSync(socket())).toBe(false);
    expect(await lasting(guest, (p) => /vmi/.test(p.comm))).toEqual([]);
  }, 600_000);

  it('vmi watch serves its guest: an ad-hoc run shares the watch shadow; SIGINT removes socket and shadow', async () => {
    const watch = spawn(process.execPath, [VMI_BIN, 'watch', '--guest', NAME, '--only', 'process'], {
      cwd: ROOT,
      env: { ...process.env, ...PLAIN_TERMINAL },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    watch.stderr.on('data', (d: Buffer) => (err += d.toString()));
    watch.stdout.resume();
    const exited = new Promise<number | null>((resolve) => watch.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 240_000;
      while (!/serving serve-t to other vmi processes/.test(err) || !/shadow/.test(err)) {
        if (watch.exitCode !== null || Date.now() > deadline) throw new Error(`watch: ${err}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const before = await guestProcs(guest);
      const r = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json', '--timing'], {
        env: PLAIN_TERMINAL,
      });
      const after = await guestProcs(guest);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/through the vmi server pid \d+ at /);
      expectRowsMatchConsole(pslistJson(r), before, after, 'through the watch');
      // One shadow in the guest: the watch's, which served the run too.
      const shadows = [...(await consoleProcs(guest)).values()].filter((p) => p.comm === 'vmi-shadow');
      expect(shadows.length).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`shadow pid ${shadows[0].pid}\\b`));
      // A program attaching itself (server: false) uses that shadow too, and leaves it to
      // the watch at close(): the watch goes on with the same one.
      const own = await openGuest(NAME, { server: false });
      try {
        const run = await own.runAll([{ plugin: 'banner' }]);
        expect(run.timing.reused).toBe(true);
        expect(run.timing.shadowPid).toBe(shadows[0].pid);
      } finally {
        await own.close();
      }
      const still = [...(await consoleProcs(guest)).values()].filter((p) => p.comm === 'vmi-shadow');
      expect(still.map((p) => p.pid)).toEqual([shadows[0].pid]);
    } finally {
      watch.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    expect(existsSync(socket())).toBe(false);
    expect(await lasting(guest, (p) => /vmi/.test(p.comm))).toEqual([]);
  }, 400_000);

  // Last in this block: it stops the guest.
  it('vmi lab down of the served guest ends the server: one line, exit 1, nothing left running', async () => {
    server = await startServer();
    const s = server;
    expect(await labDown(NAME)).toBe(true);
    const t0 = Date.now();
    const ended = await Promise.race([
      s.exited,
      new Promise<'still running'>((r) => setTimeout(() => r('still running'), 30_000)),
    ]);
    expect(ended, `the server after lab down: ${s.stderr}`).toEqual({ code: 1, signal: null });
    expect(Date.now() - t0).toBeLessThan(30_000);
    const errors = s.stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
    expect(errors).toEqual([
      `vmi: error: stopped serving ${NAME}: lab guest ${NAME} is no longer running (vmi lab down?)`,
    ]);
    server = undefined;
  }, 300_000);
});

describe('vmi serve --qmp (a QEMU that vmi did not start)', () => {
  let vm: ForeignQemu;
  let server: Server | undefined;

  beforeAll(async () => {
    requireBuilt('dist/commands/serve.js');
    vm = await bootForeignQemu();
  }, 300_000);
  afterAll(async () => {
    server?.child.kill('SIGKILL');
    await vm?.stop();
    if (vm) rmSync(foreignRunDir(vm.qmpSocket), { recursive: true, force: true });
  }, 120_000);

  it('further vmi commands on that QEMU go through the server (its QMP socket has one client)', async () => {
    const con = { serialSocket: vm.serialSocket } as LabGuest;
    server = await startServer(['--qmp', vm.qmpSocket]);
    const before = await guestProcs(con);
    const args = ['plugins', 'run', 'pslist', '--qmp', vm.qmpSocket, '-r', 'json', '--timing'];
    const [a, b] = await Promise.all([
      runVmi(args, { env: PLAIN_TERMINAL }),
      runVmi(args, { env: PLAIN_TERMINAL }),
    ]);
    const after = await guestProcs(con);
    for (const r of [a, b]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/through the vmi server pid \d+ at .*foreign/);
      expectRowsMatchConsole(pslistJson(r), before, after, 'foreign pslist through the server');
    }
    // The `vmi` command (bin/vmi): its native client leaves --qmp to Node, whose own fast
    // path still sends it to the server (it used to run it directly and fail at QMP).
    const viaSh = await runBytes(VMI_SH, args, PLAIN_TERMINAL);
    const afterSh = await guestProcs(con);
    expect(viaSh.code, viaSh.stderr).toBe(0);
    expect(viaSh.stderr).toMatch(/through the vmi server pid \d+ at .*foreign/);
    expectRowsMatchConsole(
      JSON.parse(viaSh.stdout.toString()) as Record<string, unknown>[],
      after,
      afterSh,
      'foreign pslist through bin/vmi',
    );
    // Without the server the QMP socket is taken: the direct path fails at QMP connect.
    const direct = await runVmi(['plugins', 'run', 'pslist', '--qmp', vm.qmpSocket], {
      env: { ...DIRECT },
      timeoutMs: 60_000,
    });
    expect(direct.code).toBe(1);
    expect(direct.stderr).toMatch(/QMP/);
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    server = undefined;
    expect(await lasting(con, (p) => /vmi/.test(p.comm))).toEqual([]);
  }, 400_000);

  it('SIGINT during plugins run on a paused foreign QEMU: one line, exit 130, no output, the VM paused again, no stub, no shadow', async () => {
    const con = { serialSocket: vm.serialSocket } as LabGuest;
    const out = mkdtempSync(join(tmpdir(), 'vmi-int-'));
    const qmpStatus = async (cmd?: string): Promise<string> => {
      const q = await QmpClient.connect(vm.qmpSocket);
      try {
        if (cmd) await q.execute(cmd);
        const st = await q.execute<{ status: string }>('query-status');
        const chardevs = await q.execute<{ label: string }[]>('query-chardev');
        return `${st.status}${chardevs.some((c) => c.label === 'gdb') ? ' +gdb' : ''}`;
      } finally {
        q.close();
      }
    };
    expect(await qmpStatus('stop')).toBe('paused');
    try {
      const child = spawn(
        process.execPath,
        [VMI_BIN, 'plugins', 'run', '--all', '--qmp', vm.qmpSocket, '--timing', '-o', `${out}/`],
        { cwd: ROOT, env: { ...process.env, ...DIRECT }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      const deadline = Date.now() + 120_000;
      // Every built-in plugin takes many seconds: interrupt once the shadow is there.
      while (!/shadow ready/.test(stderr)) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no shadow: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill('SIGINT');
      expect(await exited, stderr).toBe(130);
      expect(stdout).toBe('');
      expect(readdirSync(out)).toEqual([]);
      const errors = stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
      expect(errors).toEqual([
        'vmi: error: interrupted by SIGINT: nothing printed; vmi detached from the guest',
      ]);
      // QEMU's view: paused as before the run, and vmi's gdbstub off again.
      expect(await qmpStatus()).toBe('paused');
    } finally {
      await qmpStatus('cont');
      rmSync(out, { recursive: true, force: true });
    }
    // The guest's view: no vmi process left in it.
    expect(await lasting(con, (p) => /vmi/.test(p.comm))).toEqual([]);
  }, 300_000);

  it("a gdbstub left on vmi's socket by a vmi that died is replaced, and the next run works", async () => {
    const con = { serialSocket: vm.serialSocket } as LabGuest;
    // What a vmi killed mid-run leaves: its gdbstub still on, on its own socket path.
    const gdbSocket = join(foreignRunDir(vm.qmpSocket), 'gdb.sock');
    mkdirSync(foreignRunDir(vm.qmpSocket), { recursive: true, mode: 0o700 });
    const qmp = await QmpClient.connect(vm.qmpSocket);
    try {
      await qmp.hmp(`gdbserver unix:${gdbSocket},server=on,wait=off`);
      const chardevs = await qmp.execute<{ label: string; filename: string }[]>('query-chardev');
      expect(chardevs.find((c) => c.label === 'gdb')?.filename).toContain(gdbSocket);
    } finally {
      qmp.close();
    }
    const before = await guestProcs(con);
    const r = await runVmi(['plugins', 'run', 'pslist', '--qmp', vm.qmpSocket, '-r', 'json'], {
      env: DIRECT,
      timeoutMs: 120_000,
    });
    const after = await guestProcs(con);
    expect(r.code, r.stderr).toBe(0);
    expectRowsMatchConsole(pslistJson(r), before, after, 'foreign pslist after a leftover gdbstub');
    // The run turned its own stub off again (QEMU's view).
    const q2 = await QmpClient.connect(vm.qmpSocket);
    try {
      const chardevs = await q2.execute<{ label: string; filename: string }[]>('query-chardev');
      expect(chardevs.find((c) => c.label === 'gdb')).toBeUndefined();
    } finally {
      q2.close();
    }
  }, 300_000);
});
