/**
 * Crash-safe lab state: guest.json is written atomically (tmp + fsync + rename), and a
 * guest.json that cannot be parsed is an error naming it: the guest's QEMU is never
 * stopped and its run dir never removed on the strength of a file that was not read.
 * A fake QEMU (a sleeping node process whose argv says qemu-system and the run dir)
 * stands in for the real one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CorruptGuestError, findLabGuest, labDown, listLabGuests } from '../../src/lab/lab.js';
import { guestsRoot } from '../../src/lab/host.js';
import { processAlive } from '../../src/util/process-alive.js';
import { readStateJson, StateFileError, writeStateFile } from '../../src/util/state-file.js';

describe('a guest.json that cannot be parsed', () => {
  let root = '';
  let saved: string | undefined;
  let fake: ChildProcess | undefined;
  let dir = '';

  beforeEach(async () => {
    saved = process.env.VMI_RUNTIME_ROOT;
    root = await mkdtemp(join(tmpdir(), 'vmi-state-'));
    process.env.VMI_RUNTIME_ROOT = root;
    dir = join(guestsRoot(), 'g1');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    fake = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'qemu-system-x86_64', dir], {
      stdio: 'ignore',
    });
    await new Promise((r) => fake!.once('spawn', r));
    await writeFile(join(dir, 'qemu.pid'), `${fake.pid}\n`);
    // Torn in the middle of a write, as a crash would leave it with an in-place write.
    await writeFile(
      join(dir, 'guest.json'),
      `{ "name": "g1", "pid": ${fake.pid}, "runDir": "${dir}", "qmpSo`,
    );
  });

  afterEach(async () => {
    fake?.kill('SIGKILL');
    if (saved === undefined) delete process.env.VMI_RUNTIME_ROOT;
    else process.env.VMI_RUNTIME_ROOT = saved;
    await rm(root, { recursive: true, force: true });
  });

  it('is an error naming the file; the guest is neither stopped nor removed', async () => {
    const path = join(dir, 'guest.json');
    await expect(findLabGuest('g1')).rejects.toThrow(CorruptGuestError);
    await expect(findLabGuest('g1')).rejects.toThrow(
      new RegExp(
        `^${path} cannot be read \\(not JSON: .*\\); the guest was left as it is \\(its QEMU, pid ${fake!.pid}, is still running\\)`,
      ),
    );
    await expect(labDown('g1')).rejects.toThrow(CorruptGuestError);
    await expect(listLabGuests()).rejects.toThrow(CorruptGuestError);
    const problems: Error[] = [];
    expect(await listLabGuests((e) => problems.push(e))).toEqual([]);
    expect(problems.map((p) => p.message)).toEqual([expect.stringContaining(path)]);
    expect(processAlive(fake!.pid!)).toBe(true);
    expect((await readdir(dir)).sort()).toEqual(['guest.json', 'qemu.pid']);
  });

  it('valid JSON of the wrong shape is refused the same way', async () => {
    await writeFile(join(dir, 'guest.json'), JSON.stringify({ name: 'g1', pid: 'everyone' }));
    await expect(labDown('g1')).rejects.toThrow(/guest\.json cannot be read \(not the expected shape\)/);
    expect(processAlive(fake!.pid!)).toBe(true);
  });
});

describe('state files', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmi-statefile-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('are replaced whole, 0600, with no temporary file left', async () => {
    const p = join(dir, 'guest.json');
    await writeStateFile(p, '{"a":1}\n');
    await writeStateFile(p, '{"a":2}\n');
    expect(await readFile(p, 'utf8')).toBe('{"a":2}\n');
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['guest.json']);
  });

  it('read: absent is undefined, damaged is a StateFileError naming the file', async () => {
    const p = join(dir, 's.json');
    const isObj = (v: unknown): v is object => typeof v === 'object' && v !== null;
    expect(await readStateJson(p, isObj)).toBeUndefined();
    await writeFile(p, '{');
    await expect(readStateJson(p, isObj)).rejects.toThrow(StateFileError);
    await expect(readStateJson(p, isObj)).rejects.toThrow(p);
  });
});
