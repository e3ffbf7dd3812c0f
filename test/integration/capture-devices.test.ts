/**
 * Captures of a lab guest with devices (issue 19): a virtio-blk disk (ext4, mounted by the
 * guest at /mnt/disk) and a virtio-net NIC on a local hub port. One boot, two captures:
 * one that reads the live disk image, one --with-disks (point-in-time copy).
 *
 * Ground truth is the guest's console just before and just after each capture: its
 * processes (/proc/PID/stat), command lines (/proc/PID/cmdline), socket descriptors
 * (readlink /proc/PID/fd/N) and init's /proc/1/mountinfo. The replays (clones rebuilt
 * with the same devices in the same PCI slots) must show the same. The disk: the guest
 * drops its page cache before the capture, so a replay's directory listing of /mnt/disk
 * reads the disk; a file the guest writes after the --with-disks capture is absent from
 * that replay. The image's sha256 is the same before and after the replays (the source
 * guest is down by then: nothing else writes it). A tampered manifest naming a device type
 * this QEMU lacks, or a disk image that is gone, fails replay with one line.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFile, verifyCapture } from '../../src/capture/artifact.js';
import { createCapture, type CreateCaptureResult } from '../../src/capture/create.js';
import { createLabDiskImage } from '../../src/lab/lab-devices.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import type { ResultTable } from '../../src/output/table.js';
import { mountinfo } from '../../src/plugins/mountinfo.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { sockstat } from '../../src/plugins/sockstat.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import { definePlugin } from '../../src/sdk/index.js';
import { withReplay } from '../../src/targets/capture.js';
import { runRoot } from '../../src/util/run-dir.js';
import { runVmi } from './helpers/cli.js';
import {
  consoleTruth,
  expectReplayMatches,
  tableRecords,
  type ConsoleTruth as Truth,
} from './helpers/capture-truth.js';
import { tampered } from './helpers/tampered-capture.js';
import { guestSh } from './helpers/guest-shell.js';

const NAME = 'devmodel-cap';
const MNT = '/mnt/disk';

type Row = Record<string, unknown>;
const records = tableRecords;

/** The names in one directory of the guest, by the guest's own getdents64 (a test plugin). */
const listdir = definePlugin({
  name: 'listdir',
  description: `Names in ${MNT}`,
  version: '0.0.1',
  columns: [{ name: 'NAME', type: 'utf8' }] as const,
  async run(ctx) {
    return (await ctx.sys.listDir(MNT)).map((e) => ({ NAME: e.name }));
  },
});

/** pslist, psaux, sockstat and mountinfo of a replay against the console around the capture. */
function expectLabReplayMatches(tables: ResultTable[], before: Truth, after: Truth): void {
  // The lab's ticker (sh) starts a `sleep 10` every 10 s; reading the console takes seconds
  // under TCG, so one may be born and gone between the two reads.
  const ticker = (r: Row, b: Truth): boolean =>
    r.COMM === 'sleep' && b.procs.get(r.PPID as number)?.comm === 'sh';
  expectReplayMatches(tables, before, after, { transient: ticker, minProcs: 40, minArgs: 10, minSockets: 5 });
  expect(before.mounts.some((l) => / - ext4 \/dev\/vda /.test(l) && l.split(' ')[4] === MNT)).toBe(true);
}

const sha256 = async (path: string): Promise<string> => (await hashFile(path)).sha256;

