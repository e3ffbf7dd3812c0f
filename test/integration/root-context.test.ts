/**
 * The shadow sees the guest as its init does, whichever task it borrows (issue 12).
 *
 * One lab guest; for each sandbox condition (labsandbox, built with the lab), a sandboxed
 * root task is started from the console and vmi is made to borrow it first
 * (preferVictimPid). Then the tables must equal what the guest reports from PID 1's
 * context (the console shell is init's child and shares its namespaces: checked), the
 * sandboxed task must be exactly as it was, and vmi's own report must say whether it
 * borrowed that task or refused it, and why.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import { lsmod } from '../../src/plugins/lsmod.js';
import { lsof } from '../../src/plugins/lsof.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { banner } from '../../src/plugins/banner.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';
import { RedirectSession } from '../../src/shadow/session.js';
import { guestProcs, guestSh } from './helpers/guest-shell.js';
import { startSandbox, stopSandbox, type Sandbox } from './helpers/sandbox.js';
import { runVmi } from './helpers/cli.js';
import { records } from '../helpers/records.js';

const NAME = 't-rootctx';
const NS = ['pid', 'user', 'net', 'uts', 'ipc', 'cgroup'] as const;

/** What the guest itself says, from init's context (the console shell). */
interface Truth {
  stablePids: Set<number>;
  seenPids: Set<number>;
  listeners: Set<string>;
  mountPoints: string[];
  /** Every mount namespace a guest process is in (readlink /proc/PID/ns/mnt), and init's. */
  mntNamespaces: Set<bigint>;
  initMnt: bigint;
  modules: string[];
  hostname: string;
  initNs: Record<string, string>;
  holderFds: Map<number, string>;
}

async function truthFromConsole(
  guest: LabGuest,
  holder: number,
): Promise<Omit<Truth, 'stablePids' | 'seenPids'>> {
  const nsOut = await guestSh(
    guest,
    `for n in ${NS.join(' ')}; do echo "$n $(readlink /proc/1/ns/$n) $(readlink /proc/self/ns/$n)"; done`,
  );
  const initNs: Record<string, string> = {};
  for (const line of nsOut.trim().split('\n')) {
    const [n, init, self] = line.trim().split(' ');
    // Ground truth from init's context: the console shell must share it.
    expect(self, `console shell's ${n} namespace`).toBe(init);
    initNs[n!] = init!;
  }
  const tcp = await guestSh(guest, 'cat /proc/net/tcp /proc/net/tcp6');
  const listeners = new Set<string>();
  for (const line of tcp.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[3] === '0A') listeners.add(String(parseInt(f[1]!.split(':')[1]!, 16)));
  }
  const mountPoints = (await guestSh(guest, 'cat /proc/1/mountinfo'))
    .trim()
    .split('\n')
    .map((l) => l.split(' ')[4]!);
  const mntLinks = (
    await guestSh(
      guest,
      'readlink /proc/1/ns/mnt; for d in /proc/[0-9]*; do readlink $d/ns/mnt; done 2>/dev/null; true',
    )
  )
    .split('\n')
    .map((l) => /^mnt:\[(\d+)\]$/.exec(l.trim())?.[1])
    .filter((x): x is string => x !== undefined)
    .map(BigInt);
  const initMnt = mntLinks[0]!;
  const mntNamespaces = new Set(mntLinks);
  const modules = (await guestSh(guest, 'cat /proc/modules'))
    .trim()
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .sort();
  const hostname = (await guestSh(guest, 'hostname')).trim();
  const holderFds = new Map<number, string>();
  for (const line of (
    await guestSh(guest, `cd /proc/${holder}/fd && for f in *; do echo "$f $(readlink $f)"; done`)
  )
    .trim()
    .split('\n')) {
    const sp = line.indexOf(' ');
    holderFds.set(Number(line.slice(0, sp)), line.slice(sp + 1));
  }
  return { listeners, mountPoints, mntNamespaces, initMnt, modules, hostname, initNs, holderFds };
}

/** Everything of the sandboxed task a bootstrap could disturb, as the guest shows it. */
async function taskSnapshot(guest: LabGuest, pid: number): Promise<string> {
  return guestSh(
    guest,
    `cd /proc/${pid} && cat maps && for f in fd/*; do echo "$f $(readlink $f)"; done && grep -E '^(State|Sig|Shd|Cap|Seccomp|NSpid|NoNewPrivs)' status | grep -v '^State' && cat cgroup && cat limits && for n in ${NS.join(' ')} mnt; do readlink ns/$n; done && readlink root && readlink cwd`,
  );
}

