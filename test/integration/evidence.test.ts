/**
 * Evidence exactly as the guest holds it, on one booted lab guest, through the CLI:
 * - byte text: an environment value, a comm and a path with a 0xFF byte, as JSON, CSV and
 *   Arrow give them, decoded back to bytes and compared with the guest's own hex (od);
 * - Deleted: an unlinked file `r` beside a file really named `r (deleted)` (lsof), and an
 *   unlinked executable beside one really named `busybox (deleted)` (maps), against the
 *   link counts the guest's `stat -L` reports;
 * - the shadow left out of pslist, psaux, envars, lsof and maps, and kept and marked with
 *   --include-shadow (a resident shadow, so the guest's console can see it meanwhile);
 * - `vmi plugins run … | head -1`: status 0, nothing on stderr, the guest running.
 * Ground truth is always the guest's console, never vmi's output.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, type Table } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { textToBytes } from '../../src/util/byte-text.js';
import { parseCsv } from '../helpers/csv.js';
import { requireBuilt, runProcess, runVmi, VMI_BIN } from './helpers/cli.js';
import { guestProcs, guestSh } from './helpers/guest-shell.js';

const NAME = 't-evidence';
type Rec = Record<string, unknown>;

/** Hex of the bytes `od -An -tx1 -v` printed, without the trailing newline byte the command added. */
function odHex(out: string, dropNewline = true): string {
  const bytes = out.match(/\b[0-9a-f]{2}\b/g) ?? [];
  if (dropNewline && bytes[bytes.length - 1] === '0a') bytes.pop();
  return bytes.join('');
}
const hexOf = (text: unknown): string => Buffer.from(textToBytes(String(text))).toString('hex');

