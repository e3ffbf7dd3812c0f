/**
 * Point-in-time disk copies (`capture create --with-disks`) with QEMU's own backup job,
 * and the device model of the manifest (version 3).
 *
 * QEMU 7.2 facts this relies on (measured): a backup job (drive-backup sync=full) started
 * while the VM is stopped copies the disk as it was at that instant (copy-before-write),
 * while the guest runs on. A plain `migrate` cannot complete while a backup job writes:
 * at its end QEMU inactivates every block node and a job's target refuses ("migration
 * failed"); after it, the nodes are inactive until `cont` runs the guest ("Block node is
 * read-only"). A background-snapshot migration does not inactivate the disks: it saves
 * the device state, then QEMU resumes the guest itself. So with disks the pause is:
 * stop, start the backup jobs, copy the shared RAM, background-snapshot the device state.
 */
import { join } from 'node:path';
import type { QemuDeviceModel } from '../qemu/device-model.js';
import type { QmpClient } from '../qemu/qmp.js';
import {
  CaptureError,
  type DeviceRecord,
  type DiskRecord,
  type FirmwareRecord,
  type PciRecord,
} from './manifest.js';
import { plainAbsolutePath, REPLAY_DEVICE_TYPES } from './device-policy.js';

/** The manifest's view of a device model (pure). Throws CaptureError for a disk vmi cannot record. */
export function manifestDevices(
  model: QemuDeviceModel,
  linuxBoot: boolean,
): { devices: DeviceRecord[]; pci: PciRecord[]; disks: DiskRecord[]; firmware: FirmwareRecord } {
  const disks: DiskRecord[] = [];
  const devices: DeviceRecord[] = model.devices.map((d) => {
    const rec: DeviceRecord = {
      type: d.type,
      qomPath: d.qomPath,
      id: d.id,
      bus: d.bus,
      ...(d.addr !== undefined ? { addr: d.addr } : {}),
      props: { ...d.props },
    };
    const disk = model.disks.find((k) => k.device === d.qomPath);
    if (disk && REPLAY_DEVICE_TYPES[d.type]?.kind === 'disk') {
      if (!plainAbsolutePath(disk.path))
        throw new CaptureError(
          `disk of ${d.qomPath}: ${JSON.stringify(disk.path)} is not a plain image path (vmi records disks by path)`,
        );
      if (disk.format !== 'raw' && disk.format !== 'qcow2')
        throw new CaptureError(
          `disk of ${d.qomPath}: format ${disk.format} (vmi records raw and qcow2 images)`,
        );
      rec.disk = disks.length;
      disks.push({
        device: d.qomPath,
        path: disk.path,
        format: disk.format,
        virtualSize: disk.virtualSize,
        readOnly: disk.readOnly,
      });
    }
    return rec;
  });
  const firmware: FirmwareRecord = {
    boot: linuxBoot ? 'linux' : 'firmware',
    bios: model.firmware.bios,
    pflash: model.firmware.pflash
      .filter((p) => p.format === 'raw' || p.format === 'qcow2')
      .map((p) => ({
        unit: p.unit,
        path: p.path,
        format: p.format as 'raw' | 'qcow2',
        readOnly: p.readOnly,
      })),
  };
  return { devices, pci: model.pci.map((f) => ({ ...f })), disks, firmware };
}

/** Block node of each recorded disk, by disk index (from the device model). */
export function diskNodes(model: QemuDeviceModel, disks: readonly DiskRecord[]): string[] {
  return disks.map((k) => model.disks.find((d) => d.device === k.device)!.node);
}

export const diskCopyPart = (i: number): string => `disks/disk${i}.qcow2`;
const jobId = (i: number): string => `vmi-capture-disk${i}`;

/** Starts one backup job per disk into `dir`/disks/diskN.qcow2 (call while the VM is stopped). */
export async function startDiskCopies(qmp: QmpClient, dir: string, nodes: readonly string[]): Promise<void> {
  for (const [i, node] of nodes.entries()) {
    await qmp.execute('drive-backup', {
      'job-id': jobId(i),
      device: node,
      target: join(dir, diskCopyPart(i)),
      format: 'qcow2',
      sync: 'full',
      'auto-dismiss': false,
    });
  }
}

interface JobInfo {
  id: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/**
 * Waits for the backup jobs to conclude (the guest runs meanwhile) and dismisses them;
 * a CaptureError names a failed job. `onProgress` sees bytes copied / total.
 */
export async function awaitDiskCopies(
  qmp: QmpClient,
  count: number,
  timeoutMs: number,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const ids = new Set(Array.from({ length: count }, (_, i) => jobId(i)));
  const end = Date.now() + timeoutMs;
  for (;;) {
    const jobs = (await qmp.execute<JobInfo[]>('query-jobs')).filter((j) => ids.has(j.id));
    const failed = jobs.find((j) => j.status === 'concluded' && j.error);
    if (failed) {
      await cancelDiskCopies(qmp, count);
      throw new CaptureError(
        `${diskCopyPart(Number(failed.id.replace(/\D+/g, '')))}: QEMU backup job failed: ${failed.error}`,
      );
    }
    onProgress?.(
      jobs.reduce((a, j) => a + j['current-progress'], 0),
      jobs.reduce((a, j) => a + j['total-progress'], 0),
    );
    if (jobs.every((j) => j.status === 'concluded')) {
      for (const j of jobs) await qmp.execute('job-dismiss', { id: j.id });
      if (jobs.length !== count) throw new CaptureError('a disk backup job vanished before it concluded');
      return;
    }
    if (Date.now() > end) {
      await cancelDiskCopies(qmp, count);
      throw new CaptureError(`disk copies did not finish within ${timeoutMs / 1000} s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Cancels and dismisses our backup jobs (best effort: on every failure path). */
export async function cancelDiskCopies(qmp: QmpClient, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await qmp.execute('job-cancel', { id: jobId(i) }).catch(() => undefined);
  }
  for (let k = 0; k < 100; k++) {
    const jobs = await qmp.execute<JobInfo[]>('query-jobs').catch(() => [] as JobInfo[]);
    const ours = jobs.filter((j) => /^vmi-capture-disk\d+$/.test(j.id));
    for (const j of ours)
      if (j.status === 'concluded') await qmp.execute('job-dismiss', { id: j.id }).catch(() => undefined);
    if (ours.every((j) => j.status === 'concluded')) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Cancels and dismisses every vmi-capture-diskN job of a QEMU (a killed capture's, found
 * by the sweep of its partial directory); returns how many there were. Until they are
 * gone, no capture can start its own (QEMU refuses a duplicate job id).
 */
export async function cancelLeftDiskCopies(qmp: QmpClient): Promise<number> {
  const jobs = await qmp.execute<JobInfo[]>('query-jobs');
  const idx = jobs.map((j) => /^vmi-capture-disk(\d{1,3})$/.exec(j.id)).filter((m) => m !== null);
  if (idx.length === 0) return 0;
  await cancelDiskCopies(qmp, Math.max(...idx.map((m) => Number(m[1]))) + 1);
  return idx.length;
}