/** The stack pointer and pc of the task's current syscall (/proc/PID/syscall), when it is in one. */
async function syscallRegs(guest: LabGuest, pid: number): Promise<string | undefined> {
  for (let i = 0; i < 20; i++) {
    const f = (await guestSh(guest, `cat /proc/${pid}/syscall`)).trim().split(' ');
    if (f[0] === '35') return `${f[7]} ${f[8]}`; // nanosleep: sp, pc
  }
  return undefined;
}

const PLUGINS = [pslist, psaux, sockstat, mountinfo, lsmod, lsof, banner];

/**
 * A task's context as the guest shows it: namespaces (but mnt: the shadow's is a private
 * copy by design), root, seccomp, capabilities, cgroup, nice, CPUs, rlimits.
 */
async function contextFromConsole(guest: LabGuest, pid: number): Promise<string> {
  return guestSh(
    guest,
    `cd /proc/${pid} && for n in pid user net uts ipc cgroup; do readlink ns/$n; done; readlink root; ` +
      `grep -E '^(Seccomp|NoNewPrivs|Cap(Eff|Prm|Bnd)|Cpus_allowed_list):' status; cat cgroup; ` +
      `s=$(cat stat); set -- \${s##*) }; echo "nice \${17} policy \${39}"; cat limits`,
  );
}

/**
 * pslist ... lsof through one session that borrows `prefer` first; before the plugins run,
 * the shadow's context as the guest shows it must be PID 1's.
 */
async function runAll(guest: LabGuest, prefer: number): Promise<PluginsRun> {
  const session = await RedirectSession.attach(guest, { preferVictimPid: prefer });
  try {
    expect(await contextFromConsole(guest, session.stats.shadowPid), "the shadow is in init's context").toBe(
      await contextFromConsole(guest, 1),
    );
  } catch (err) {
    await session.detach();
    throw err;
  }
  return runPluginsOnGuest(
    guest,
    PLUGINS.map((plugin) => ({ plugin, options: {} })),
    { attach: async () => session },
  );
}

