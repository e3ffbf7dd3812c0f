/**
 * The escape pack (test/fixtures/packs/vmi-pack-escape) linked into the CLI and run
 * against a lab guest, isolated (the default: a confined child process) and trusted (in
 * vmi's process, VMI_TRUST_PACKS): every route around the read-only policy it tries
 * fails, the plain run ends with the policy's one-line error, and the process it tried
 * to kill is still alive in the guest (asked through the guest's own shell). Isolated,
 * its attempts on the host fail too, checked against the host's own facts: no file in a
 * world-writable directory, no connection to the test's TCP listener, QEMU (whose QMP
 * socket it was asked to open and send `quit`) still running and its guest answering.
 *
 * Runs bin/run.js against dist/ (`npm run build` first).
 */
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLAIN_TERMINAL, ROOT, runVmi } from './helpers/cli.js';
import { guestRun } from './helpers/guest-shell.js';
import { passwdUser } from '../../src/util/passwd.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';

const NAME = 't-escape';
const PACK = join(ROOT, 'test/fixtures/packs/vmi-pack-escape');

let dataHome = '';
const MODES = {
  isolated: { VMI_TRUST_PACKS: '' },
  trusted: { VMI_TRUST_PACKS: 'vmi-pack-escape' },
} as const;
type Mode = keyof typeof MODES;
const vmiIn = (mode: Mode, ...args: string[]) =>
  runVmi(args, { env: { ...PLAIN_TERMINAL, XDG_DATA_HOME: dataHome, ...MODES[mode] } });
const vmi = (...args: string[]) => vmiIn('isolated', ...args);
const lines = (s: string) => s.split('\n').filter((l) => l.trim() !== '');

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

  for (const mode of ['isolated', 'trusted'] as const) {
    it(`${mode}: every route fails with a policy error or is unreachable, and the target lives`, async () => {
      const r = await vmiIn(
        mode,
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

    it(`${mode}: the plain run fails with the policy error: one line, exit 1, the target lives`, async () => {
      const r = await vmiIn(mode, 'plugins', 'run', 'escape', '--pid', String(target), '--guest', NAME);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(lines(r.stderr)[0]).toMatch(
        /^vmi: error: (escape: )?plugin 'escape' is not allowed to call kill: /,
      );
      expect(r.stdout).toBe('');
      expect((await guestRun(guest, `kill -0 ${target} && echo alive`)).output.trim()).toBe('alive');
    });
  }

  describe('isolated: the host', () => {
    let markerDir = '';
    let secret = '';
    let server: Server;
    let port = 0;
    let connections = 0;

    beforeAll(async () => {
      // World-writable: only the pack's confinement, not file permissions, keeps files out.
      markerDir = await mkdtemp(join(tmpdir(), 'vmi-escape-marker-'));
      await chmod(markerDir, 0o777);
      secret = join(markerDir, 'secret.txt');
      await writeFile(secret, 'host secret\n', { mode: 0o644 });
      await chmod(secret, 0o644);
      server = createServer((c) => {
        connections++;
        c.destroy();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });

    afterAll(async () => {
      server?.close();
      if (markerDir) await rm(markerDir, { recursive: true, force: true });
    });

    it('cannot write a file, start a process or worker, read outside the pack, open QMP or TCP', async () => {
      const r = await vmi(
        'plugins',
        'run',
        'hostescape',
        '--marker',
        join(markerDir, 'escaped'),
        '--socket',
        guest.qmpSocket,
        '--port',
        String(port),
        '--secret',
        secret,
        '--guest',
        NAME,
        '-r',
        'json',
      );
      expect(r.code, r.stderr).toBe(0);
      const rows = JSON.parse(r.stdout) as Array<{ ROUTE: string; OUTCOME: string }>;
      const outcome = new Map(rows.map((x) => [x.ROUTE, x.OUTCOME]));
      // The host's own facts first.
      expect(await readdir(markerDir)).toEqual(['secret.txt']);
      expect(connections).toBe(0);
      expect(() => process.kill(guest.pid, 0)).not.toThrow();
      const release = (await guestRun(guest, 'uname -r')).output.trim();
      expect(release).toMatch(/^\d+\.\d+/);
      // The batch through the SDK still reached the guest, through vmi.
      expect(outcome.get('uname through the SDK')).toBe(`ok: ${release}`);
      // Every host route was refused, none reached.
      const host = rows.filter((x) => !['uname through the SDK', 'whoami'].includes(x.ROUTE));
      expect(host.length).toBeGreaterThanOrEqual(13);
      for (const row of host) expect(row.OUTCOME, row.ROUTE).toMatch(/^refused: /);
      expect(outcome.get(`read ${secret}`)).toMatch(/^refused: ERR_ACCESS_DENIED/);
      if (process.getuid?.() === 0) {
        // As root: the child ran as nobody in its own network namespace.
        const sandboxUser = passwdUser('vmi-pack') ?? passwdUser('nobody');
        expect(outcome.get('whoami')).toBe(`uid ${sandboxUser!.uid}`);
        expect(outcome.get('QMP socket: quit')).toMatch(/^refused: (EACCES|ERR_ACCESS_DENIED)/);
        expect(outcome.get(`TCP 127.0.0.1:${port}`)).toMatch(/^refused: (ENETUNREACH|ERR_ACCESS_DENIED)/);
      }
    });

    it('a batch forged onto the channel past the SDK meets the same policy; the target lives', async () => {
      const r = await vmi(
        'plugins',
        'run',
        'rawchannel',
        '--what',
        'kill',
        '--pid',
        String(target),
        '--guest',
        NAME,
        '-r',
        'json',
      );
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([
        expect.objectContaining({
          OUTCOME: expect.stringMatching(
            /^refused: PolicyViolationError: plugin 'rawchannel' is not allowed to call kill/,
          ),
        }),
      ]);
      expect((await guestRun(guest, `kill -0 ${target} && echo alive`)).output.trim()).toBe('alive');
    });

    it('vmi counts the bytes asked of the guest itself, and checks forged rows', async () => {
      const read = await vmi(
        'plugins',
        'run',
        'rawchannel',
        '--what',
        'read',
        '--max-read',
        '2',
        '--guest',
        NAME,
      );
      expect(read.code).toBe(1);
      expect(lines(read.stderr)).toEqual([
        'vmi: error: rawchannel: read limit: this plugin run would read more than 2 MiB from the guest (2 MiB read so far, the next batch asks 1 MiB; raise it with --max-read MiB)',
      ]);
      const bad = await vmi('plugins', 'run', 'rawchannel', '--what', 'badrow', '--guest', NAME);
      expect(bad.code).toBe(1);
      expect(lines(bad.stderr)).toEqual([
        "vmi: error: rawchannel: plugin 'rawchannel' of pack vmi-pack-escape broke vmi's protocol: a row of 3 cells, expected 1",
      ]);
    });
  });
});
