/**
 * The captured device model (manifest v3: machine.devices, machine.pci, machine.disks,
 * machine.firmware) as untrusted input, and the QEMU arguments a replay builds from it.
 *
 * Only device types of {@link REPLAY_DEVICE_TYPES} are rebuilt, each only with the
 * properties its entry names, every value checked by type and pattern; disks come back
 * as a qcow2 copy-on-write overlay on a base opened read-only; NICs come back with a
 * hub port that nothing else is on (no packet leaves the host). Every other PCI function
 * must be one the machine type itself creates, or the capture is refused by name.
 */
import { isAbsolute } from 'node:path';
import { CaptureError, type CaptureManifest, type DeviceRecord, type DiskRecord } from './manifest.js';

type PropCheck = (v: unknown) => boolean;

const bool: PropCheck = (v) => typeof v === 'boolean';
const int =
  (min: number, max: number): PropCheck =>
  (v) =>
    Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
const onOffAuto: PropCheck = (v) => v === 'on' || v === 'off' || v === 'auto';
const str =
  (re: RegExp): PropCheck =>
  (v) =>
    typeof v === 'string' && re.test(v);

/** Option ROM: none, or a bare file name QEMU finds in its own data directory. */
const ROMFILE_RE = /^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.rom$/;

/** Checks of every property a replay may pass to -device. */
const PROP_CHECKS: Record<string, PropCheck> = {
  multifunction: bool,
  romfile: str(ROMFILE_RE),
  rombar: int(0, 1),
  bootindex: int(-1, 1024),
  'disable-legacy': onOffAuto,
  'disable-modern': bool,
  vectors: int(0, 2048),
  'num-queues': int(1, 256),
  'queue-size': int(2, 1024),
  serial: str(/^[A-Za-z0-9_.-]{0,20}$/),
  'write-cache': onOffAuto,
  'config-wce': bool,
  logical_block_size: int(512, 65536),
  physical_block_size: int(512, 65536),
  event_idx: bool,
  indirect_desc: bool,
  packed: bool,
  mac: str(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/),
  mq: bool,
};

const PCI_COMMON = ['multifunction', 'romfile', 'rombar', 'bootindex'];
const VIRTIO_COMMON = [
  ...PCI_COMMON,
  'disable-legacy',
  'disable-modern',
  'vectors',
  'event_idx',
  'indirect_desc',
  'packed',
];

/** What a replay does with a device type. */
export type ReplayDeviceKind = 'disk' | 'nic' | 'plain' | 'sound';

/**
 * Device types a replay rebuilds, and the properties it passes for each. `disk` gets an
 * overlay drive, `nic` a local hub port, `sound` a silent audiodev, `plain` nothing.
 */
export const REPLAY_DEVICE_TYPES: Record<string, { kind: ReplayDeviceKind; props: readonly string[] }> = {
  'virtio-blk-pci': {
    kind: 'disk',
    props: [
      ...VIRTIO_COMMON,
      'num-queues',
      'queue-size',
      'serial',
      'write-cache',
      'config-wce',
      'logical_block_size',
      'physical_block_size',
    ],
  },
  'virtio-net-pci': { kind: 'nic', props: [...VIRTIO_COMMON, 'mac', 'mq'] },
  e1000: { kind: 'nic', props: [...PCI_COMMON, 'mac'] },
  e1000e: { kind: 'nic', props: [...PCI_COMMON, 'mac'] },
  rtl8139: { kind: 'nic', props: [...PCI_COMMON, 'mac'] },
  'virtio-balloon-pci': { kind: 'plain', props: VIRTIO_COMMON },
  'virtio-rng-pci': { kind: 'plain', props: VIRTIO_COMMON },
  'pvpanic-pci': { kind: 'plain', props: PCI_COMMON },
  // QEMU 8.2 and later: a capture of such a guest replays only where QEMU has it.
  'virtio-sound-pci': { kind: 'sound', props: VIRTIO_COMMON },
};

/** The root PCI bus of each machine family: the only bus devices are rebuilt on. */
const ROOT_BUS: Record<'q35' | 'pc', { qom: string; id: string }> = {
  q35: { qom: '/machine/q35/pcie.0', id: 'pcie.0' },
  pc: { qom: '/machine/i440fx/pci.0', id: 'pci.0' },
};

/**
 * PCI functions the machine type creates itself (QEMU 7.2, -nodefaults): q35 host bridge
 * 00:00.0 and the ICH9 LPC/SATA/SMBus at 00:1f.0/2/3; i440fx host bridge 00:00.0 and the
 * PIIX3 ISA/IDE/USB/ACPI functions at 00:01.0-3.
 */
