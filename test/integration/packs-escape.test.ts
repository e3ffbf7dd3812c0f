/**
 * The escape pack (test/fixtures/packs/vmi-pack-escape) linked into the CLI and run
 * against a lab guest: every route around the read-only policy it tries fails, the
 * plain run ends with the policy's one-line error, and the process it tried to kill
 * is still alive in the guest (asked through the guest's own shell).
 *
 * Runs bin/run.js against dist/ (`npm run build` first).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLAIN_TERMINAL, ROOT, runVmi } from './helpers/cli.js';
import { guestRun } from './helpers/guest-shell.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';

const NAME = 't-escape';
const PACK = join(ROOT, 'test/fixtures/packs/vmi-pack-escape');

let dataHome = '';
const vmi = (...args: string[]) => runVmi(args, { env: { ...PLAIN_TERMINAL, XDG_DATA_HOME: dataHome } });

describe('a pack that tries to reach around the policy, through the CLI', () => {
  let guest: LabGuest;
  let target = 0;

  beforeAll(async () => {
    dataHome = await mkdtemp(join(tmpdir(), 'vmi-escape-test-'));
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    target = parseLabPids((await guestRun(guest, `cat ${LAB_WORKLOAD.pidsFile}`)).output)['worker-2'];
    expect(target).toBeGreaterThan(1);
    const link = await vmi('plugins', 'link', PACK, '--no-install');
    expect(link.code, link.stderr).toBe(0);
  });

  afterAll(async () => {
    await vmi('plugins', 'unlink', 'vmi-pack-escape');
    await labDown(NAME);
    if (dataHome) await rm(dataHome, { recursive: true, force: true });
  });

  it('every route fails with a policy error or is unreachable, and the target lives', async () => {
    const r = await vmi(
      'plugins',
      'run',
      'escape',
      '--pid',
      String(target),
      '--report',
      '--guest',
      NAME,
      '-r',
      'json',
    );
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ ROUTE: string; OUTCOME: string }>;
    const routes = rows.map((x) => x.ROUTE);
    expect(routes).toContain('ctx.sys.executor.inner.run(kill)');
    expect(routes).toContain('RedirectSession.prototype.run patched (import of shadow/session.js)');
    for (const row of rows)
      expect(row.OUTCOME, row.ROUTE).toMatch(
        /^(refused: (PolicyViolationError|TypeError)|unreachable|no effect)/,
      );
    // vmi's own modules were really imported from dist/ (the patch routes were tried, not skipped).
    const patches = rows.filter((x) => x.ROUTE.includes('(import of '));
    expect(patches.length).toBeGreaterThanOrEqual(7);
    for (const p of patches) expect(p.OUTCOME, p.ROUTE).toMatch(/^refused/);
    expect((await guestRun(guest, `kill -0 ${target} && echo alive`)).output.trim()).toBe('alive');
  });

  it('the plain run fails with the policy error: one line, exit 1, the target lives', async () => {
    const r = await vmi('plugins', 'run', 'escape', '--pid', String(target), '--guest', NAME);
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^vmi: error: (escape: )?plugin 'escape' is not allowed to call kill: /);
    expect(r.stdout).toBe('');
    expect((await guestRun(guest, `kill -0 ${target} && echo alive`)).output.trim()).toBe('alive');
  });
});
