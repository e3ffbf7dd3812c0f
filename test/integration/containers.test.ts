/**
 * Containers and namespaces on a real lab guest (one boot), against the guest's own
 * console: a docker-named container (own PID and mount namespaces, /proc mounted inside,
 * like `unshare -p -f -m --mount-proc`), a Kubernetes-pod-named cgroup, a network
 * namespace with 10.9.9.9 on its lo, a mount namespace with its own tmpfs; then a capture
 * taken while a `sleep 2` runs, replayed: the frozen clone still lists it after 5 s.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture } from '../../src/capture/create.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { isAbsent } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { ifconfig } from '../../src/plugins/ifconfig.js';
import { lsof } from '../../src/plugins/lsof.js';
import { maps } from '../../src/plugins/maps.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { pstree } from '../../src/plugins/pstree.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { runPluginsOnGuest, type PluginRequest } from '../../src/runner/run-plugins.js';
import { definePlugin } from '../../src/sdk/plugin.js';
import { withReplay } from '../../src/targets/capture.js';
import { records } from '../helpers/records.js';
import { guestProcs, guestRun, guestSh } from './helpers/guest-shell.js';

const NAME = 't-containers';
const DOCKER_ID = '3f4e5a6b7c8d' + '0123456789abcdef'.repeat(3) + '0a1b';
const POD = '4b3c1e2a-9f0d-4c1b-8a7e-2d5f6a7b8c9d';
const K8S_ID = 'c0ffee' + 'ab'.repeat(29);
const DOCKER_CG = `/docker/${DOCKER_ID}`;
const K8S_CG = `/kubepods/burstable/pod${POD}/${K8S_ID}`;

/** PIDs (as init sees them) of the processes whose argv is exactly `argv`. */
async function pidsOf(guest: LabGuest, argv: string): Promise<number[]> {
  const out = await guestSh(
    guest,
    `for d in /proc/[0-9]*; do [ "$(tr '\\0' ' ' < $d/cmdline 2>/dev/null)" = "${argv} " ] && echo \${d#/proc/}; done; true`,
  );
  return out
    .split('\n')
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number);
}

