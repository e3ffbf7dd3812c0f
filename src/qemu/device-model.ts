/**
 * The device model of a running QEMU, as QEMU reports it through QMP: every PCI function
 * (query-pci), every device made with -device (QOM children of /machine/peripheral and
 * /machine/peripheral-anon) with its type, bus, slot and a fixed set of properties
 * (qom-get), the disks behind them (query-block) and the firmware (/machine `firmware`,
 * pflash drives). Read-only queries; the guest keeps running.
 *
 * Measured on QEMU 7.2: a PCI device's `addr` reads back as its devfn (slot << 3 | fn,
 * e.g. 32 for 04.0); `parent_bus` is the bus's QOM path (/machine/q35/pcie.0); a
 * virtio-blk device's query-block entry names `/machine/peripheral/ID/virtio-backend`;
 * `firmware` is the -bios file name (`bios-256k.bin` by default) and empty on none.
 */
import type { QmpClient } from './qmp.js';

/** A property value as qom-get returns it for the scalar properties read here. */
export type DevicePropValue = string | number | boolean;

/** One device made with -device. */
export interface QemuDevice {
  /** QOM path (`/machine/peripheral/disk0`, `/machine/peripheral-anon/device[0]`). */
  qomPath: string;
  /** qdev id (`disk0`), '' for anonymous devices. */
  id: string;
  /** QOM type (`virtio-blk-pci`). */
  type: string;
  /** QOM path of the bus it sits on (`/machine/q35/pcie.0`). */
  bus: string;
  /** PCI devfn (slot << 3 | function) for PCI devices. */
  addr?: number;
  /** The properties of {@link DEVICE_PROPS} that this device has, as qom-get read them. */
  props: Record<string, DevicePropValue>;
}

/** One PCI function as query-pci reports it. */
export interface QemuPciFunction {
  bus: number;
  slot: number;
  function: number;
  vendor: number;
  device: number;
  /** PCI class code (e.g. 0x0200 Ethernet). */
  classCode: number;
  desc: string;
  /** qdev id, '' when the device has none. */
  qdevId: string;
}

/** One disk image attached to a device. */
export interface QemuDisk {
  /** The QOM path of the device it backs (without the /virtio-backend suffix). */
  device: string;
  /** Top block node (what a backup job names as `device`). */
  node: string;
  /** Filename of the top image (absolute path, or a `json:` pseudo-filename). */
  path: string;
  /** Format driver of the top image (raw, qcow2, ...). */
  format: string;
  virtualSize: number;
  readOnly: boolean;
}

export interface QemuFirmware {
  /** -bios file as QEMU reports it (`bios-256k.bin` = the default SeaBIOS), '' if none. */
  bios: string;
  /** pflash drives (OVMF): unit → image. */
  pflash: { unit: number; path: string; format: string; readOnly: boolean; node: string }[];
}

export interface QemuDeviceModel {
  devices: QemuDevice[];
  pci: QemuPciFunction[];
  disks: QemuDisk[];
  firmware: QemuFirmware;
}

/**
 * Properties read from each -device device (when it has them): those that change what
 * the guest sees or what the migration stream holds. Anything else keeps QEMU's default.
 */
export const DEVICE_PROPS = [
  'multifunction',
  'romfile',
  'rombar',
  'bootindex',
  'disable-legacy',
  'disable-modern',
  'vectors',
  'num-queues',
  'queue-size',
  'serial',
  'write-cache',
  'config-wce',
  'logical_block_size',
  'physical_block_size',
  'event_idx',
  'indirect_desc',
  'packed',
  'mac',
  'mq',
  'drive',
  'netdev',
] as const;

interface PciInfoRaw {
  bus: number;
  devices: {
    bus: number;
    slot: number;
    function: number;
    qdev_id: string;
    class_info: { class: number; desc?: string };
    id: { vendor: number; device: number };
    pci_bridge?: { devices?: PciInfoRaw['devices'] };
  }[];
}

