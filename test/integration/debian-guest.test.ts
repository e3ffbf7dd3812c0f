/**
 * The debian lab flavour (a real-VM-like guest: Debian 12 with systemd on a partitioned
 * virtio disk, SeaBIOS + SYSLINUX boot, a virtio NIC with no backend off the host), booted
 * once with 1 GiB, attached by vmi, every plugin result compared with the guest's own
 * console. The first run on a machine builds the image (debootstrap: minutes).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture, type CreateCaptureResult } from '../../src/capture/create.js';
import { fileSha256 } from '../../src/lab/debian-image.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { definePlugin } from '../../src/sdk/index.js';
import { withReplay } from '../../src/targets/capture.js';
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
import {
  consoleTruth,
  expectReplayMatches,
  tableRecords,
  type ConsoleTruth,
} from './helpers/capture-truth.js';
import { PLAIN_TERMINAL, runVmi, VMI_BIN } from './helpers/cli.js';
import { tampered } from './helpers/tampered-capture.js';
import { guestProcs, guestSh, kworker, unseenRows, type GuestProc } from './helpers/guest-shell.js';

const NAME = 'realvm-guest';

/** A file the capture tests write (on the root filesystem, i.e. the virtio disk): 8 KiB. */
const PROBE = '/root/capture-probe.txt';
const PROBE_BEFORE = 'captured-content';
/** Written over PROBE_BEFORE in place after the captures (same length: same blocks). */
const PROBE_AFTER = 'written-after!!!';

/**
 * Puts what the guest wrote into its disk's home blocks and drops the clean caches, so that
 * a replay's read of PROBE misses the page cache and reads the disk. The root is a
 * journaled ext4: sync only commits metadata to the journal, and jbd2 keeps the committed
 * buffers until a checkpoint; freezing the filesystem checkpoints the journal (ext4_freeze
 * → jbd2_journal_flush). (A directory listing is no probe: a 1 KiB directory block shares
 * its 4 KiB block-device page with other metadata that may stay cached.)
 */
const TO_DISK = 'sync && fsfreeze --freeze / && fsfreeze --unfreeze / && echo 3 > /proc/sys/vm/drop_caches';

