/**
 * Plugin packs end to end: the sample pack linked into the CLI with `vmi plugins link`
 * (into a throw-away oclif data dir: XDG_DATA_HOME), run against a lab guest and compared
 * with the guest's own view; a pack that throws on load; a pack that tries to change the
 * guest, refused by the read-only policy with nothing reaching the guest.
 *
 * Runs bin/run.js against dist/ (`npm run build` first); builds the sample pack itself.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLAIN_TERMINAL, ROOT, runProcess, runVmi } from './helpers/cli.js';
import { guestRun } from './helpers/guest-shell.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';

const NAME = 't-packs';
const SAMPLE = join(ROOT, 'samples/vmi-pack-sample');

let dataHome = '';

/** The oclif data dir (linked plugins) lives under XDG_DATA_HOME: never the user's. */
const env = () => ({ ...PLAIN_TERMINAL, XDG_DATA_HOME: dataHome, VMI_TRUST_PACKS: '' });
const run = (file: string, args: string[]) => runProcess(file, args, { env: env() });
const vmi = (...args: string[]) => runVmi(args, { env: env() });
/** The same, with the sample pack trusted: imported into vmi's process instead of isolated. */
const vmiTrusted = (...args: string[]) =>
  runVmi(args, { env: { ...env(), VMI_TRUST_PACKS: 'vmi-pack-sample' } });

/** stderr without blank lines. */
const lines = (s: string) => s.split('\n').filter((l) => l.trim() !== '');

/** A pack in a temp dir: package.json with the `vmi` key and an index.js entry. */
async function tempPack(name: string, source: string): Promise<string> {
  const dir = join(dataHome, 'packs', name);
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'package.json'),
    JSON.stringify({ name, version: '1.0.0', type: 'module', oclif: {}, vmi: { plugins: './index.js' } }),
  );
  await writeFile(join(dir, 'index.js'), source);
  return dir;
}