interface BlockInfoRaw {
  device: string;
  qdev?: string;
  inserted?: {
    file: string;
    drv: string;
    ro: boolean;
    'node-name'?: string;
    image?: { 'virtual-size': number; filename: string; format: string };
  };
}

/** PCI functions of query-pci's answer, bridges' children included (pure). */
export function pciFunctions(raw: readonly PciInfoRaw[]): QemuPciFunction[] {
  const out: QemuPciFunction[] = [];
  const walk = (devs: PciInfoRaw['devices']): void => {
    for (const d of devs) {
      out.push({
        bus: d.bus,
        slot: d.slot,
        function: d.function,
        vendor: d.id.vendor,
        device: d.id.device,
        classCode: d.class_info.class,
        desc: d.class_info.desc ?? '',
        qdevId: d.qdev_id ?? '',
      });
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices);
    }
  };
  for (const b of raw) walk(b.devices);
  return out;
}

/** Disks and pflash drives of query-block's answer (pure). */
export function blockDisks(raw: readonly BlockInfoRaw[]): {
  disks: QemuDisk[];
  pflash: QemuFirmware['pflash'];
} {
  const disks: QemuDisk[] = [];
  const pflash: QemuFirmware['pflash'] = [];
  for (const b of raw) {
    const ins = b.inserted;
    if (!ins) continue;
    const entry = {
      node: ins['node-name'] ?? b.device,
      path: ins.image?.filename ?? ins.file,
      format: ins.image?.format ?? ins.drv,
      virtualSize: ins.image?.['virtual-size'] ?? 0,
      readOnly: ins.ro,
    };
    const flash = /^pflash(\d)$/.exec(b.device);
    if (flash) {
      pflash.push({
        unit: Number(flash[1]),
        path: entry.path,
        format: entry.format,
        readOnly: entry.readOnly,
        node: entry.node,
      });
      continue;
    }
    if (!b.qdev) continue;
    disks.push({ device: b.qdev.replace(/\/virtio-backend$/, ''), ...entry });
  }
  return { disks, pflash };
}

/** Reads the device model (the guest keeps running). */
export async function queryDeviceModel(qmp: QmpClient): Promise<QemuDeviceModel> {
  const qomGet = <T>(path: string, property: string): Promise<T> =>
    qmp.execute<T>('qom-get', { path, property });
  const devices: QemuDevice[] = [];
  for (const root of ['/machine/peripheral', '/machine/peripheral-anon']) {
    const children = await qmp.execute<{ name: string; type: string }[]>('qom-list', { path: root });
    for (const c of children) {
      if (!c.type.startsWith('child<')) continue;
      const qomPath = `${root}/${c.name}`;
      const props = await qmp.execute<{ name: string; type: string }[]>('qom-list', { path: qomPath });
      const names = new Set(props.map((p) => p.name));
      const values: Record<string, DevicePropValue> = {};
      for (const p of DEVICE_PROPS) {
        if (!names.has(p)) continue;
        const v = await qomGet<unknown>(qomPath, p).catch(() => undefined);
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') values[p] = v;
      }
      const addr = names.has('addr') ? await qomGet<number>(qomPath, 'addr') : undefined;
      devices.push({
        qomPath,
        id: root === '/machine/peripheral' ? c.name : '',
        type: await qomGet<string>(qomPath, 'type'),
        bus: names.has('parent_bus') ? await qomGet<string>(qomPath, 'parent_bus') : '',
        ...(typeof addr === 'number' && addr >= 0 ? { addr } : {}),
        props: values,
      });
    }
  }
  const pci = pciFunctions(await qmp.execute<PciInfoRaw[]>('query-pci'));
  const { disks, pflash } = blockDisks(await qmp.execute<BlockInfoRaw[]>('query-block'));
  const bios = await qomGet<string>('/machine', 'firmware').catch(() => '');
  return { devices, pci, disks, firmware: { bios, pflash } };
}
