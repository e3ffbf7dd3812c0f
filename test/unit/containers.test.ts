import { describe, expect, it } from 'vitest';
import { parsePidCgroup, parsePidStatus, ProcParseError } from '../../src/abi/linux/proc/index.js';
import { lsof } from '../../src/plugins/lsof.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { pstree } from '../../src/plugins/pstree.js';
import { containerLabel, containerMatches, containerOf } from '../../src/sdk/containers.js';
import { isAbsent } from '../../src/output/columns.js';
import { runPlugin } from '../../src/sdk/plugin.js';
import { records } from '../helpers/records.js';
import { addFakeProcess, fakeProcGuest, fakeStatus, type FakeGuest } from './helpers/fake-guest.js';

const ID = 'a'.repeat(40) + '0123456789abcdef01234567';
const ID2 = 'b'.repeat(64);
const POD = '4b3c1e2a-9f0d-4c1b-8a7e-2d5f6a7b8c9d';

describe('containerOf: the runtimes’ cgroup naming', () => {
  const cases: [string, string | undefined][] = [
    [`/docker/${ID}`, `docker:${ID}`],
    [`/docker/${ID}/init.scope`, `docker:${ID}`],
    [`/system.slice/docker-${ID}.scope`, `docker:${ID}`],
    [`/kubepods/burstable/pod${POD}/${ID}`, `k8s:${POD}/${ID}`],
    [`/kubepods/pod${POD}/${ID}`, `k8s:${POD}/${ID}`],
    [`/kubepods/besteffort/pod${POD}/${ID}`, `k8s:${POD}/${ID}`],
    [
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replace(/-/g, '_')}.slice/cri-containerd-${ID}.scope`,
      `k8s:${POD}/${ID}`,
    ],
    [`/kubepods.slice/kubepods-pod${POD.replace(/-/g, '_')}.slice/crio-${ID}.scope`, `k8s:${POD}/${ID}`],
    [`/machine.slice/libpod-${ID}.scope`, `podman:${ID}`],
    [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, `podman:${ID}`],
    [`/libpod_parent/libpod-${ID}`, `podman:${ID}`],
    [`/machine.slice/libpod-conmon-${ID}.scope`, undefined],
    ['/machine.slice/machine-web\\x2d1.scope', 'nspawn:web-1'],
    ['/machine.slice/machine-web\\x2d1.scope/payload', 'nspawn:web-1'],
    ['/lxc/web', 'lxc:web'],
    ['/lxc.payload.web/init.scope', 'lxc:web'],
    ['/lxc.monitor.web', undefined],
    ['/', undefined],
    ['/system.slice/sshd.service', undefined],
    [`/docker/${ID.slice(1)}`, undefined], // 63 hex digits: not docker's id
    [`/mydocker/${ID}`, undefined],
    ['/sandbox-all', undefined],
  ];
  it.each(cases)('%s → %s', (path, want) => {
    const c = containerOf(path);
    expect(c ? containerLabel(c) : undefined).toBe(want);
  });

  it('--container values: label prefix, id/name/pod prefix, * for any', () => {
    const d = containerOf(`/docker/${ID}`)!;
    const k = containerOf(`/kubepods/burstable/pod${POD}/${ID2}`)!;
    expect(containerMatches(d, [ID.slice(0, 12)])).toBe(true);
    expect(containerMatches(d, [`docker:${ID.slice(0, 12)}`])).toBe(true);
    expect(containerMatches(d, ['docker:'])).toBe(true);
    expect(containerMatches(d, ['k8s:'])).toBe(false);
    expect(containerMatches(d, [ID2.slice(0, 12)])).toBe(false);
    expect(containerMatches(k, [POD])).toBe(true);
    expect(containerMatches(k, [`k8s:${POD}/`])).toBe(true);
    expect(containerMatches(k, ['*'])).toBe(true);
    expect(containerMatches(undefined, ['*'])).toBe(false);
    expect(containerMatches(d, [''])).toBe(false);
  });
});

describe('cgroup and NSpid parsing', () => {
  it('cgroup v2, v1 and paths with colons', () => {
    expect(parsePidCgroup('0::/docker/x:y\n')).toEqual({
      lines: [{ hierarchy: 0, controllers: '', path: '/docker/x:y' }],
      unified: '/docker/x:y',
    });
    const v1 = parsePidCgroup('12:cpu,cpuacct:/docker/a\n1:name=systemd:/docker/a\n');
    expect(v1.unified).toBeUndefined();
    expect(v1.lines).toHaveLength(2);
    expect(() => parsePidCgroup('')).toThrow(ProcParseError);
    expect(() => parsePidCgroup('0::relative\n')).toThrow(ProcParseError);
  });

  it('NSpid: every level, outermost first', () => {
    expect(parsePidStatus(fakeStatus(812, 'x', { nspid: [812, 5, 1] })).nspid).toEqual([812, 5, 1]);
    expect(() => parsePidStatus('Name:\tx\nNSpid:\t812\tz\n')).toThrow(ProcParseError);
  });
});

/** pids 1-3 on the host; 4 and 5 in a docker container (own PID and mount namespace); 6 in a pod. */
function containerGuest(): FakeGuest {
  const g = fakeProcGuest(3);
  for (const [pid, nspid, cg] of [
    [4, [4, 1], `/docker/${ID}`],
    [5, [5, 2], `/docker/${ID}`],
    [6, [6], `/kubepods/burstable/pod${POD}/${ID2}`],
  ] as const) {
    addFakeProcess(g, pid, `c${pid}`);
    g.addFile(`/proc/${pid}/status`, fakeStatus(pid, `c${pid}`, { nspid: [...nspid] }));
    g.addFile(`/proc/${pid}/cgroup`, `0::${cg}\n`);
    if (nspid.length > 1) g.addLink(`/proc/${pid}/ns/pid`, 'pid:[4026532400]');
  }
  const hostMi = '21 1 0:20 / / rw - ext4 /dev/vda rw\n';
  const ctrMi = '300 299 0:50 / / rw - overlay overlay rw\n301 300 0:51 / /tmp rw - tmpfs tmpfs rw\n';
  for (const pid of [1, 2, 3, 6]) {
    g.addLink(`/proc/${pid}/ns/mnt`, 'mnt:[4026531840]');
    g.addFile(`/proc/${pid}/mountinfo`, hostMi);
  }
  for (const pid of [4, 5]) {
    g.addLink(`/proc/${pid}/ns/mnt`, 'mnt:[4026532500]');
    g.addFile(`/proc/${pid}/mountinfo`, ctrMi);
  }
  // The shadow's private namespace is not the guest's.
  g.addLink('/proc/self/ns/mnt', 'mnt:[4026532999]');
  g.addLink('/proc/3/ns/mnt', 'mnt:[4026532999]');
  g.addFile('/proc/3/mountinfo', '99 98 0:60 / /proc rw - proc proc rw\n');
  return g;
}

describe('namespace columns and --container', () => {
  it('pslist: PID_NS_ID, NSPID, CGROUP, CONTAINER', async () => {
    const rows = records((await runPlugin(pslist, { executor: containerGuest() })).table);
    const by = new Map(rows.map((r) => [r.PID, r]));
    expect(by.get(1)).toMatchObject({ PID_NS_ID: 4026531836n, NSPID: '1', CGROUP: '/', CONTAINER: null });
    expect(by.get(5)).toMatchObject({
      PID_NS_ID: 4026532400n,
      NSPID: '5 2',
      CGROUP: `/docker/${ID}`,
      CONTAINER: `docker:${ID}`,
    });
    expect(by.get(6)!.CONTAINER).toBe(`k8s:${POD}/${ID2}`);
  });

  it('--container on pslist, psaux, pstree (with ancestors) and lsof', async () => {
    const g = containerGuest();
    const pids = async (plugin: typeof pslist | typeof psaux | typeof pstree, container: string[]) =>
      records((await runPlugin(plugin, { executor: g, options: { container } })).table).map((r) => r.PID);
    expect(await pids(pslist, [ID.slice(0, 12)])).toEqual([4, 5]);
    expect(await pids(psaux, ['k8s:'])).toEqual([6]);
    expect(await pids(pslist, ['*'])).toEqual([4, 5, 6]);
    expect(await pids(pslist, ['nothing'])).toEqual([]);
    // pstree keeps the ancestors (ppid 1) to place the container's processes.
    expect(await pids(pstree, [POD])).toEqual([1, 6]);
    for (const pid of [4, 5, 6]) g.addDir(`/proc/${pid}/fd`);
    g.addLink('/proc/6/fd/3', '/data/x');
    g.addFile('/proc/6/comm', 'c6\n');
    const l = records((await runPlugin(lsof, { executor: g, options: { container: [POD] } })).table);
    expect(l.map((r) => [r.PID, r.Path])).toEqual([[6, '/data/x']]);
    const none = await runPlugin(lsof, { executor: g, options: { container: ['nothing'] } });
    expect(none.table.rows).toEqual([]);
  });

  it('mountinfo: every mount namespace but the shadow’s, init’s first; --mnt-ns and --container', async () => {
    const g = containerGuest();
    const rows = records((await runPlugin(mountinfo, { executor: g })).table);
    expect(rows.map((r) => [r.MNT_NS_ID, r.MOUNT_POINT])).toEqual([
      [4026531840n, '/'],
      [4026532500n, '/'],
      [4026532500n, '/tmp'],
    ]);
    const only = records(
      (await runPlugin(mountinfo, { executor: g, options: { 'mnt-ns': ['4026532500'] } })).table,
    );
    expect(only.map((r) => r.MOUNT_POINT)).toEqual(['/', '/tmp']);
    const ctr = records(
      (await runPlugin(mountinfo, { executor: g, options: { container: ['docker:'] } })).table,
    );
    expect(ctr.every((r) => r.MNT_NS_ID === 4026532500n)).toBe(true);
    expect(ctr).toHaveLength(2);
  });
});

describe('a frozen replay clone', () => {
  it('reports the pre-freeze state and the root cgroup for the tasks vmi moved', async () => {
    const g = containerGuest();
    g.addFile('/proc/2/cgroup', '0::/vmi-replay-frozen-1234abcd\n');
    const frozen = { holdingCgroup: '/vmi-replay-frozen-1234abcd', stateBefore: { 2: 'R', 5: 'D' } };
    const rows = records((await runPlugin(pslist, { executor: g, frozen })).table);
    const by = new Map(rows.map((r) => [r.PID, r]));
    expect([by.get(2)!.STATE, by.get(2)!.CGROUP]).toEqual(['R', '/']);
    expect([by.get(5)!.STATE, by.get(5)!.CGROUP]).toEqual(['D', `/docker/${ID}`]);
    expect(by.get(1)!.STATE).toBe('S');
    // A live guest (no freeze): the files as they are.
    const live = records((await runPlugin(pslist, { executor: g })).table).find((r) => r.PID === 2)!;
    expect([live.STATE, live.CGROUP]).toEqual(['S', '/vmi-replay-frozen-1234abcd']);
  });
});

describe('a zombie', () => {
  it('keeps its row: its namespaces are gone (N/A), its NSpid is not', async () => {
    const g = containerGuest();
    g.remove('/proc/2/ns/pid');
    g.remove('/proc/2/cgroup');
    const { table } = await runPlugin(pslist, { executor: g });
    const z = records(table).find((r) => r.PID === 2)!;
    expect(z).toBeDefined();
    expect(isAbsent(z.PID_NS_ID) && isAbsent(z.CGROUP) && isAbsent(z.CONTAINER)).toBe(true);
    expect(z.NSPID).toBe('2');
    expect(table.errors).toEqual([]);
  });
});