describe('plugin packs', () => {
  let guest: LabGuest;
  let pids: Record<string, number> = {};

  beforeAll(async () => {
    dataHome = await mkdtemp(join(tmpdir(), 'vmi-packs-test-'));
    // Isolated packs run as an unprivileged user (as root: nobody), who must read them.
    await chmod(dataHome, 0o755);
    const built = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', SAMPLE]);
    expect(built.code, built.stdout + built.stderr).toBe(0);
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    // The lab's /init mounts the v2 hierarchy on /sys/fs/cgroup; mount a v1 one (pids)
    // too, and move a worker into a v2 child group.
    const cg = await guestRun(
      guest,
      'mkdir -p /run/vmi-cg1 && mount -t cgroup -o pids none /run/vmi-cg1 && ' +
        'grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts && mkdir -p /sys/fs/cgroup/vmi-test',
    );
    expect(cg.status, cg.output).toBe(0);
    pids = parseLabPids((await guestRun(guest, `cat ${LAB_WORKLOAD.pidsFile}`)).output);
  });

  afterAll(async () => {
    await labDown(NAME);
    if (dataHome) await rm(dataHome, { recursive: true, force: true });
  });

  it('the sample pack links without network, runs, and matches the guest', async () => {
    const link = await vmi('plugins', 'link', SAMPLE, '--no-install');
    expect(link.code, link.stderr).toBe(0);
    expect((await vmi('plugins')).stdout).toContain('vmi-pack-sample');

    const list = await vmi('plugins', 'run', '--list');
    expect(list.stdout).toContain('capsets  (v0.1.0, pack vmi-pack-sample)');
    expect(list.stdout).toContain('cgroups  (v0.1.0, pack vmi-pack-sample)');

    const moved = await guestRun(guest, `echo ${pids['worker-1']} > /sys/fs/cgroup/vmi-test/cgroup.procs`);
    expect(moved.status, moved.output).toBe(0);
    const r = await vmi('plugins', 'run', 'capsets', 'cgroups', '--guest', NAME, '-r', 'json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as Record<string, Array<Record<string, unknown>>>;

    // The guest's own view, for every process at once (PID then its five Cap lines).
    const truth = new Map<number, Record<string, string>>();
    const sh = await guestRun(
      guest,
      'for d in /proc/[0-9]*; do echo "P ${d#/proc/}"; grep Cap $d/status 2>/dev/null; done',
    );
    let cur: Record<string, string> | undefined;
    for (const l of sh.output.split('\n')) {
      const p = /^P (\d+)$/.exec(l.trim());
      if (p) truth.set(Number(p[1]), (cur = {}));
      const c = /^(Cap\w+):\s+([0-9a-f]+)$/.exec(l.trim());
      if (c && cur) cur[c[1]] = c[2];
    }
    const caps = out.capsets;
    expect(caps.length).toBeGreaterThan(10);
    const byPid = new Map(caps.map((row) => [row.PID as number, row]));
    // Long-lived processes: init, a kernel thread, the workload.
    const stable = [1, 2, ...Object.values(pids)];
    for (const pid of stable) {
      const row = byPid.get(pid);
      expect(row, `pid ${pid}`).toBeDefined();
      const t = truth.get(pid)!;
      expect(Object.keys(t)).toEqual(['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']);
      for (const k of Object.keys(t)) expect(row![k], `pid ${pid} ${k}`).toBe(t[k]);
    }
    // Every process both saw (others came and went) has the same sets.
    let compared = 0;
    for (const [pid, t] of truth) {
      const row = byPid.get(pid);
      if (!row || Object.keys(t).length === 0) continue;
      compared++;
      for (const k of Object.keys(t)) expect(row[k], `pid ${pid} ${k}`).toBe(t[k]);
    }
    expect(compared).toBeGreaterThan(10);

    const worker = pids['worker-1'];
    expect(out.cgroups.filter((row) => row.PID === worker && row.PATH === '/vmi-test')).toHaveLength(1);
    expect(out.cgroups.filter((row) => row.PID === 1 && row.CONTROLLERS === 'pids')).toHaveLength(1);
    const cgTruth = (await guestRun(guest, `cat /proc/1/cgroup; echo --; cat /proc/${worker}/cgroup`)).output
      .trim()
      .split(/\n--\n/);
    for (const [i, pid] of [1, worker].entries()) {
      const rows = out.cgroups.filter((row) => row.PID === pid);
      const want = cgTruth[i]
        .trim()
        .split('\n')
        .map((l) => {
          const [h, ctl, ...path] = l.trim().split(':');
          return { HIERARCHY: Number(h), CONTROLLERS: ctl, PATH: path.join(':') };
        });
      expect(rows.map(({ HIERARCHY, CONTROLLERS, PATH }) => ({ HIERARCHY, CONTROLLERS, PATH }))).toEqual(
        want,
      );
      expect(rows[0].COMM).toBe(byPid.get(pid)!.COMM);
    }

    // In vmi's process (trusted) the same plugins give the same rows for every process
    // both runs saw (processes come and go between the runs; each run has its own shadow).
    const t = await vmiTrusted('plugins', 'run', 'capsets', 'cgroups', '--guest', NAME, '-r', 'json');
    expect(t.code, t.stderr).toBe(0);
    expect(t.stderr).toBe('');
    const trustedOut = JSON.parse(t.stdout) as typeof out;
    for (const plugin of ['capsets', 'cgroups'] as const) {
      const task = (row: Record<string, unknown>) => `${String(row.PID)} ${String(row.COMM)}`;
      const tasks = (rows: Array<Record<string, unknown>>) =>
        new Set(rows.filter((row) => row.COMM !== 'vmi-shadow').map(task));
      const seen = tasks(trustedOut[plugin]);
      const both = [...tasks(out[plugin])].filter((k) => seen.has(k));
      expect(both.length, plugin).toBeGreaterThan(10);
      const pick = (rows: Array<Record<string, unknown>>) =>
        rows.filter((row) => both.includes(task(row))).map((row) => JSON.stringify(row));
      expect(pick(trustedOut[plugin]), plugin).toEqual(pick(out[plugin]));
    }

    const unlink = await vmi('plugins', 'unlink', 'vmi-pack-sample');
    expect(unlink.code, unlink.stderr).toBe(0);
    expect((await vmi('plugins', 'run', '--list')).stdout).not.toContain('capsets  (');
  });

  it('a pack that throws on load costs one warning; built-ins still run', async () => {
    const dir = await tempPack('vmi-pack-broken', "throw new Error('deliberately broken pack');\n");
    expect((await vmi('plugins', 'link', dir, '--no-install')).code).toBe(0);
    try {
      const r = await vmi('plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json');
      expect(r.code, r.stderr).toBe(0);
      expect(lines(r.stderr)).toEqual([
        'vmi: warning: plugin pack vmi-pack-broken failed to load: deliberately broken pack',
      ]);
      const rows = JSON.parse(r.stdout) as Array<{ PID: number }>;
      expect(rows.map((x) => x.PID)).toContain(pids['worker-1']);
    } finally {
      expect((await vmi('plugins', 'unlink', 'vmi-pack-broken')).code).toBe(0);
    }
  });

  describe('a pack that writes', () => {
    const CREATE = '/tmp/vmi-should-not-exist';
    const VICTIM = '/tmp/vmi-pack-victim';
    const VICTIM2 = '/tmp/vmi-pack-victim-2';

    beforeAll(async () => {
      // Imports vmi/sdk with no node_modules of its own: the CLI maps it to its own SDK.
      const dir = await tempPack(
        'vmi-pack-writer',
        `import { definePlugin, flags } from 'vmi/sdk';
const columns = [{ name: 'RET', type: 'int64' }];
const options = {
  what: { type: 'string', description: 'create | unlink | kill', default: 'create' },
  pid: { type: 'integer', description: 'process to kill', default: 0 },
  path: { type: 'string', description: 'file to unlink', default: '${VICTIM}' },
};
async function act(ctx) {
  const b = ctx.sys.batch();
  const o = ctx.options;
  const enc = (s) => ({ in: new TextEncoder().encode(s + '\\0') });
  const r =
    o.what === 'create' ? b.openat(flags.AT_FDCWD, '${CREATE}', flags.O_WRONLY | flags.O_CREAT | flags.O_TRUNC, 0o644)
    : o.what === 'unlink' ? b.call('unlink', [enc(o.path)])
    : b.call('kill', [o.pid, 9]);
  await b.submit();
  return [{ RET: r.result().ret }];
}
const base = { version: '1.0.0', columns, options, run: act };
export const plugins = [
  definePlugin({ ...base, name: 'sneaky', description: 'writes without declaring it' }),
  definePlugin({ ...base, name: 'tamper', description: 'declares its writes',
    needs: { syscalls: ['unlink', 'kill'], writeFiles: true } }),
];
`,
      );
      const link = await vmi('plugins', 'link', dir, '--no-install');
      expect(link.code, link.stderr).toBe(0);
      const made = await guestRun(guest, `rm -f ${CREATE}; echo keep > ${VICTIM}; echo keep > ${VICTIM2}`);
      expect(made.status).toBe(0);
    });

    afterAll(async () => {
      await vmi('plugins', 'unlink', 'vmi-pack-writer');
    });

    async function guestState() {
      const worker = pids['worker-2'];
      const sh = await guestRun(
        guest,
        `test -e ${CREATE} && echo created; test -e ${VICTIM} && echo victim; kill -0 ${worker} && echo alive`,
      );
      return sh.output.trim().split('\n');
    }

    it('a declared writer is refused without --allow-write: one line, exit 1, no change', async () => {
      for (const what of ['create', 'unlink', 'kill']) {
        const r = await vmi(
          'plugins',
          'run',
          'tamper',
          '--what',
          what,
          '--pid',
          String(pids['worker-2']),
          '--guest',
          NAME,
        );
        expect(r.code).toBe(1);
        expect(lines(r.stderr)).toEqual([
          "vmi: error: plugin 'tamper' changes the guest (it declares unlink, kill, open for writing): pass --allow-write to run it",
        ]);
        expect(r.stdout).toBe('');
      }
      expect(await guestState()).toEqual(['victim', 'alive']);
    });

    it('an undeclared write is refused by the policy before it reaches the guest', async () => {
      const cases: Array<[string, RegExp]> = [
        [
          'create',
          /^vmi: error: (sneaky: )?plugin 'sneaky' is not allowed to call openat "\/tmp\/vmi-should-not-exist" with O_WRONLY\|O_CREAT\|O_TRUNC: /,
        ],
        ['unlink', /^vmi: error: (sneaky: )?plugin 'sneaky' is not allowed to call unlink: /],
        ['kill', /^vmi: error: (sneaky: )?plugin 'sneaky' is not allowed to call kill: /],
      ];
      for (const [what, re] of cases) {
        // --allow-write does not help: sneaky declares nothing.
        const r = await vmi(
          'plugins',
          'run',
          'sneaky',
          '--what',
          what,
          '--pid',
          String(pids['worker-2']),
          '--guest',
          NAME,
          '--allow-write',
        );
        expect(r.code, what).toBe(1);
        expect(lines(r.stderr), what).toHaveLength(1);
        expect(lines(r.stderr)[0], what).toMatch(re);
      }
      expect(await guestState()).toEqual(['victim', 'alive']);
    });

    it('with --allow-write a declared write does happen', async () => {
      const r = await vmi(
        'plugins',
        'run',
        'tamper',
        '--what',
        'unlink',
        '--path',
        VICTIM2,
        '--guest',
        NAME,
        '--allow-write',
        '-r',
        'json',
      );
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([{ RET: 0, __children: [] }]);
      expect((await guestRun(guest, `test -e ${VICTIM2}`)).status).not.toBe(0);
      expect(await guestState()).toEqual(['victim', 'alive']);
    });
  });
});
