/**
 * A running lab guest whose guest.json is damaged: `vmi lab list` and `vmi plugins run`
 * name the file and fail, and the guest keeps running (its QEMU pid alive, its console
 * shell answering). Runs bin/run.js against dist/ (`npm run build` first).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLAIN_TERMINAL, runVmi } from './helpers/cli.js';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { processAlive } from '../../src/util/process-alive.js';

const NAME = 't-corrupt';
const vmi = (...args: string[]) => runVmi(args, { env: PLAIN_TERMINAL });

describe('a corrupt guest.json of a running guest', () => {
  let guest: LabGuest;
  let path = '';
  let good = '';

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    path = join(guest.runDir, 'guest.json');
    good = await readFile(path, 'utf8');
    await writeFile(path, good.slice(0, Math.floor(good.length / 2)));
  });

  afterAll(async () => {
    if (good) await writeFile(path, good);
    await labDown(NAME);
  });

  it('is reported by lab list and plugins run, and the guest keeps running', async () => {
    const list = await vmi('lab', 'list');
    expect(list.code).toBe(1);
    expect(list.stderr).toContain(`vmi: error: ${path} cannot be read (not JSON`);
    expect(list.stderr).toContain(`its QEMU, pid ${guest.pid}, is still running`);

    const run = await vmi('plugins', 'run', 'pslist', '--guest', NAME);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`${path} cannot be read`);
    expect(run.stdout).toBe('');

    const down = await vmi('lab', 'down', '--name', NAME);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`${path} cannot be read`);

    expect(processAlive(guest.pid)).toBe(true);
    const con = await GuestConsole.connect(guest.serialSocket);
    try {
      const r = await con.run('echo alive-$((6*7))');
      expect(r.output.trim()).toBe('alive-42');
    } finally {
      con.close();
    }
  });
});