const BUILTIN_FUNCTIONS: Record<'q35' | 'pc', readonly string[]> = {
  q35: ['00.0', '1f.0', '1f.2', '1f.3'],
  pc: ['00.0', '01.0', '01.1', '01.2', '01.3'],
};

/** Most devices, disks and PCI functions a manifest may list. */
export const MAX_DEVICES = 64;

export const machineFamily = (machineType: string): 'q35' | 'pc' => (/q35/.test(machineType) ? 'q35' : 'pc');

const slotFn = (devfn: number): string => `${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;

/** Firmware a replay may load: a bare file name (from QEMU's data dir) or a distribution path. */
const FIRMWARE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(bin|fd|rom)$/;
const FIRMWARE_DIRS = [
  '/usr/share/qemu/',
  '/usr/share/seabios/',
  '/usr/share/OVMF/',
  '/usr/share/ovmf/',
  '/usr/share/qemu-efi/',
];
/** The SeaBIOS image QEMU loads when no -bios is given (pc and q35). */
export const DEFAULT_BIOS = 'bios-256k.bin';

/** An absolute, plain path (no control characters, no `..`), at most 4096 bytes. */
export function plainAbsolutePath(p: unknown): p is string {
  return (
    typeof p === 'string' &&
    isAbsolute(p) &&
    Buffer.byteLength(p) <= 4096 &&
    ![...p].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f) &&
    !p.split('/').includes('..')
  );
}

function firmwarePathOk(p: string): boolean {
  return (
    FIRMWARE_NAME_RE.test(p) ||
    (plainAbsolutePath(p) &&
      FIRMWARE_DIRS.some((d) => p.startsWith(d)) &&
      FIRMWARE_NAME_RE.test(p.split('/').pop()!))
  );
}

function refuse(what: string): never {
  throw new CaptureError(`capture refused before replay: ${what}`);
}

const DISK_PART_RE = /^disks\/[A-Za-z0-9_.-]{1,64}$/;

/**
 * Checks the device model of a v3 manifest (a no-op for older captures, which have
 * none). Throws a CaptureError naming the device, property or PCI function.
 */
export function checkDeviceModel(m: CaptureManifest): void {
  const mc = m.machine;
  const family = machineFamily(mc.machineType);
  const devices = mc.devices ?? [];
  const disks = mc.disks ?? [];
  if (!Array.isArray(devices) || devices.length > MAX_DEVICES)
    refuse('the device list is not a list of at most 64');
  if (!Array.isArray(disks) || disks.length > MAX_DEVICES)
    refuse('the disk list is not a list of at most 64');
  const seenAddr = new Set<number>();
  const usedDisks = new Set<number>();
  for (const [i, d] of devices.entries()) {
    const at = `device ${i}`;
    if (typeof d !== 'object' || d === null) refuse(`${at} is not a record`);
    if (typeof d.type !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(d.type))
      refuse(`${at} has no plain type name`);
    const entry = Object.hasOwn(REPLAY_DEVICE_TYPES, d.type) ? REPLAY_DEVICE_TYPES[d.type] : undefined;
    if (!entry)
      refuse(
        `device ${d.type} (${String(d.qomPath)}) is not one vmi rebuilds (it rebuilds ${Object.keys(REPLAY_DEVICE_TYPES).join(', ')})`,
      );
    if (d.bus !== ROOT_BUS[family].qom)
      refuse(
        `device ${d.type} sits on bus ${JSON.stringify(d.bus)}: vmi rebuilds devices on ${ROOT_BUS[family].qom} only`,
      );
    if (!Number.isSafeInteger(d.addr) || (d.addr as number) < 0 || (d.addr as number) > 255)
      refuse(`device ${d.type} has no PCI address`);
    if (seenAddr.has(d.addr!)) refuse(`two devices at PCI address 00:${slotFn(d.addr!)}`);
    seenAddr.add(d.addr!);
    if (typeof d.props !== 'object' || d.props === null) refuse(`device ${d.type} has no property map`);
    for (const [k, v] of Object.entries(d.props)) {
      if (k === 'drive' || k === 'netdev') continue; // backends are the replay's own
      if (!entry.props.includes(k)) refuse(`device ${d.type}: property ${k} is not one vmi passes to QEMU`);
      if (!PROP_CHECKS[k](v)) refuse(`device ${d.type}: property ${k}=${JSON.stringify(v)} is out of range`);
    }
    if (entry.kind === 'disk') {
      if (!Number.isSafeInteger(d.disk) || d.disk! < 0 || d.disk! >= disks.length)
        refuse(`disk device ${d.type} at 00:${slotFn(d.addr!)} names no disk of the manifest`);
      if (usedDisks.has(d.disk!)) refuse(`two devices share disk ${d.disk}`);
      usedDisks.add(d.disk!);
    } else if (d.disk !== undefined) refuse(`device ${d.type} is not a disk device but names a disk`);
  }
  for (const [i, k] of disks.entries()) {
    if (typeof k !== 'object' || k === null) refuse(`disk ${i} is not a record`);
    if (!plainAbsolutePath(k.path))
      refuse(`disk ${i}: image path ${JSON.stringify(k.path)} is not a plain absolute path`);
    if (k.format !== 'raw' && k.format !== 'qcow2')
      refuse(`disk ${i}: format ${JSON.stringify(k.format)} is not raw or qcow2`);
    if (!Number.isSafeInteger(k.virtualSize) || k.virtualSize < 0) refuse(`disk ${i}: bad virtual size`);
    if (k.copyPart !== undefined) {
      if (
        typeof k.copyPart !== 'string' ||
        !DISK_PART_RE.test(k.copyPart) ||
        !Object.hasOwn(m.parts, k.copyPart)
      )
        refuse(`disk ${i}: copy ${JSON.stringify(k.copyPart)} is not a disks/ part listed in the manifest`);
    }
    if (!usedDisks.has(i)) refuse(`disk ${i} (${k.path}) is attached to no device`);
  }
  const pci = mc.pci ?? [];
  if (!Array.isArray(pci) || pci.length > 4 * MAX_DEVICES) refuse('the PCI function list is too long');
  for (const f of pci) {
    const ok = [f?.bus, f?.slot, f?.function].every(
      (v) => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < 256,
    );
    if (!ok) refuse(`PCI function ${JSON.stringify(f)} is not bus/slot/function integers`);
    const sf = slotFn((f.slot << 3) | f.function);
    if (f.bus === 0 && (BUILTIN_FUNCTIONS[family].includes(sf) || seenAddr.has((f.slot << 3) | f.function)))
      continue;
    const what = typeof f.desc === 'string' ? f.desc.replace(/[^ -~]/g, '?').slice(0, 64) : 'device';
    refuse(
      `PCI device ${f.bus.toString(16).padStart(2, '0')}:${sf} (${what}) was not made with -device: vmi cannot rebuild it`,
    );
  }
  const fw = mc.firmware;
  if (fw !== undefined) {
    if (typeof fw !== 'object' || fw === null) refuse('bad firmware record');
    if (typeof fw.bios !== 'string' || (fw.bios !== '' && !firmwarePathOk(fw.bios)))
      refuse(`firmware ${JSON.stringify(fw.bios)} is not a QEMU firmware file`);
    if (!Array.isArray(fw.pflash) || fw.pflash.length > 2) refuse('bad pflash list');
    for (const p of fw.pflash) {
      if ((p?.unit !== 0 && p?.unit !== 1) || (p.format !== 'raw' && p.format !== 'qcow2'))
        refuse(`pflash ${JSON.stringify(p?.unit)}: bad unit or format`);
      if (p.unit === 0 && (!p.readOnly || !firmwarePathOk(p.path)))
        refuse(`pflash 0 ${JSON.stringify(p.path)} is not a read-only firmware file of a QEMU installation`);
      if (p.unit === 1 && !plainAbsolutePath(p.path))
        refuse(`pflash 1 ${JSON.stringify(p.path)} is not a plain absolute path`);
    }
  }
}

/** How a replay reaches one captured disk: its overlay and the read-only base under it. */
export interface ReplayDisk {
  /** qcow2 overlay in the replay's run dir (created by qemu-img beforehand). */
  overlay: string;
  /** Read-only base: the capture's copy, or the live image. */
  base: string;
  baseFormat: 'raw' | 'qcow2';
}

/**
 * The -blockdev/-netdev/-audiodev/-device arguments of the captured devices (pure),
 * in JSON form so no value needs QEMU's comma escaping. `disks[i]` is the overlay of
 * manifest disk i. Throws a CaptureError naming a device type this QEMU lacks
 * (`qemuDeviceTypes`: the names `qemu -device help` lists).
 */
export function replayDeviceArgs(
  m: CaptureManifest,
  disks: readonly ReplayDisk[],
  qemuDeviceTypes: ReadonlySet<string>,
  qemuVersion: string,
): string[] {
  const mc = m.machine;
  const bus = ROOT_BUS[machineFamily(mc.machineType)].id;
  const args: string[] = [];
  for (const [i, d] of (mc.devices ?? []).entries()) {
    if (!qemuDeviceTypes.has(d.type))
      throw new CaptureError(
        `this host's QEMU ${qemuVersion} has no device type ${d.type}, which the captured machine has (capture made with QEMU ${m.qemu.version}): replay it on a host whose QEMU has ${d.type}`,
      );
    const entry = REPLAY_DEVICE_TYPES[d.type];
    const dev: Record<string, string | number | boolean> = {
      driver: d.type,
      id: `vmi-dev${i}`,
      bus,
      addr: `0x${(d.addr! >> 3).toString(16)}.${d.addr! & 7}`,
    };
    for (const k of entry.props) {
      const v = d.props[k];
      if (v === undefined || (k === 'bootindex' && v === -1)) continue;
      dev[k] = v;
    }
    if (entry.kind === 'disk') {
      const disk = disks[d.disk!];
      const node = `vmi-disk${d.disk}`;
      args.push('-blockdev', JSON.stringify(overlayBlockdev(node, disk)));
      dev.drive = node;
    } else if (entry.kind === 'nic') {
      // A hub of its own with nothing else on it: frames go nowhere, nothing leaves the host.
      args.push('-netdev', `hubport,id=vmi-net${i},hubid=${100 + i}`);
      dev.netdev = `vmi-net${i}`;
    } else if (entry.kind === 'sound') {
      args.push('-audiodev', `none,id=vmi-snd${i}`);
      dev.audiodev = `vmi-snd${i}`;
    }
    args.push('-device', JSON.stringify(dev));
  }
  return args;
}