describe('the shadow runs in the guest root context whatever it borrows', () => {
  let guest: LabGuest;
  let holder: number;
  let ticker: number;
  let worker1: number;

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    const pids = parseLabPids(await guestSh(guest, `cat ${LAB_WORKLOAD.pidsFile}`));
    holder = pids.holder!;
    ticker = pids.ticker!;
    worker1 = pids['worker-1']!;
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  /** Runs every plugin with the sandbox preferred and compares with the guest's own view. */
  async function checkAgainstGuest(sb: Sandbox): Promise<PluginsRun> {
    const t = await truthFromConsole(guest, holder);
    const snap = await taskSnapshot(guest, sb.pid);
    const regs = await syscallRegs(guest, sb.pid);
    const before = await guestProcs(guest);
    const run = await runAll(guest, sb.nsPid);
    const after = await guestProcs(guest);
    const tables = Object.fromEntries(run.tables.map((x) => [x.plugin, x]));
    expect(run.failures).toEqual([]);

    // pslist: every process alive before and after is listed, and nothing that never existed.
    const rows = records(tables.pslist!);
    const listed = new Set(rows.map((r) => r.PID as number));
    const shadowPid = run.session.shadowPid;
    for (const pid of before.keys()) if (after.has(pid)) expect(listed.has(pid), `pid ${pid}`).toBe(true);
    for (const r of rows)
      // The lab's ticker starts a `sleep 10` every 10 s: one may come and go in between.
      if (r.PID !== shadowPid && !(r.COMM === 'sleep' && r.PPID === ticker))
        expect(
          before.has(r.PID as number) || after.has(r.PID as number),
          // PID_NS_ID is a bigint, which JSON.stringify refuses.
          JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
        ).toBe(true);
    expect(listed.has(sb.pid)).toBe(true);
    // psaux: argv as the guest has it.
    const cmdline = (await guestSh(guest, `tr '\\0' ' ' < /proc/${worker1}/cmdline`)).trimEnd();
    expect(records(tables.psaux!).find((r) => r.PID === worker1)?.ARGS).toBe(cmdline);
    // sockstat: the listeners of init's network namespace.
    const vmiListeners = new Set(
      records(tables.sockstat!)
        .filter((r) => r.State === 'LISTEN' && r.Proto === 'TCP')
        .map((r) => String(r['Source Port'])),
    );
    expect(vmiListeners).toEqual(t.listeners);
    // mountinfo: init's namespace first, with init's mounts (not the shadow's own /proc);
    // then the other namespaces of guest processes (the sandbox's), never the shadow's.
    const mi = records(tables.mountinfo!);
    expect(mi[0]?.MNT_NS_ID).toBe(t.initMnt);
    expect(mi.filter((r) => r.MNT_NS_ID === t.initMnt).map((r) => r.MOUNT_POINT)).toEqual(t.mountPoints);
    for (const r of mi)
      expect(t.mntNamespaces.has(r.MNT_NS_ID as bigint), `MNT_NS_ID ${String(r.MNT_NS_ID)}`).toBe(true);
    // lsmod, lsof, banner.
    expect(
      records(tables.lsmod!)
        .map((r) => r.Name as string)
        .sort(),
    ).toEqual(t.modules);
    const fds = new Map(
      records(tables.lsof!)
        .filter((r) => r.PID === holder)
        // The guest's readlink carries the kernel's ` (deleted)`; lsof has it as a Deleted fact.
        .map((r) => [r.FD as number, r.Deleted ? `${String(r.Path)} (deleted)` : (r.Path as string)]),
    );
    expect(fds).toEqual(t.holderFds);
    expect(records(tables.banner!)[0]!.NODENAME).toBe(t.hostname);
    // The context, as the tables' metadata records it, is init's.
    const meta = tables.pslist!.metadata;
    expect(meta['shadow.context']).toBe('root (verified)');
    for (const n of NS) expect(meta['shadow.namespaces']).toContain(t.initNs[n]!);
    expect(meta['shadow.seccomp']).toBe('0');
    // The sandboxed task is exactly as it was.
    expect(await taskSnapshot(guest, sb.pid)).toBe(snap);
    if (regs !== undefined) expect(await syscallRegs(guest, sb.pid)).toBe(regs);
    return run;
  }

  // Conditions the shadow can leave behind: it borrows the task and fixes its context.
  const fixable: [string, string][] = [
    ['own mount namespace', '--mntns'],
    ['own network namespace', '--netns'],
    ['own UTS namespace', '--utsns'],
    ['own IPC namespace', '--ipcns'],
    ['own cgroup namespace', '--cgroupns'],
    ['chroot', '--chroot /tmp/sandbox-root'],
    ['own cgroup with cpu.max (room to fork)', '--cgroup sandbox-cpu --pids-slack 2'],
    ['nice 19', '--nice 19'],
    ['RLIMIT_NOFILE 16', '--nofile 16'],
    [
      'all fixable conditions at once',
      '--mntns --netns --utsns --ipcns --cgroupns --chroot /tmp/sandbox-root --cgroup sandbox-fix --pids-slack 2 --nice 19 --nofile 16',
    ],
  ];
  for (const [what, flags] of fixable) {
    it(`borrows a task with ${what} and still sees init's view`, async () => {
      const sb = await startSandbox(guest, flags);
      try {
        const run = await checkAgainstGuest(sb);
        expect(run.session.victimPid, "vmi's report of the pid it borrowed").toBe(sb.nsPid);
        expect(run.session.refusals).toEqual([]);
      } finally {
        await stopSandbox(guest);
      }
    });
  }

  // Conditions that cannot be undone from inside: the task is refused, another one used.
  const refused: [string, string, RegExp][] = [
    ['own PID namespace', '--pidns --mntns', /child PID namespace/],
    ['a seccomp filter refusing W+X mmaps', '--seccomp-wx', /seccomp mode 2/],
    ['dropped capabilities', '--drop-caps', /procfs|capabilities/],
    ['a cgroup whose pids.max is its task count', '--cgroup sandbox-pids', /clone refused \(EAGAIN\)/],
    ['every condition at once', '--all', /seccomp mode 2|child PID namespace/],
  ];
  for (const [what, flags, reason] of refused) {
    it(`refuses a task with ${what}, names it, and runs on another`, async () => {
      const sb = await startSandbox(guest, flags);
      try {
        const run = await checkAgainstGuest(sb);
        expect(run.session.refusals[0]?.pid, "vmi's report of the pid it tried first").toBe(sb.nsPid);
        expect(run.session.refusals[0]?.reason).toMatch(reason);
        expect(run.session.victimPid).not.toBe(0);
        expect(run.tables[0]!.metadata['shadow.refused']).toMatch(reason);
      } finally {
        await stopSandbox(guest);
      }
    });
  }

  it('the CLI names the refused task and prints the table', async () => {
    const sb = await startSandbox(guest, '--seccomp-wx');
    try {
      const r = await runVmi(
        ['plugins', 'run', 'pslist', '--guest', NAME, '--victim-pid', String(sb.nsPid), '--timing'],
        {
          env: { COLUMNS: '200' },
        },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`pid ${sb.nsPid} refused: seccomp mode 2`);
      expect(r.stdout).toContain('sandbox-busy');
    } finally {
      await stopSandbox(guest);
    }
  });

  it('the trap transport and the resident shadow keep the root context', async () => {
    const sb = await startSandbox(guest, '--mntns --netns --chroot /tmp/sandbox-root --nice 19');
    try {
      const lab = Object.values(parseLabPids(await guestSh(guest, `cat ${LAB_WORKLOAD.pidsFile}`)));
      const trap = await runVmi(
        [
          'plugins',
          'run',
          'pslist',
          '--guest',
          NAME,
          '--transport',
          'trap',
          '--victim-pid',
          String(sb.nsPid),
          '-r',
          'json',
        ],
        { timeoutMs: 120_000 },
      );
      expect(trap.code, trap.stderr).toBe(0);
      const pids = (JSON.parse(trap.stdout) as { PID: number }[]).map((r) => r.PID);
      for (const pid of [1, ...lab, sb.pid]) expect(pids).toContain(pid);

      // A resident shadow forked off the sandboxed task: its context is init's.
      const start = await runVmi(['shadow', 'start', '--guest', NAME, '--victim-pid', String(sb.nsPid)]);
      expect(start.code, start.stderr).toBe(0);
      const shadowPid = Number(/resident shadow pid (\d+)/.exec(start.stdout)![1]);
      const links = async (pid: number | string): Promise<string> =>
        guestSh(
          guest,
          `for n in pid user net uts ipc cgroup; do readlink /proc/${pid}/ns/$n; done; readlink /proc/${pid}/root`,
        );
      expect(await links(shadowPid)).toBe(await links(1));
      expect(await guestSh(guest, `grep -E '^(Seccomp|CapEff):' /proc/${shadowPid}/status`)).toBe(
        await guestSh(guest, `grep -E '^(Seccomp|CapEff):' /proc/1/status`),
      );
      expect((await guestSh(guest, `cat /proc/${shadowPid}/cgroup`)).trim()).toBe('0::/');

      // Someone enters its mount namespace and covers its /proc: the next run notices,
      // replaces it, and its table is still the guest's.
      await guestSh(guest, `nsenter -t ${shadowPid} -m mount -t tmpfs fake /proc`);
      const again = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME, '-r', 'json', '--timing']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toMatch(/resident shadow is unusable: .*context changed/);
      const after = (JSON.parse(again.stdout) as { PID: number }[]).map((r) => r.PID);
      for (const pid of [1, ...lab]) expect(after).toContain(pid);
    } finally {
      await runVmi(['shadow', 'stop', '--guest', NAME]);
      await stopSandbox(guest);
    }
  });

  it("what a guest process mounts over /proc does not change vmi's tables", async () => {
    const plain = await runPluginsOnGuest(guest, [{ plugin: psaux, options: {} }]);
    const rowsOf = (run: PluginsRun): string[] =>
      records(run.tables[0]!)
        // The ticker's `sleep 10` comes and goes; exited shadows linger until init reaps them;
        // the kernel starts and ends kworkers as its workqueues need (a loaded host: often).
        .filter(
          (r) => r.COMM !== 'sleep' && r.COMM !== 'vmi-shadow' && !String(r.COMM).startsWith('kworker/'),
        )
        .map((r) => `${r.PID} ${r.COMM} ${r.ARGS}`);
    try {
      // Hide one process's /proc directory, then cover /proc as a whole.
      await guestSh(guest, `mount -t tmpfs hide /proc/${worker1}`);
      expect(await guestSh(guest, `cat /proc/${worker1}/cmdline 2>&1; true`)).not.toContain('labd');
      const hidden = await runPluginsOnGuest(guest, [{ plugin: psaux, options: {} }]);
      expect(rowsOf(hidden)).toEqual(rowsOf(plain));
      await guestSh(guest, 'mkdir -p /tmp/fakeproc/1 && mount --bind /tmp/fakeproc /proc');
      const covered = await runPluginsOnGuest(guest, [{ plugin: psaux, options: {} }]);
      expect(rowsOf(covered)).toEqual(rowsOf(plain));
    } finally {
      await guestSh(guest, `umount /proc 2>/dev/null; umount /proc/${worker1} 2>/dev/null; true`);
    }
  });

  it('fails with one line and no table when only tasks of a child PID namespace make syscalls', async () => {
    const sb = await startSandbox(guest, '--pidns --mntns');
    // Stop every other user task (not init, not the console shell, not the sandbox).
    const shell = Number((await guestSh(guest, 'echo $$')).trim());
    const quiet = [...(await guestProcs(guest)).values()]
      .filter((p) => p.pid > 2 && p.ppid !== 2 && p.pid !== shell && !p.comm.startsWith('sandbox-'))
      .map((p) => p.pid);
    try {
      await guestSh(guest, `kill -STOP ${quiet.join(' ')} 2>/dev/null; true`);
      const r = await runVmi(['plugins', 'run', 'pslist', '--guest', NAME], { timeoutMs: 90_000 });
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe('');
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(new RegExp(`pid ${sb.nsPid}: in a child PID namespace`));
    } finally {
      await guestSh(guest, `kill -CONT ${quiet.join(' ')} 2>/dev/null; true`);
      await stopSandbox(guest);
    }
  }, 120_000);
});