describe('captures of a lab guest with a virtio disk and NIC', () => {
  let guest: LabGuest;
  let work: string;
  let disk: string;
  let live: CreateCaptureResult;
  let pit: CreateCaptureResult;
  let liveTruth: [Truth, Truth];
  let pitTruth: [Truth, Truth];
  const report: Record<string, string> = {};

  beforeAll(async () => {
    await labDown(NAME);
    work = await mkdtemp(join(tmpdir(), 'vmi-capdev-'));
    disk = join(work, 'disk.img');
    await createLabDiskImage(disk);
    guest = await labUp({ name: NAME, disk, nic: true });
    await guestSh(guest, `mkdir -p ${MNT} && mount -t ext4 /dev/vda ${MNT} && ip link set eth0 up`);
  });

  afterAll(async () => {
    await labDown(NAME);
    if (work) await rm(work, { recursive: true, force: true });
    console.log('capture-devices figures:', report);
  });

  it('records the device model: both devices in their PCI slots, the disk by path, the firmware', async () => {
    const before = await consoleTruth(guest);
    live = await createCapture({ qmpSocket: guest.qmpSocket, output: join(work, 'live.vmicap') });
    const after = await consoleTruth(guest);
    liveTruth = [before, after];
    const mc = live.manifest.machine;
    expect(live.manifest.version).toBe(3);
    expect(live.manifest.disks).toBe('live');
    const types = mc.devices!.map((d) => d.type).sort();
    expect(types).toEqual(['virtio-blk-pci', 'virtio-net-pci']);
    // The slots the guest's own kernel sees its devices in (/sys/bus/pci/devices).
    const sysfs = await guestSh(
      guest,
      'for d in /sys/bus/pci/devices/*; do echo "${d##*/} $(cat $d/vendor) $(cat $d/device)"; done',
    );
    for (const d of mc.devices!) {
      const bdf = `0000:00:${(d.addr! >> 3).toString(16).padStart(2, '0')}.${d.addr! & 7}`;
      const want = d.type === 'virtio-blk-pci' ? '0x1af4 0x1001' : '0x1af4 0x1000';
      expect(sysfs, `${d.type} at ${bdf}`).toContain(`${bdf} ${want}`);
    }
    expect(mc.disks).toMatchObject([{ path: disk, format: 'raw' }]);
    expect(mc.firmware).toMatchObject({ boot: 'linux', bios: 'bios-256k.bin' });
    report.livePauseMs = live.pauseMs.toFixed(0);
  });

  it('--with-disks copies the disk as it was at the pause; a file written after it is on the live disk only', async () => {
    // Page cache dropped before the capture: a replay's listing of /mnt/disk reads the disk.
    await guestSh(guest, `sync && echo 3 > /proc/sys/vm/drop_caches`);
    const before = await consoleTruth(guest);
    pit = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'pit.vmicap'),
      withDisks: true,
    });
    const after = await consoleTruth(guest);
    pitTruth = [before, after];
    await guestSh(guest, `echo written-after > ${MNT}/after-capture.txt && sync && ls ${MNT}`);
    expect(pit.manifest.disks).toBe('point-in-time');
    expect(pit.manifest.machine.disks![0].copyPart).toBe('disks/disk0.qcow2');
    expect(pit.manifest.parts['disks/disk0.qcow2']).toBeDefined();
    // verify covers the copy: its digest is checked like every part.
    const v = await verifyCapture(pit.path);
    expect(Object.keys(v.partMs)).toContain('disks/disk0.qcow2');
    report.pitPauseMs = pit.pauseMs.toFixed(0);
    report.diskCopyMs = String(pit.manifest.timing.diskCopyMs?.toFixed(0));
  });

  it('replays rebuild the machine: pslist, psaux, sockstat, mountinfo as the console showed; the image is never written', async () => {
    // Nothing else may write the image from here on: the source guest goes down.
    await guestSh(guest, `umount ${MNT} || true; sync`);
    await labDown(NAME);
    const imageBefore = await sha256(disk);
    const plugins = [pslist, psaux, sockstat, mountinfo, listdir].map((plugin) => ({ plugin, options: {} }));
    const t0 = performance.now();
    const pitNames = await withReplay(pit.path, async (r) => {
      const run = await runPluginsOnGuest(r.guest, plugins);
      expectLabReplayMatches(run.tables.slice(0, 4), ...pitTruth);
      return records(run.tables[4]).map((x) => x.NAME as string);
    });
    report.pitReplayMs = (performance.now() - t0).toFixed(0);
    expect(pitNames).toContain('README');
    expect(pitNames, 'the file written after the --with-disks capture').not.toContain('after-capture.txt');
    const liveNames = await withReplay(live.path, async (r) => {
      const run = await runPluginsOnGuest(r.guest, plugins);
      expectLabReplayMatches(run.tables.slice(0, 4), ...liveTruth);
      return records(run.tables[4]).map((x) => x.NAME as string);
    });
    report.liveReplayListing = liveNames.sort().join(',');
    expect(liveNames).toContain('README');
    // The same listing on the live image does show it: the replay's listing reads the disk,
    // so the --with-disks replay's answer above comes from the copy.
    expect(liveNames, 'the live-disk replay reads the image as it is now').toContain('after-capture.txt');
    expect(await sha256(disk), 'the disk image after two replays').toBe(imageBefore);
    // The overlays lived in the replays' run dirs, which are gone.
    const left = execFileSync('find', [join(runRoot(), 'replays'), '-name', 'disk0.qcow2'], {
      encoding: 'utf8',
    });
    expect(left).toBe('');
  });

  it('refuses a device type this QEMU lacks, and a live disk image that is gone, with one line', async () => {
    const noSound = join(work, 'sound.vmicap');
    await tampered(live.path, noSound, (m) => {
      const nic = m.machine.devices!.find((d) => d.type === 'virtio-net-pci')!;
      nic.type = 'virtio-sound-pci';
      delete nic.props.mac;
      delete nic.props.mq;
    });
    const r = await runVmi(['plugins', 'run', 'pslist', '--capture', noSound]);
    expect(r.code).not.toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('vmi: error:'));
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /QEMU 7\.\d+\.\d+ has no device type virtio-sound-pci.*replay it on a host whose QEMU has/,
    );
    const gone = join(work, 'gone.vmicap');
    await tampered(live.path, gone, (m) => (m.machine.disks![0].path = join(work, 'no-such-disk.img')));
    const g = await runVmi(['plugins', 'run', 'pslist', '--capture', gone]);
    expect(g.code).not.toBe(0);
    expect(
      g.stderr.split('\n').filter((l) => l.startsWith('vmi: error:')),
      g.stderr,
    ).toHaveLength(1);
    expect(g.stderr).toMatch(/no-such-disk\.img .* is gone: this capture reads live disk images/);
  });
});