/** The first line of PROBE, by the guest's own open/read through the shadow (a test plugin). */
const readProbe = definePlugin({
  name: 'readprobe',
  description: `First line of ${PROBE}`,
  version: '0.0.1',
  columns: [{ name: 'LINE', type: 'utf8' }] as const,
  async run(ctx) {
    const [r] = await ctx.sys.readFiles([PROBE]);
    if (!r.data) throw new Error(`${PROBE}: ${String(r.error)}`);
    return [{ LINE: Buffer.from(r.data).toString('latin1').split('\n')[0] }];
  },
});

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
  // Captures (issue 19): one reading the live disk, one --with-disks, the console around each.
  let work = '';
  let live: CreateCaptureResult;
  let pit: CreateCaptureResult;
  let liveTruth: [ConsoleTruth, ConsoleTruth];
  let pitTruth: [ConsoleTruth, ConsoleTruth];
  /** A `sleep` started between the two captures: absent from the first replay, present in the second. */
  let markerPid = 0;

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
    if (work) await rm(work, { recursive: true, force: true });
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
        // Compared only when the guest showed the same process before and after the run.
        const after = truth.procsAfter.get(p.pid);
        if (!after || kworker(after.comm) !== kworker(p.comm)) continue;
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

  it('capture create records the firmware-booted machine: SeaBIOS, no boot files, disk and NIC in their slots', async () => {
    work = await mkdtemp(join(tmpdir(), 'vmi-realcap-'));
    // Page cache dropped before each capture: a replay's read of PROBE reads the disk.
    await guestSh(
      guest,
      `printf '${PROBE_BEFORE}\\n' > ${PROBE} && dd if=/dev/zero bs=1024 count=8 >> ${PROBE} 2>/dev/null && ${TO_DISK}`,
    );
    const before = await consoleTruth(guest);
    live = await createCapture({ qmpSocket: guest.qmpSocket, output: join(work, 'live.vmicap') });
    liveTruth = [before, await consoleTruth(guest)];
    // Started after the first capture: the first replay must not have it.
    markerPid = Number((await guestSh(guest, 'sleep 4242 </dev/null >/dev/null 2>&1 & echo $!')).trim());
    await guestSh(guest, TO_DISK);
    const before2 = await consoleTruth(guest);
    expect(before2.procs.get(markerPid)?.comm).toBe('sleep');
    pit = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'pit.vmicap'),
      withDisks: true,
    });
    pitTruth = [before2, await consoleTruth(guest)];
    // Written after both captures, on the live disk (its qcow2 overlay), in its home blocks.
    await guestSh(
      guest,
      `printf '${PROBE_AFTER}\\n' | dd of=${PROBE} conv=notrunc 2>/dev/null && ${TO_DISK}`,
    );
    const mc = live.manifest.machine;
    expect(mc.firmware).toEqual({ boot: 'firmware', bios: 'bios-256k.bin', pflash: [] });
    expect(mc.kernelPart).toBeUndefined();
    expect(Object.keys(live.manifest.parts).some((p) => p.startsWith('boot/'))).toBe(false);
    expect(mc.machineType).toMatch(/^pc-q35-/);
    expect(mc.devices!.map((d) => d.type).sort()).toEqual(['virtio-blk-pci', 'virtio-net-pci']);
    // The slots and MAC the guest's own kernel sees (/sys/bus/pci/devices, /sys/class/net).
    const sysfs = await guestSh(
      guest,
      'for d in /sys/bus/pci/devices/*; do echo "${d##*/} $(cat $d/vendor) $(cat $d/device)"; done',
    );
    for (const d of mc.devices!) {
      const bdf = `0000:00:${(d.addr! >> 3).toString(16).padStart(2, '0')}.${d.addr! & 7}`;
      const want = d.type === 'virtio-blk-pci' ? '0x1af4 0x1001' : '0x1af4 0x1000';
      expect(sysfs, `${d.type} at ${bdf}`).toContain(`${bdf} ${want}`);
    }
    expect(mc.devices!.find((d) => d.type === 'virtio-net-pci')!.props.mac).toBe(guest.nic!.mac);
    // q35's own functions (host bridge, ICH9 LPC/SATA/SMBus), which the guest sees too.
    for (const f of ['00:00.0', '00:1f.0', '00:1f.2', '00:1f.3']) expect(sysfs).toContain(`0000:${f} `);
    expect(mc.disks).toMatchObject([{ path: guest.disk!.overlay, format: 'qcow2' }]);
    expect(live.manifest.disks).toBe('live');
    expect(pit.manifest.disks).toBe('point-in-time');
    expect(pit.manifest.machine.disks![0].copyPart).toBe('disks/disk0.qcow2');
    measured.capturePause = `live ${live.pauseMs.toFixed(0)} ms, --with-disks ${pit.pauseMs.toFixed(0)} ms`;
  });

  it('replays rebuild it: pslist, psaux, sockstat, mountinfo as the console showed at each pause; the disk copy is the pause instant; base and overlay never written', async () => {
    // The source guest is stopped (QEMU drains and flushes its disk) so that nothing but
    // the replays could change the base image or the overlay while they run.
    const q = await QmpClient.connect(guest.qmpSocket, { timeoutMs: 10_000 });
    await q.execute('stop');
    try {
      const shaBefore = [await fileSha256(guest.disk!.base), await fileSha256(guest.disk!.overlay)];
      const plugins = [pslist, psaux, sockstat, mountinfo, readProbe].map((plugin) => ({
        plugin,
        options: {},
      }));
      const opts = { minProcs: 40, minArgs: 5, minSockets: 5 };
      const t0 = performance.now();
      const liveRun = await withReplay(live.path, async (r) => {
        const run = await runPluginsOnGuest(r.guest, plugins);
        expect(run.failures).toEqual([]);
        expectReplayMatches(run.tables.slice(0, 4), ...liveTruth, {
          ...opts,
          shadowPid: run.session.shadowPid,
        });
        return {
          pids: records(run.tables[0]).map((x) => x.PID),
          probe: tableRecords(run.tables[4])[0]?.LINE,
          firstMs: performance.now() - t0,
        };
      });
      measured.replayLive = `${liveRun.firstMs.toFixed(0)} ms to all five tables`;
      expect(liveRun.pids, `the sleep started after the capture (pid ${markerPid})`).not.toContain(markerPid);
      // The live-disk replay reads the image as it is now: what was written after both captures.
      expect(liveRun.probe).toBe(PROBE_AFTER);
      const pitRun = await withReplay(pit.path, async (r) => {
        const run = await runPluginsOnGuest(r.guest, plugins);
        expect(run.failures).toEqual([]);
        expectReplayMatches(run.tables.slice(0, 4), ...pitTruth, {
          ...opts,
          shadowPid: run.session.shadowPid,
        });
        return {
          rows: records(run.tables[0]),
          probe: tableRecords(run.tables[4])[0]?.LINE,
        };
      });
      expect(pitRun.rows.find((x) => x.PID === markerPid)?.COMM).toBe('sleep');
      // ... while the --with-disks replay reads the copy made at its pause.
      expect(pitRun.probe, 'the file as it was at the --with-disks capture').toBe(PROBE_BEFORE);
      expect([await fileSha256(guest.disk!.base), await fileSha256(guest.disk!.overlay)]).toEqual(shaBefore);
    } finally {
      await q.execute('cont').catch(() => undefined);
      q.close();
    }
    expect((await guestSh(guest, `head -1 ${PROBE}`)).trim()).toBe(PROBE_AFTER);
  });

  it('a capture of a machine type this QEMU lacks, or whose manifest and device state disagree on it, fails with one line', async () => {
    // (A device type QEMU lacks and a gone disk image: capture-devices.test.ts.)
    const cases: [string, RegExp][] = [
      [
        'pc-q35-99.0',
        /QEMU \d+\.\d+\.\d+ has no machine type pc-q35-99\.0, which the capture was made on .*replay it on a host whose QEMU has pc-q35-99\.0/,
      ],
      [
        'pc-q35-6.2',
        /manifest says machine type pc-q35-6\.2 but the device state was saved on pc-q35-\d+\.\d+/,
      ],
    ];
    for (const [type, want] of cases) {
      const dst = join(work, `${type}.vmicap`);
      await tampered(live.path, dst, (m) => (m.machine.machineType = type));
      const r = await runVmi(['plugins', 'run', 'pslist', '--capture', dst], { env: PLAIN_TERMINAL });
      expect(r.code, type).not.toBe(0);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(want);
      expect(r.stdout).toBe('');
      await rm(dst, { recursive: true, force: true });
    }
  });

  it('a --with-disks capture killed mid-copy: the next capture cancels its backup job, and the guest runs', async () => {
    const out = join(work, 'killed.vmicap');
    const child = spawn(
      process.execPath,
      [VMI_BIN, 'capture', 'create', '--qmp', guest.qmpSocket, '--with-disks', '-o', out],
      {
        env: { ...process.env, ...PLAIN_TERMINAL },
        stdio: 'ignore',
      },
    );
    // Killed as soon as QEMU has created the copy's target: the backup job is running.
    let killed = 0;
    for (let i = 0; i < 3000 && !killed; i++) {
      for (const e of await readdir(work)) {
        const m = /^\.killed\.vmicap\.partial-(\d+)$/.exec(e);
        if (!m) continue;
        if (await stat(join(work, e, 'disks', 'disk0.qcow2')).catch(() => undefined)) {
          process.kill(Number(m[1]), 'SIGKILL');
          killed = Number(m[1]);
        }
      }
      if (!killed) await new Promise((r) => setTimeout(r, 10));
    }
    expect(killed, 'the capture reached its disk copy').toBeGreaterThan(0);
    child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    const q = await QmpClient.connect(guest.qmpSocket, { timeoutMs: 10_000 });
    try {
      const jobs = await q.execute<{ id: string }[]>('query-jobs');
      expect(
        jobs.map((j) => j.id),
        'the killed capture left its backup job in QEMU',
      ).toContain('vmi-capture-disk0');
    } finally {
      q.close();
    }
    const said: string[] = [];
    const again = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: out,
      progress: (m) => said.push(m),
    });
    expect(said.join('\n')).toMatch(
      new RegExp(`cancelled 1 disk-copy job\\(s\\) of a killed capture \\(pid ${killed}\\)`),
    );
    expect(again.manifest.disks).toBe('live');
    expect((await readdir(work)).filter((e) => e.includes('.partial-'))).toEqual([]);
    const q2 = await QmpClient.connect(guest.qmpSocket, { timeoutMs: 10_000 });
    try {
      expect(await q2.execute<{ id: string }[]>('query-jobs')).toEqual([]);
      expect((await q2.execute<{ running: boolean }>('query-status')).running).toBe(true);
    } finally {
      q2.close();
    }
    // The guest's own console answers: it runs.
    expect((await guestSh(guest, 'echo running')).trim()).toBe('running');
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