describe('evidence exactly as the guest holds it', () => {
  let guest: LabGuest;
  let dir: string;
  const pids: Record<string, number> = {};
  const truth = {
    envHex: '',
    commHex: '',
    pathHex: '',
    /** readlink of fds 4 and 5 (`r` unlinked, `r (deleted)` linked): the kernel's text. */
    links: [] as string[],
    /** stat -L %h of fd 4, fd 5, the unlinked exe, the exe named `busybox (deleted)`. */
    nlinks: [] as number[],
    shadowPid: 0,
    shadowFds: 0,
    shadowEnv: 0,
    shadowMaps: 0,
  };
  const json: Record<string, Rec[]> = {};
  let jsonRun = { code: 0, stderr: '' };

  const vmi = (args: string[]) => runVmi(args, { timeoutMs: 180_000 });

  beforeAll(async () => {
    requireBuilt('dist/commands/plugins/run.js', 'dist/commands/shadow/start.js');
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    dir = await mkdtemp(join(tmpdir(), 'vmi-evidence-'));
    // Each condition created from the guest's console, as a user would.
    const setup = await guestSh(
      guest,
      [
        'mkdir -p /tmp/ev/u /tmp/ev/m',
        `env "LD_PRELOAD=$(printf '/tmp/x.so\\377')" sleep 1000 & echo "env=$!"`,
        `sh -c 'printf "c\\377m" > /proc/$$/comm; while :; do sleep 5; done' & echo "comm=$!"`,
        `f="/tmp/ev/$(printf 'p\\377th')"; echo data > "$f"; echo r > /tmp/ev/r; echo d > "/tmp/ev/r (deleted)"`,
        `sleep 1000 3<"$f" 4</tmp/ev/r 5<"/tmp/ev/r (deleted)" & echo "fd=$!"`,
        `cp /bin/busybox /tmp/ev/u/busybox; cp /bin/busybox "/tmp/ev/m/busybox (deleted)"`,
        `/tmp/ev/u/busybox sleep 1000 & echo "uexe=$!"`,
        `"/tmp/ev/m/busybox (deleted)" sleep 1000 & echo "mexe=$!"`,
        'sleep 1; rm /tmp/ev/r /tmp/ev/u/busybox',
      ].join('\n'),
    );
    for (const m of setup.matchAll(/^(\w+)=(\d+)$/gm)) pids[m[1]] = Number(m[2]);
    expect(Object.keys(pids).sort(), setup).toEqual(['comm', 'env', 'fd', 'mexe', 'uexe']);

    truth.envHex = odHex(
      await guestSh(
        guest,
        `tr '\\0' '\\n' < /proc/${pids.env}/environ | grep '^LD_PRELOAD=' | od -An -tx1 -v`,
      ),
    ).slice('LD_PRELOAD='.length * 2);
    truth.commHex = odHex(await guestSh(guest, `od -An -tx1 -v /proc/${pids.comm}/comm`));
    truth.pathHex = odHex(await guestSh(guest, `readlink /proc/${pids.fd}/fd/3 | od -An -tx1 -v`));
    truth.links = (await guestSh(guest, `readlink /proc/${pids.fd}/fd/4; readlink /proc/${pids.fd}/fd/5`))
      .trim()
      .split('\n');
    truth.nlinks = (
      await guestSh(
        guest,
        `stat -L -c %h /proc/${pids.fd}/fd/4 /proc/${pids.fd}/fd/5 /proc/${pids.uexe}/exe /proc/${pids.mexe}/exe`,
      )
    )
      .trim()
      .split('\n')
      .map(Number);

    // A resident shadow: it stays, so the console can look at it while the tables are made.
    const start = await vmi(['shadow', 'start', '--guest', NAME]);
    expect(start.code, start.stderr).toBe(0);
    truth.shadowPid = Number(/resident shadow pid (\d+)/.exec(start.stdout)?.[1]);
    const seen = await guestSh(
      guest,
      `p=${truth.shadowPid}; cat /proc/$p/comm; ls /proc/$p/fd | wc -l; tr '\\0' '\\n' < /proc/$p/environ | grep -c =; wc -l < /proc/$p/maps`,
    );
    const [comm, fds, env, maps] = seen.trim().split('\n');
    expect(comm).toBe('vmi-shadow');
    truth.shadowFds = Number(fds);
    truth.shadowEnv = Number(env);
    truth.shadowMaps = Number(maps);

    const r = await vmi([
      'plugins',
      'run',
      'pslist',
      'psaux',
      'envars',
      'lsof',
      'maps',
      '--guest',
      NAME,
      '-r',
      'json',
    ]);
    jsonRun = r;
    if (r.code === 0) Object.assign(json, JSON.parse(r.stdout) as Record<string, Rec[]>);
  }, 600_000);

  afterAll(async () => {
    await vmi(['shadow', 'stop', '--guest', NAME]).catch(() => undefined);
    await labDown(NAME);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the guest made the conditions (0xFF bytes present, link counts 0 and 1)', () => {
    expect(truth.envHex).toBe(Buffer.from('/tmp/x.so\xff', 'latin1').toString('hex'));
    expect(truth.commHex).toBe('63ff6d');
    expect(truth.pathHex).toBe(Buffer.from('/tmp/ev/p\xffth', 'latin1').toString('hex'));
    // The kernel's text cannot tell them apart; the link counts can.
    expect(truth.links).toEqual(['/tmp/ev/r (deleted)', '/tmp/ev/r (deleted)']);
    expect(truth.nlinks).toEqual([0, 1, 0, 1]);
  });

  it('JSON: the environment value, comm and path decode to the guest bytes', () => {
    expect(jsonRun.code, jsonRun.stderr).toBe(0);
    const env = json.envars.find((r) => r.PID === pids.env && r.KEY === 'LD_PRELOAD')!;
    expect(env.VALUE).toBe('/tmp/x.so\\xff');
    expect(hexOf(env.VALUE)).toBe(truth.envHex);
    const comm = json.pslist.find((r) => r.PID === pids.comm)!;
    expect(hexOf(comm.COMM)).toBe(truth.commHex);
    expect(hexOf(json.psaux.find((r) => r.PID === pids.comm)!.COMM)).toBe(truth.commHex);
    const fd3 = json.lsof.find((r) => r.PID === pids.fd && r.FD === 3)!;
    expect(hexOf(fd3.Path)).toBe(truth.pathHex);
  });

  it('lsof: Deleted is the link count; the unlinked `r` and the file named `r (deleted)` apart', () => {
    const fd = (n: number) => json.lsof.find((r) => r.PID === pids.fd && r.FD === n)!;
    const strip = (link: string, nlink: number) => (nlink === 0 ? link.replace(/ \(deleted\)$/, '') : link);
    for (const [i, n] of [4, 5].entries()) {
      expect(fd(n).Deleted, `fd ${n}`).toBe(truth.nlinks[i] === 0);
      expect(fd(n).Path, `fd ${n}`).toBe(strip(truth.links[i], truth.nlinks[i]));
    }
    expect([fd(4).Path, fd(5).Path]).toEqual(['/tmp/ev/r', '/tmp/ev/r (deleted)']);
    expect(fd(3).Deleted).toBe(false);
  });

  it('maps: the unlinked executable and the one named `busybox (deleted)` apart', () => {
    const exeRows = (pid: number) =>
      json.maps.filter((r) => r.PID === pid && String(r['File Path']).startsWith('/tmp/ev/'));
    const u = exeRows(pids.uexe);
    const m = exeRows(pids.mexe);
    expect(u.length).toBeGreaterThan(0);
    expect(m.length).toBeGreaterThan(0);
    for (const r of u)
      expect([r['File Path'], r.Deleted]).toEqual(['/tmp/ev/u/busybox', truth.nlinks[2] === 0]);
    for (const r of m)
      expect([r['File Path'], r.Deleted]).toEqual(['/tmp/ev/m/busybox (deleted)', truth.nlinks[3] === 0]);
  });

  it('no table holds the shadow by default', () => {
    expect(jsonRun.code, jsonRun.stderr).toBe(0);
    for (const plugin of ['pslist', 'psaux', 'envars', 'lsof', 'maps']) {
      expect(json[plugin].length, plugin).toBeGreaterThan(0);
      expect(
        json[plugin].filter((r) => r.PID === truth.shadowPid),
        plugin,
      ).toEqual([]);
      expect(
        json[plugin].some((r) => 'VMI_SHADOW' in r),
        plugin,
      ).toBe(false);
    }
    expect(json.pslist.map((r) => r.COMM)).not.toContain('vmi-shadow');
  });

  it('--include-shadow keeps its rows, marked, as many as the guest shows it has', async () => {
    const r = await vmi([
      'plugins',
      'run',
      'pslist',
      'psaux',
      'envars',
      'lsof',
      'maps',
      '--guest',
      NAME,
      '--include-shadow',
      '-r',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const t = JSON.parse(r.stdout) as Record<string, Rec[]>;
    const want: Record<string, number> = {
      pslist: 1,
      psaux: 1,
      envars: truth.shadowEnv,
      lsof: truth.shadowFds,
      maps: truth.shadowMaps,
    };
    for (const [plugin, n] of Object.entries(want)) {
      const marked = t[plugin].filter((x) => x.VMI_SHADOW === true);
      expect(marked.length, plugin).toBe(n);
      expect(n, plugin).toBeGreaterThan(0);
      expect(
        marked.every((x) => x.PID === truth.shadowPid),
        plugin,
      ).toBe(true);
      expect(
        t[plugin].filter((x) => x.PID === truth.shadowPid && x.VMI_SHADOW !== true),
        plugin,
      ).toEqual([]);
    }
    expect(t.pslist.find((x) => x.VMI_SHADOW === true)?.COMM).toBe('vmi-shadow');
    // The guest still shows it (resident), so the default tables above did leave it out.
    expect((await guestProcs(guest)).get(truth.shadowPid)?.comm).toBe('vmi-shadow');
  });

  it('CSV and Arrow carry the same bytes, Arrow with the scheme in the field metadata', async () => {
    const csvDir = join(dir, 'csv/');
    const arrowDir = join(dir, 'arrow/');
    for (const [format, out] of [
      ['csv', csvDir],
      ['arrow', arrowDir],
    ]) {
      const r = await vmi([
        'plugins',
        'run',
        'pslist',
        'envars',
        'lsof',
        '--guest',
        NAME,
        '-r',
        format,
        '-o',
        out,
      ]);
      expect(r.code, r.stderr).toBe(0);
    }
    const csv = async (plugin: string): Promise<Rec[]> => {
      const [head, ...rows] = parseCsv(await readFile(join(csvDir, `${plugin}.csv`), 'utf8'));
      return rows.map((row) => Object.fromEntries(head.map((h, i) => [h, row[i]])));
    };
    const arrow = async (plugin: string): Promise<{ t: Table; rows: Rec[] }> => {
      const t = tableFromIPC(await readFile(join(arrowDir, `${plugin}.arrow`)));
      return { t, rows: t.toArray().map((r: { toJSON(): Rec }) => r.toJSON()) };
    };
    const envCsv = (await csv('envars')).find((r) => r.PID === String(pids.env) && r.KEY === 'LD_PRELOAD')!;
    expect(hexOf(envCsv.VALUE)).toBe(truth.envHex);
    expect(hexOf((await csv('pslist')).find((r) => r.PID === String(pids.comm))!.COMM)).toBe(truth.commHex);
    expect(hexOf((await csv('lsof')).find((r) => r.PID === String(pids.fd) && r.FD === '3')!.Path)).toBe(
      truth.pathHex,
    );

    const env = await arrow('envars');
    expect(env.t.schema.fields.find((f) => f.name === 'VALUE')!.metadata.get('vmi.encoding')).toBe(
      'utf8-xescape',
    );
    expect(env.t.schema.metadata.get('vmi.shadow.pid')).toBe(String(truth.shadowPid));
    expect(hexOf(env.rows.find((r) => r.PID === pids.env && r.KEY === 'LD_PRELOAD')!.VALUE)).toBe(
      truth.envHex,
    );
    expect(hexOf((await arrow('pslist')).rows.find((r) => r.PID === pids.comm)!.COMM)).toBe(truth.commHex);
    const lsof = await arrow('lsof');
    expect(hexOf(lsof.rows.find((r) => r.PID === pids.fd && r.FD === 3)!.Path)).toBe(truth.pathHex);
    expect(lsof.t.schema.fields.find((f) => f.name === 'Deleted')!.type.toString()).toBe('Bool');
  });

  it('`vmi plugins run pslist | head -1` (and a table bigger than the pipe) exits 0 quietly; the guest runs on', async () => {
    // pslist as the issue has it; several tables as JSON are far more than a pipe holds
    // (64 KiB), so vmi surely writes on after head has exited (EPIPE).
    for (const [label, args] of [
      ['pslist', 'pslist'],
      ['big', 'maps envars lsof psaux -r json'],
    ]) {
      const errFile = join(dir, `${label}.err`);
      const r = await runProcess(
        'bash',
        [
          '-c',
          `"${process.execPath}" "${VMI_BIN}" plugins run ${args} --guest ${NAME} 2>"${errFile}" | head -1; echo "status=\${PIPESTATUS[0]}"`,
        ],
        { timeoutMs: 180_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/status=0\n$/);
      expect(await readFile(errFile, 'utf8'), label).toBe('');
    }
    // Not paused, no breakpoint left armed: QEMU says running and the guest's shell answers.
    const qmp = await QmpClient.connect(guest.qmpSocket);
    try {
      expect((await qmp.execute<{ status: string }>('query-status')).status).toBe('running');
    } finally {
      qmp.close();
    }
    expect((await guestSh(guest, 'echo alive')).trim()).toBe('alive');
  });
});
