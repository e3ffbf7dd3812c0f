/**
 * Devices of a lab guest beyond the bare machine (`vmi lab up --disk FILE --nic`): a
 * virtio-blk disk (raw or qcow2, format probed by qemu-img) and a virtio-net NIC whose
 * only backend is a hub port with nothing else on the hub, so no frame leaves the host.
 * A disk path that does not exist gets a small ext4 image made with `mkfs.ext4 -d` (no
 * loop device, no root needed).
 */
import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { diskImageInfo } from '../qemu/disk-image.js';
import { LabError, mustRun } from './host.js';

/** A disk the lab attaches. */
export interface LabDisk {
  path: string;
  format: 'raw' | 'qcow2';
}

/** Size of the image `vmi lab up --disk NEW` creates. */
export const LAB_DISK_MIB = 32;
/** The file the created image holds (`/README` in the guest's mount). */
export const LAB_DISK_README = 'vmi lab disk\n';
/** MAC address of the lab NIC (locally administered, QEMU's 52:54:00 prefix). */
export const LAB_NIC_MAC = '52:54:00:76:6d:69';

/** Creates an ext4 image of `mib` MiB at `path` holding /README (fails if it exists). */
export async function createLabDiskImage(path: string, mib = LAB_DISK_MIB): Promise<void> {
  const src = await mkdtemp(join(tmpdir(), 'vmi-labdisk-'));
  try {
    await writeFile(join(src, 'README'), LAB_DISK_README);
    await mkdir(join(src, 'data'));
    await writeFile(join(src, 'data', 'hello.txt'), 'hello from the lab disk\n');
    await mustRun('mkfs.ext4', ['-q', '-F', '-L', 'vmilab', '-d', src, path, `${mib}M`]);
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

/** Checks (or creates) the disk image; its format from qemu-img, never from its name. */
export async function prepareLabDisk(p: string, progress?: (m: string) => void): Promise<LabDisk> {
  const path = resolve(p);
  if (!isAbsolute(path) || [...path].some((c) => c < ' ' || c === ','))
    throw new LabError(
      `disk image path ${JSON.stringify(p)}: use a plain path without ',' or control characters`,
    );
  const st = await stat(path).catch(() => undefined);
  if (!st) {
    progress?.(`creating a ${LAB_DISK_MIB} MiB ext4 image at ${path}`);
    await createLabDiskImage(path);
  } else if (!st.isFile()) throw new LabError(`disk image ${path} is not a regular file`);
  const info = await diskImageInfo(path).catch((e: unknown) => {
    throw new LabError(`disk image ${path}: ${(e as Error).message}`);
  });
  if (info.format !== 'raw' && info.format !== 'qcow2')
    throw new LabError(`disk image ${path} is ${info.format}: the lab attaches raw and qcow2 images`);
  return { path, format: info.format };
}

/** QEMU arguments of the lab's devices (pure): JSON -blockdev/-device, no comma escaping. */
export function labDeviceArgs(d: { disk?: LabDisk; nic?: boolean }): string[] {
  const args: string[] = [];
  if (d.disk) {
    args.push(
      '-blockdev',
      JSON.stringify({ driver: 'file', filename: d.disk.path, 'node-name': 'lab-disk0-file' }),
      '-blockdev',
      JSON.stringify({ driver: d.disk.format, 'node-name': 'lab-disk0', file: 'lab-disk0-file' }),
      '-device',
      JSON.stringify({ driver: 'virtio-blk-pci', id: 'disk0', drive: 'lab-disk0' }),
    );
  }
  if (d.nic) {
    args.push(
      '-netdev',
      'hubport,id=lab-net0,hubid=0',
      // Anonymous (no id): the device model must find it under /machine/peripheral-anon too.
      '-device',
      JSON.stringify({ driver: 'virtio-net-pci', netdev: 'lab-net0', mac: LAB_NIC_MAC, romfile: '' }),
    );
  }
  return args;
}
