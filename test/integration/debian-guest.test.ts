/**
 * The debian lab flavour (a real-VM-like guest: Debian 12 with systemd on a partitioned
 * virtio disk, SeaBIOS + SYSLINUX boot, a virtio NIC with no backend off the host), booted
 * once with 1 GiB, attached by vmi, every plugin result compared with the guest's own
 * console. The first run on a machine builds the image (debootstrap: minutes).
 */
import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileSha256 } from '../../src/lab/debian-image.js';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import type { ResultTable } from '../../src/output/table.js';
import type { RowValue } from '../../src/output/columns.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';
import { records } from '../helpers/records.js';
import { guestProcs, guestSh, unseenRows, type GuestProc } from './helpers/guest-shell.js';

const NAME = 'realvm-guest';

/** A kworker's comm names the workqueue it last ran (kworker/0:1-events): it changes under us. */
const kworker = (comm: string): string => comm.replace(/^(kworker\/[^-]+)-.*$/, '$1');

/** TCP listeners (LISTEN = 0A) of /proc/net/tcp or tcp6 text, as "family addr port" (pure). */
function listeners(text: string, family: 'AF_INET' | 'AF_INET6'): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*\d+: ([0-9A-F]+):([0-9A-F]{4}) [0-9A-F]+:0000 0A /gm)) {
    out.push(`${family} ${addr(m[1], family)} ${parseInt(m[2], 16)}`);
  }
  return out.sort();
}

/** /proc/net/tcp(6) address hex (32-bit words in host = little-endian order) as text. */
function addr(hex: string, family: 'AF_INET' | 'AF_INET6'): string {
  const bytes = Buffer.from(hex, 'hex');
  for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  if (family === 'AF_INET') return [...bytes].join('.');
  return bytes.every((b) => b === 0) ? '::' : bytes.toString('hex');
}