/**
 * A qcow2 overlay node whose backing chain is opened read-only (pure). The base is opened
 * with `force-share` (what `qemu-img -U` does): a live disk image is still held for writing
 * by the captured guest's QEMU, whose image lock would otherwise refuse the replay
 * ("Failed to get shared "write" lock", QEMU 7.2, measured on the debian lab guest). QEMU
 * allows force-share on read-only nodes only, and passes it on to the base's own backing
 * chain (block.c, bdrv_backing_options).
 */
export function overlayBlockdev(node: string, disk: ReplayDisk): Record<string, unknown> {
  return {
    driver: 'qcow2',
    'node-name': node,
    file: { driver: 'file', filename: disk.overlay },
    backing: {
      driver: disk.baseFormat,
      'read-only': true,
      'force-share': true,
      file: { driver: 'file', filename: disk.base, 'read-only': true, 'force-share': true },
    },
  };
}

/**
 * Firmware arguments of a replay (pure): nothing for a -kernel boot on the default
 * SeaBIOS, `-bios` for another firmware file, pflash drives for OVMF (unit 1, the
 * variable store, through its overlay in `pflashVars`).
 */
export function replayFirmwareArgs(m: CaptureManifest, pflashVars?: ReplayDisk): string[] {
  const fw = m.machine.firmware;
  if (!fw) return [];
  const args: string[] = [];
  if (fw.bios && fw.bios !== DEFAULT_BIOS && fw.pflash.length === 0) args.push('-bios', fw.bios);
  for (const p of fw.pflash) {
    if (p.unit === 0) {
      args.push(
        '-blockdev',
        JSON.stringify({
          driver: p.format,
          'node-name': 'vmi-pflash0',
          'read-only': true,
          file: { driver: 'file', filename: p.path, 'read-only': true },
        }),
      );
    } else {
      if (!pflashVars)
        throw new CaptureError(
          'the captured firmware has a variable store (pflash 1) but the replay has no overlay for it',
        );
      args.push('-blockdev', JSON.stringify(overlayBlockdev('vmi-pflash1', pflashVars)));
    }
  }
  if (fw.pflash.length > 0) {
    const units = fw.pflash.map((p) => `pflash${p.unit}=vmi-pflash${p.unit}`);
    args.push('-machine', units.join(','));
  }
  return args;
}

/** Disk records of the manifest that a replay must find (for messages). */
export function describeDisk(k: DiskRecord, d?: DeviceRecord): string {
  return `${k.path} (${k.format}${d ? `, ${d.type} at 00:${slotFn(d.addr ?? 0)}` : ''})`;
}
