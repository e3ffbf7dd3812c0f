import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { findLabGuest, labDown, labUp, listLabGuests, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import { requireBuilt } from './helpers/cli.js';

const run = promisify(execFile);
const NAME = 't-lab';
const BIN = new URL('../../bin/run.js', import.meta.url).pathname;

describe('lab guest', () => {
  let guest: LabGuest;
  let con: GuestConsole;
  const progress: string[] = [];

  beforeAll(async () => {
    requireBuilt('dist/commands/lab/list.js', 'dist/commands/lab/status.js', 'dist/commands/lab/down.js');
    await labDown(NAME);
    guest = await labUp({ name: NAME, onProgress: (m) => progress.push(m) });
    con = await GuestConsole.connect(guest.serialSocket);
  });

  afterAll(async () => {
    con?.close();
    await labDown(NAME);
  });

  it('describes its endpoints', () => {
    expect(guest.name).toBe(NAME);
    expect(guest.pid).toBeGreaterThan(0);
    expect(guest.kernelRelease).toMatch(/^\d+\.\d+\.\d+/);
    expect(guest.ramSize).toBe(256 * 1024 * 1024);
    expect(statSync(guest.ramFile!).size).toBe(guest.ramSize);
    expect(statSync(guest.ramFile!).mode & 0o777).toBe(0o600);
    expect(statSync(guest.runDir).mode & 0o777).toBe(0o700);
    for (const s of [guest.qmpSocket, guest.gdbSocket!, guest.serialSocket]) {
      expect(statSync(s).isSocket()).toBe(true);
    }
  });

  it('runs commands on the console with exit status', async () => {
    expect(await con.run('echo hello; echo world')).toEqual({ output: 'hello\nworld\n', status: 0 });
    expect((await con.run('exit 3')).status).toBe(3);
    expect((await con.run('printf \'a\\047b "q"\\n\'')).output).toBe('a\'b "q"\n');
    const [a, b] = await Promise.all([con.run('echo one'), con.run('echo two')]);
    expect(a.output).toBe('one\n');
    expect(b.output).toBe('two\n');
    expect((await con.run('uname -r')).output.trim()).toBe(guest.kernelRelease);
  });

  it('runs the workload', async () => {
    const ps = (await con.run('ps -o pid,args')).output;
    for (const w of LAB_WORKLOAD.workers) expect(ps).toContain(`/usr/sbin/labd ${w.args.join(' ')}`);
    expect(ps).toContain(`httpd -f -p 127.0.0.1:${LAB_WORKLOAD.httpPort}`);
    expect(ps).toContain('labd hold');

    const pids = parseLabPids((await con.run(`cat ${LAB_WORKLOAD.pidsFile}`)).output);
    const env = (await con.run(`tr '\\0' '\\n' < /proc/${pids['worker-2']}/environ`)).output;
    expect(env).toContain('LAB_ROLE=worker-2');
    expect(env).toContain(`LAB_SECRET=${LAB_WORKLOAD.workers[1]!.secret}`);

    const fds = (await con.run(`ls -l /proc/${pids.holder}/fd`)).output;
    for (const f of LAB_WORKLOAD.heldFiles.slice(0, -1)) expect(fds).toContain(f);
    expect(fds).toContain('(deleted)');
  });

  it('has the module, sockets and mounts', async () => {
    expect((await con.run('cat /proc/modules')).output).toMatch(/^dummy /m);
    const tcp = (await con.run('cat /proc/net/tcp')).output;
    expect(tcp).toContain('0100007F:1F90 00000000:0000 0A');
    expect(tcp).toContain('0100007F:2328 00000000:0000 0A');
    expect(tcp).toMatch(/0100007F:2328 0100007F:[0-9A-F]{4} 01/);
    expect((await con.run('cat /proc/net/udp')).output).toContain('0100007F:2329');
    expect((await con.run('cat /proc/net/unix')).output).toContain(LAB_WORKLOAD.unixSocket);
    const mounts = (await con.run('cat /proc/mounts')).output;
    for (const m of Object.keys(LAB_WORKLOAD.tmpfs)) expect(mounts).toMatch(new RegExp(` ${m} tmpfs `));
    expect((await con.run('wget -qO- http://127.0.0.1:8080/')).output).toContain('vmi lab guest');
  });

  it('is idempotent and listed', async () => {
    const again = await labUp({ name: NAME });
    expect(again.pid).toBe(guest.pid);
    expect((await findLabGuest(NAME))?.pid).toBe(guest.pid);
    expect((await listLabGuests()).map((g) => g.name)).toContain(NAME);
  });

  it('shows in `vmi lab list` and `vmi lab status`', async () => {
    const list = await run(process.execPath, [BIN, 'lab:list']);
    expect(list.stdout).toMatch(/^NAME\s+PID\s+KERNEL\s+CPUS\s+MEM\s+STARTED/);
    expect(list.stdout).toMatch(new RegExp(`^${NAME}\\s+${guest.pid}\\s`, 'm'));
    const status = await run(process.execPath, [BIN, 'lab:status', '--name', NAME, '--json']);
    expect(JSON.parse(status.stdout).pid).toBe(guest.pid);
    await expect(run(process.execPath, [BIN, 'lab:status', '--name', 'no-such-guest'])).rejects.toMatchObject(
      {
        code: 1,
      },
    );
  });

  it('goes down and cleans up', async () => {
    con.close();
    const down = await run(process.execPath, [BIN, 'lab:down', '--name', NAME]);
    expect(down.stdout).toContain('stopped');
    expect(existsSync(guest.runDir)).toBe(false);
    expect(existsSync(guest.ramFile!)).toBe(false);
    expect(await findLabGuest(NAME)).toBeUndefined();
    expect(await labDown(NAME)).toBe(false);
  });
});