/** One process by argv, waiting for it to appear (it was started in the background). */
async function pidOf(guest: LabGuest, argv: string): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await pidsOf(guest, argv);
    if (p.length === 1) return p[0];
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no single process '${argv}' in the guest`);
}

/** The inode in a /proc/PID/ns/X link, as the guest's console reads it. */
async function nsInode(guest: LabGuest, pid: number, ns: string): Promise<bigint> {
  const link = (await guestSh(guest, `readlink /proc/${pid}/ns/${ns}`)).trim();
  const m = new RegExp(`^${ns}:\\[(\\d+)\\]$`).exec(link);
  expect(m, `readlink /proc/${pid}/ns/${ns}: ${link}`).not.toBeNull();
  return BigInt(m![1]);
}

async function run(guest: LabGuest, requests: PluginRequest[]): Promise<ResultTable[]> {
  const r = await runPluginsOnGuest(guest, requests);
  expect(r.failures.map((f) => f.message)).toEqual([]);
  return r.tables;
}

describe('containers and namespaces', () => {
  let guest: LabGuest;
  let work: string;
  const pid: Record<string, number> = {};

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    work = await mkdtemp(join(tmpdir(), 'vmi-containers-test-'));
    // Docker's cgroupfs naming; own PID and mount namespaces with /proc mounted inside.
    await guestSh(
      guest,
      `mkdir -p /sys/fs/cgroup${DOCKER_CG} && setsid sh -c 'echo $$ > /sys/fs/cgroup${DOCKER_CG}/cgroup.procs; ` +
        `exec unshare -p -f -m --mount-proc sh -c "sleep 7102 & exec sleep 7101"' </dev/null >/dev/null 2>&1 &`,
    );
    // A Kubernetes pod's container (cgroupfs driver naming).
    await guestSh(
      guest,
      `mkdir -p /sys/fs/cgroup${K8S_CG} && setsid sh -c 'echo $$ > /sys/fs/cgroup${K8S_CG}/cgroup.procs; exec sleep 7201' </dev/null >/dev/null 2>&1 &`,
    );
    // A network namespace with an address of its own.
    await guestSh(
      guest,
      `setsid unshare -n sh -c 'ip link set lo up && ip addr add 10.9.9.9/32 dev lo && exec sleep 7301' </dev/null >/dev/null 2>&1 &`,
    );
    // A mount namespace with a tmpfs only it has.
    await guestSh(
      guest,
      `mkdir -p /tmp/nsmnt && setsid unshare -m sh -c 'mount -t tmpfs -o size=1m vmi-ns-tmpfs /tmp/nsmnt && exec sleep 7401' </dev/null >/dev/null 2>&1 &`,
    );
    // A zombie: a child that its parent never waits for.
    await guestSh(guest, `setsid sh -c 'sleep 0.1 & exec sleep 7501' </dev/null >/dev/null 2>&1 &`);
    for (const [k, argv] of [
      ['zombieParent', 'sleep 7501'],
      ['docker1', 'sleep 7101'],
      ['docker2', 'sleep 7102'],
      ['k8s', 'sleep 7201'],
      ['net', 'sleep 7301'],
      ['mnt', 'sleep 7401'],
    ])
      pid[k] = await pidOf(guest, argv);
  });

  afterAll(async () => {
    await labDown(NAME);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('pslist, pstree, psaux: PID namespace, NSpid, cgroup and CONTAINER as the guest reads them', async () => {
    const [ps, tree, aux] = await run(guest, [
      { plugin: pslist, options: {} },
      { plugin: pstree, options: {} },
      { plugin: psaux, options: {} },
    ]);
    for (const t of [ps, tree, aux])
      expect(t.columns.map((c) => c.name)).toEqual(
        expect.arrayContaining(['PID_NS_ID', 'NSPID', 'CGROUP', 'CONTAINER']),
      );
    const want = async (p: number) => {
      const status = await guestSh(guest, `cat /proc/${p}/status`);
      const nspid = /^NSpid:\s+(.*)$/m.exec(status)![1].trim().split(/\s+/).join(' ');
      const cgroup = (await guestSh(guest, `cat /proc/${p}/cgroup`)).trim().replace(/^0::/, '');
      return { PID_NS_ID: await nsInode(guest, p, 'pid'), NSPID: nspid, CGROUP: cgroup };
    };
    for (const t of [ps, tree, aux]) {
      const by = new Map(records(t).map((r) => [r.PID, r]));
      for (const k of ['docker1', 'docker2', 'k8s', 'net'] as const) {
        expect(by.get(pid[k]), `${t.plugin} ${k}`).toMatchObject(await want(pid[k]));
      }
      // The container's init is PID 1 in its namespace, its child 2: NSpid has both levels.
      expect(by.get(pid.docker1)!.NSPID).toBe(`${pid.docker1} 1`);
      expect(by.get(pid.docker2)!.NSPID).toBe(`${pid.docker2} 2`);
      expect(by.get(pid.docker1)!.PID_NS_ID).not.toBe(by.get(1)!.PID_NS_ID);
      expect(by.get(1)!.PID_NS_ID).toBe(0xeffffffcn); // PROC_PID_INIT_INO
      expect(by.get(pid.docker1)!.CONTAINER).toBe(`docker:${DOCKER_ID}`);
      expect(by.get(pid.docker2)!.CONTAINER).toBe(`docker:${DOCKER_ID}`);
      expect(by.get(pid.k8s)!.CONTAINER).toBe(`k8s:${POD}/${K8S_ID}`);
      expect(by.get(pid.net)!.CONTAINER).toBeNull();
      expect(by.get(1)!.CONTAINER).toBeNull();
    }
    // A zombie keeps its row. Its nsproxy is released, but /proc/PID/ns/pid comes from its
    // struct pid, which a zombie keeps: the guest's own readlink says which.
    const zombie = [...(await guestProcs(guest)).values()].find((p) => p.ppid === pid.zombieParent);
    expect(zombie?.state, 'the guest shows the zombie').toBe('Z');
    const z = records(ps).find((r) => r.PID === zombie!.pid);
    expect(z).toMatchObject({ STATE: 'Z', NSPID: String(zombie!.pid) });
    const link = (await guestRun(guest, `readlink /proc/${zombie!.pid}/ns/pid`)).output.trim();
    if (/^pid:\[\d+\]$/.test(link)) expect(z!.PID_NS_ID).toBe(BigInt(/\d+/.exec(link)![0]));
    else expect(isAbsent(z!.PID_NS_ID), `guest readlink: ${link}`).toBe(true);
  });

  it('--container selects the container’s processes in the process, socket, file and mount plugins', async () => {
    const [ps, aux, tree, files, mm, socks, mounts] = await run(guest, [
      { plugin: pslist, options: { container: [DOCKER_ID.slice(0, 12)] } },
      { plugin: psaux, options: { container: ['k8s:'] } },
      { plugin: pstree, options: { container: [POD] } },
      { plugin: lsof, options: { container: [`docker:${DOCKER_ID.slice(0, 12)}`] } },
      { plugin: maps, options: { container: [K8S_ID] } },
      { plugin: sockstat, options: { container: ['*'] } },
      { plugin: mountinfo, options: { container: ['docker:'] } },
    ]);
    // The guest's word: every process whose cgroup is the docker one (the unshare parent too).
    const inDocker = (await guestSh(guest, `grep -l '^0::${DOCKER_CG}$' /proc/[0-9]*/cgroup; true`))
      .split('\n')
      .map((l) => /^\/proc\/(\d+)\/cgroup$/.exec(l.trim())?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    expect(inDocker).toEqual(expect.arrayContaining([pid.docker1, pid.docker2]));
    expect(records(ps).map((r) => r.PID)).toEqual(inDocker);
    expect(records(aux).map((r) => r.PID)).toEqual([pid.k8s]);
    // pstree keeps the ancestors needed to place the pod's process.
    const treePids = records(tree).map((r) => r.PID);
    expect(treePids).toContain(pid.k8s);
    expect(treePids).toContain(1);
    expect(treePids).not.toContain(pid.docker1);
    expect(new Set(records(files).map((r) => r.PID))).toEqual(new Set(inDocker));
    expect(new Set(records(mm).map((r) => r.PID))).toEqual(new Set([pid.k8s]));
    expect(socks.rows).toEqual([]); // sleeps hold no sockets; the lab's listeners are in no container
    const ns = await nsInode(guest, pid.docker1, 'mnt');
    expect(new Set(records(mounts).map((r) => r.MNT_NS_ID))).toEqual(new Set([ns]));
    // Its own /proc, mounted by --mount-proc.
    expect(records(mounts).some((r) => r.MOUNT_POINT === '/proc' && r.FSTYPE === 'proc')).toBe(true);
  });

  it('ifconfig: 10.9.9.9 in its own network namespace; mountinfo: every mount namespace', async () => {
    const [ifc, mi] = await run(guest, [
      { plugin: ifconfig, options: {} },
      { plugin: mountinfo, options: {} },
    ]);
    const netns = await nsInode(guest, pid.net, 'net');
    const rootNet = await nsInode(guest, 1, 'net');
    const rows = records(ifc);
    expect(
      rows.filter((r) => r['IP Address'] === '10.9.9.9').map((r) => [r.NetNS, r.Interface, r.Prefix]),
    ).toEqual([[netns, 'lo', 32]]);
    // init's namespace is still there, first, with sysfs cells.
    expect(rows[0].NetNS).toBe(rootNet);
    expect(rows.some((r) => r.NetNS === rootNet && r['IP Address'] === '127.0.0.1' && r.State === 'UP')).toBe(
      true,
    );

    const mntns = await nsInode(guest, pid.mnt, 'mnt');
    const initMnt = await nsInode(guest, 1, 'mnt');
    const m = records(mi);
    expect(m[0].MNT_NS_ID).toBe(initMnt);
    const tmpfs = m.filter((r) => r.MOUNT_SRC === 'vmi-ns-tmpfs');
    expect(tmpfs.map((r) => [r.MNT_NS_ID, r.MOUNT_POINT, r.FSTYPE])).toEqual([
      [mntns, '/tmp/nsmnt', 'tmpfs'],
    ]);
    const guestNs = new Set(
      (await guestSh(guest, 'for d in /proc/[0-9]*; do readlink $d/ns/mnt; done 2>/dev/null; true'))
        .split('\n')
        .map((l) => /^mnt:\[(\d+)\]$/.exec(l.trim())?.[1])
        .filter((x): x is string => x !== undefined)
        .map(BigInt),
    );
    // Exactly the namespaces the guest's processes are in (the shadow's own private one,
    // gone with it by now, is not listed).
    const listed = new Set(m.map((r) => r.MNT_NS_ID));
    expect(listed).toEqual(guestNs);
    expect(
      listed.has(initMnt) && listed.has(mntns) && listed.has(await nsInode(guest, pid.docker1, 'mnt')),
    ).toBe(true);
    // With --mnt-ns, that namespace alone.
    const [only] = await run(guest, [{ plugin: mountinfo, options: { 'mnt-ns': [String(mntns)] } }]);
    expect(new Set(records(only).map((r) => r.MNT_NS_ID))).toEqual(new Set([mntns]));
  });

  it('a replay shows the captured instant: a sleep 2 alive at the capture is still listed after 5 s', async () => {
    // The sleep starts once the capture has copied its boot files, right before the pause
    // (capture create's step hook): only a few QMP queries lie between the two.
    let sleeper = 0;
    let startMs = 0;
    const cap = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'c.vmicap'),
      guestName: guest.name,
      kernelRelease: guest.kernelRelease,
      onStep: async (step) => {
        if (step !== 'boot-files') return;
        const t0 = Date.now();
        sleeper = Number((await guestSh(guest, 'sleep 2 </dev/null >/dev/null 2>&1 & echo $!')).trim());
        startMs = Date.now() - t0;
      },
    });
    expect(sleeper).toBeGreaterThan(1);
    // The host-time wait happens inside the replay, between two plugin runs of one attach.
    const wait5 = definePlugin({
      name: 'wait5',
      description: 'Waits 5 s (host time) while the replay clone runs',
      version: '1.0.0',
      columns: [{ name: 'WAITED', type: 'int32', description: 'ms' }],
      async run() {
        const t0 = Date.now();
        await new Promise((r) => setTimeout(r, 5000));
        return [{ WAITED: Date.now() - t0 }];
      },
    });
    const [first, , after] = await withReplay(cap.path, async (replay) => {
      const r = await runPluginsOnGuest(replay.guest, [
        { plugin: pslist, options: {} },
        { plugin: wait5, options: {} },
        { plugin: pslist, options: {} },
      ]);
      expect(r.failures).toEqual([]);
      return r.tables;
    });
    expect(startMs, 'starting the sleep from the console').toBeLessThan(1500);
    console.log(
      `sleep 2 started in ${startMs} ms before the pause; ${String(first.metadata['replay.frozen'])}`,
    );
    for (const t of [first, after]) {
      const row = records(t).find((r) => r.PID === sleeper);
      expect(row, `sleep 2 (pid ${sleeper}) in the replay`).toBeDefined();
      expect(row!.COMM).toBe('sleep');
      expect(row!.STATE).toBe('S');
      // Root-cgroup tasks were moved to be frozen: reported where they were.
      expect(row!.CGROUP).toBe('/');
    }
    expect(String(first.metadata['replay.frozen'])).toMatch(/^yes: cgroup v2 freezer/);
    // Containers are reported as in the live guest, and nothing is left over from the freeze.
    const live = new Map(
      records((await run(guest, [{ plugin: pslist, options: {} }]))[0]).map((r) => [r.PID, r]),
    );
    const replayed = records(after);
    for (const r of replayed) {
      const l = live.get(r.PID);
      if (!l || l.COMM !== r.COMM || r.COMM === 'vmi-shadow') continue;
      expect([r.PID, r.CGROUP, r.CONTAINER, r.NSPID]).toEqual([l.PID, l.CGROUP, l.CONTAINER, l.NSPID]);
    }
    expect(replayed.some((r) => String(r.CGROUP).includes('vmi-replay-frozen'))).toBe(false);
    // The live guest: that sleep has long ended.
    expect((await guestSh(guest, `[ -e /proc/${sleeper} ] && echo alive || echo gone`)).trim()).toBe('gone');
  });
});