describe('debian lab flavour: a Debian 12 + systemd VM booted through firmware', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const tables: Record<string, ResultTable> = {};
  const truth = {
    cmdline: '',
    init: '',
    rootMount: '',
    blockDevices: '',
    netAddresses: '',
    netDriver: '',
    mountinfo: '',
    tcp: '',
    tcp6: '',
    initNetNs: 0n,
    bios: '',
    cmdlines: new Map<number, string>(),
    procsBefore: new Map<number, GuestProc>(),
    procsAfter: new Map<number, GuestProc>(),
  };
  const measured: Record<string, string> = {};
  let baseShaBefore = '';

  beforeAll(async () => {
    await labDown(NAME);
    const t0 = performance.now();
    guest = await labUp({ name: NAME, flavour: 'debian', memMiB: 1024, onProgress: (m) => console.log(m) });
    measured.labUp = `${((performance.now() - t0) / 1000).toFixed(1)} s`;
    baseShaBefore = await fileSha256(guest.disk!.base);
    const con = await GuestConsole.connect(guest.serialSocket);
    try {
      const sh = async (c: string): Promise<string> => {
        const r = await con.run(c);
        expect(r.status, `${c}: ${r.output}`).toBe(0);
        return r.output;
      };
      truth.cmdline = (await sh('cat /proc/cmdline')).trim();
      truth.init = (await sh('cat /proc/1/comm')).trim();
      truth.rootMount = await sh('awk \'$5 == "/"\' /proc/1/mountinfo');
      truth.blockDevices = await sh('ls /sys/block');
      truth.netAddresses = await sh('cat /sys/class/net/*/address');
      truth.netDriver = await sh(
        'for n in /sys/class/net/*; do [ -e $n/device/driver ] && basename $(readlink $n/device/driver); done; true',
      );
      truth.bios = (await sh('cat /sys/class/dmi/id/bios_vendor')).trim();
      truth.initNetNs = BigInt(/net:\[(\d+)\]/.exec(await sh('readlink /proc/1/ns/net'))![1]);
    } finally {
      con.close();
    }
    // The plugins' truth, read just before the run (nothing in the guest churns listeners or mounts).
    truth.mountinfo = await guestSh(guest, 'cat /proc/1/mountinfo');
    truth.tcp = await guestSh(guest, 'cat /proc/net/tcp');
    truth.tcp6 = await guestSh(guest, 'cat /proc/net/tcp6 2>/dev/null; true');
    const cmdOut = await guestSh(
      guest,
      `for d in /proc/[0-9]*; do a=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; echo "\${d#/proc/}|$a"; done`,
    );
    for (const line of cmdOut.split('\n')) {
      const m = /^(\d+)\|(.*)$/.exec(line);
      if (m) truth.cmdlines.set(Number(m[1]), m[2].trim());
    }
    truth.procsBefore = await guestProcs(guest);
    const t1 = performance.now();
    run = await runPluginsOnGuest(
      guest,
      [pslist, psaux, mountinfo, sockstat].map((plugin) => ({ plugin, options: {} })),
    );
    measured.run = `attach ${run.session.attachMs.toFixed(0)} ms, pslist ${run.pluginMs.pslist?.toFixed(0)} ms, all four ${(performance.now() - t1).toFixed(0)} ms`;
    for (const t of run.tables) tables[t.plugin] = t;
    truth.procsAfter = await guestProcs(guest);
  }, 45 * 60_000);

  afterAll(async () => {
    console.log('debian guest:', measured);
    await labDown(NAME);
  });

  it('boots through SeaBIOS and SYSLINUX (no -kernel) into systemd, root on /dev/vda, a virtio NIC', async () => {
    // SYSLINUX puts BOOT_IMAGE= in front of the APPEND line; QEMU's -kernel would not.
    expect(truth.cmdline).toMatch(/^BOOT_IMAGE=\/vmlinuz root=\/dev\/vda2 /);
    const qemuArgv = (await readFile(`/proc/${guest.pid}/cmdline`, 'utf8')).split('\0');
    expect(qemuArgv).not.toContain('-kernel');
    expect(qemuArgv.some((a) => a.startsWith('virtio-blk-pci,') && a.includes('bootindex=0'))).toBe(true);
    expect(truth.bios).toBe('SeaBIOS');
    const log = await readFile(guest.consoleLog, 'utf8');
    expect(log).toMatch(/SYSLINUX \d/);
    expect(truth.init).toBe('systemd');
    // proc_pid_mountinfo: ID PARENT MAJ:MIN ROOT POINT OPTIONS ... - ext4 /dev/vda2 ...
    expect(truth.rootMount).toMatch(/ \/ \/ rw[^\n]* - ext4 \/dev\/vda2 /);
    expect(truth.blockDevices.split(/\s+/)).toContain('vda');
    expect(truth.netAddresses.split('\n')).toContain(guest.nic!.mac);
    expect(truth.netDriver.split('\n')).toContain('virtio_net');
    // The NIC's backend is a hub port alone on its hub: nothing leaves QEMU.
    const netdevs = qemuArgv.filter((_, i) => qemuArgv[i - 1] === '-netdev');
    expect(netdevs).toEqual(['hubport,id=net0,hubid=0']);
  });

  it('reports no problems', () => {
    for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
  });

  for (const plugin of ['pslist', 'psaux']) {
    it(`${plugin} equals the guest's process list (PID, PPID, COMM)`, () => {
      const rows = records(tables[plugin]).filter((r) => r.PID !== run.session.shadowPid);
      const byPid = new Map(rows.map((r) => [r.PID as number, r]));
      let compared = 0;
      for (const p of truth.procsBefore.values()) {
        if (kworker(truth.procsAfter.get(p.pid)?.comm ?? '') !== kworker(p.comm)) continue;
        const row = byPid.get(p.pid);
        expect(row, `pid ${p.pid} (${p.comm}) missing`).toBeDefined();
        expect(row!.PPID, `PPID of ${p.pid}`).toBe(p.ppid);
        expect(kworker(row!.COMM as string), `COMM of ${p.pid}`).toBe(kworker(p.comm));
        compared++;
      }
      expect(compared).toBeGreaterThan(40);
      expect(
        unseenRows(rows, truth.procsBefore, truth.procsAfter).map(
          (r) => `${String(r.PID)} ${String(r.COMM)}`,
        ),
      ).toEqual([]);
      const comms = new Set(rows.map((r) => r.COMM));
      for (const c of ['systemd', 'systemd-journal', 'systemd-udevd', 'busybox'])
        expect(comms, c).toContain(c);
    });
  }

  it("psaux's ARGS equal /proc/PID/cmdline as the guest's shell reads it", () => {
    let compared = 0;
    for (const r of records(tables.psaux)) {
      const pid = r.PID as number;
      const want = truth.cmdlines.get(pid);
      if (!want || truth.procsAfter.get(pid)?.comm !== truth.procsBefore.get(pid)?.comm) continue;
      expect(r.ARGS, `ARGS of ${pid}`).toBe(want);
      compared++;
    }
    expect(compared).toBeGreaterThan(5);
    const args = records(tables.psaux).map((r) => r.ARGS);
    expect(args).toContain('/bin/busybox nc -ll -p 7000 -e /bin/cat');
    expect(args).toContain('/bin/busybox httpd -f -p 127.0.0.1:8080 -h /srv/www');
    expect(args).toContain('/usr/local/sbin/labd monitor /run/vmi-monitor.beat');
  });

  it("mountinfo's init namespace equals the guest's /proc/1/mountinfo", () => {
    const all = records(tables.mountinfo);
    const rows = all.filter((r) => r.MNT_NS_ID === all[0]?.MNT_NS_ID);
    const guestLines = truth.mountinfo
      .trim()
      .split('\n')
      .map((l) => l.trim().replace(/ +/g, ' '));
    const asLine = (r: Record<string, RowValue>): string =>
      [
        r['MOUNT ID'],
        r.PARENT_ID,
        r['MAJOR:MINOR'],
        r.ROOT,
        r.MOUNT_POINT,
        r.MOUNT_OPTIONS,
        ...(r.FIELDS ? [r.FIELDS] : []),
        '-',
        r.FSTYPE,
        r.MOUNT_SRC,
        r.SB_OPTIONS,
      ]
        .map(String)
        .join(' ');
    expect(guestLines.length).toBeGreaterThan(15);
    expect(rows.map(asLine).sort()).toEqual([...guestLines].sort());
    // The sandboxed services live in mount namespaces of their own (PrivateTmp, ProtectSystem).
    expect(new Set(all.map((r) => r.MNT_NS_ID)).size).toBeGreaterThan(1);
  });

  it("sockstat's TCP listeners in init's network namespace equal /proc/net/tcp and tcp6", () => {
    const want = [...listeners(truth.tcp, 'AF_INET'), ...listeners(truth.tcp6, 'AF_INET6')].sort();
    const got = [
      ...new Set(
        records(tables.sockstat)
          .filter((r) => r.Proto === 'TCP' && r.State === 'LISTEN' && r.NetNS === truth.initNetNs)
          .map((r) => `${String(r.Family)} ${String(r['Source Addr'])} ${String(r['Source Port'])}`),
      ),
    ].sort();
    expect(want.some((l) => l.endsWith(' 7000'))).toBe(true);
    expect(want).toContain('AF_INET 127.0.0.1 8080');
    expect(got).toEqual(want);
  });

  it('never changes the cached base image: guest writes go to its qcow2 overlay', async () => {
    const disk = guest.disk!;
    expect(disk.overlay.startsWith(guest.runDir)).toBe(true);
    expect((await stat(disk.base)).mode & 0o222).toBe(0);
    await guestSh(guest, 'echo written-by-the-test > /root/overlay-probe && sync');
    expect(await guestSh(guest, 'cat /root/overlay-probe')).toBe('written-by-the-test\n');
    await labDown(NAME);
    expect(await fileSha256(disk.base)).toBe(baseShaBefore);
    expect(baseShaBefore).toBe(disk.baseSha256);
  });
});
