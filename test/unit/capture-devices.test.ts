/**
 * The device model of captures (issue 19) without a VM: what QMP answers become
 * (pciFunctions, blockDisks, manifestDevices), what a manifest may ask of a replay
 * (checkDeviceModel: allowlisted types and properties, slots, disks, firmware, every
 * other PCI function refused by name), and the QEMU arguments a replay builds
 * (replayDeviceArgs, replayFirmwareArgs, qemuArgs of a firmware boot). The QMP answers
 * are the shapes QEMU 7.2 gave for the lab guest with --disk and --nic.
 */
import { describe, expect, it } from 'vitest';
import {
  checkDeviceModel,
  replayDeviceArgs,
  replayFirmwareArgs,
  type ReplayDisk,
} from '../../src/capture/device-policy.js';
import { manifestDevices } from '../../src/capture/disk-copy.js';
import { CAPTURE_VERSION, type CaptureManifest } from '../../src/capture/manifest.js';
import { blockDisks, pciFunctions, type QemuDeviceModel } from '../../src/qemu/device-model.js';
import { parseDeviceHelp, parseMachineHelp, qemuArgs } from '../../src/qemu/launcher.js';
import { labDeviceArgs } from '../../src/lab/lab-devices.js';
import { moduleLoadOrder } from '../../src/lab/kernel.js';

/** One function of `query-pci`'s answer on bus 0 (QEMU 7.2's shape). */
function pciFunction(
  slot: number,
  fn: number,
  qdevId: string,
  cls: number,
  desc: string,
  vendor: number,
  device: number,
) {
  return {
    bus: 0,
    slot,
    function: fn,
    qdev_id: qdevId,
    class_info: { class: cls, desc },
    id: { vendor, device },
  };
}

const PCI = [
  {
    bus: 0,
    devices: [
      pciFunction(0, 0, '', 1536, 'Host bridge', 0x8086, 0x29c0),
      pciFunction(1, 0, 'disk0', 256, 'SCSI controller', 0x1af4, 0x1001),
      pciFunction(2, 0, '', 512, 'Ethernet controller', 0x1af4, 0x1000),
      pciFunction(31, 0, '', 1537, 'ISA bridge', 0x8086, 0x2918),
      pciFunction(31, 2, '', 262, 'SATA controller', 0x8086, 0x2922),
      pciFunction(31, 3, '', 3077, 'SMBus', 0x8086, 0x2930),
    ],
  },
];

const BLOCK = [
  {
    device: '',
    qdev: '/machine/peripheral/disk0/virtio-backend',
    inserted: {
      file: '/srv/disk.img',
      drv: 'raw',
      ro: false,
      'node-name': 'lab-disk0',
      image: { 'virtual-size': 33554432, filename: '/srv/disk.img', format: 'raw' },
    },
  },
];

function model(): QemuDeviceModel {
  const { disks, pflash } = blockDisks(BLOCK);
  return {
    devices: [
      {
        qomPath: '/machine/peripheral/disk0',
        id: 'disk0',
        type: 'virtio-blk-pci',
        bus: '/machine/q35/pcie.0',
        addr: 8,
        props: {
          'num-queues': 1,
          'queue-size': 256,
          romfile: '',
          drive: 'lab-disk0',
          'disable-legacy': 'auto',
          vectors: 2,
        },
      },
      {
        qomPath: '/machine/peripheral-anon/device[0]',
        id: '',
        type: 'virtio-net-pci',
        bus: '/machine/q35/pcie.0',
        addr: 16,
        props: { mac: '52:54:00:76:6d:69', romfile: '', netdev: 'lab-net0', mq: false, bootindex: -1 },
      },
    ],
    pci: pciFunctions(PCI),
    disks,
    firmware: { bios: 'bios-256k.bin', pflash },
  };
}

function manifest(mutate: (m: CaptureManifest) => void = () => {}, linuxBoot = true): CaptureManifest {
  const dm = manifestDevices(model(), linuxBoot);
  const m = {
    version: CAPTURE_VERSION,
    qemu: { version: '7.2.22' },
    parts: {},
    machine: {
      machineType: 'pc-q35-7.2',
      cpuModel: 'max',
      cpus: 1,
      memMiB: 256,
      append: '',
      ...dm,
    },
    disks: 'live',
  } as unknown as CaptureManifest;
  mutate(m);
  return m;
}

const TYPES = parseDeviceHelp(
  'name "virtio-blk-pci", bus PCI, alias "virtio-blk"\nname "virtio-net-pci", bus PCI\n',
);
const DISK: ReplayDisk = { overlay: '/run/r/disk0.qcow2', base: '/srv/disk.img', baseFormat: 'raw' };

describe('the device model of a capture', () => {
  it('reads the machine types of `qemu -machine help`, aliases included', () => {
    const types = parseMachineHelp(
      'Supported machines are:\n' +
        'microvm              microvm (i386)\n' +
        'pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n' +
        'pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n' +
        'none                 empty machine\n',
    );
    expect([...types]).toEqual(['microvm', 'pc', 'pc-q35-7.2', 'none']);
    expect(types.has('Supported')).toBe(false);
  });

  it('reads QMP answers: PCI functions, the disk behind its device, pflash', () => {
    const f = pciFunctions(PCI);
    expect(f).toHaveLength(6);
    expect(f[1]).toMatchObject({ slot: 1, function: 0, vendor: 0x1af4, device: 0x1001, qdevId: 'disk0' });
    const { disks, pflash } = blockDisks([
      ...BLOCK,
      { device: 'pflash0', inserted: { file: '/usr/share/OVMF/OVMF_CODE.fd', drv: 'raw', ro: true } },
    ]);
    expect(disks).toEqual([
      {
        device: '/machine/peripheral/disk0',
        node: 'lab-disk0',
        path: '/srv/disk.img',
        format: 'raw',
        virtualSize: 33554432,
        readOnly: false,
      },
    ]);
    expect(pflash).toMatchObject([{ unit: 0, path: '/usr/share/OVMF/OVMF_CODE.fd', readOnly: true }]);
    const dm = manifestDevices(model(), true);
    expect(dm.devices.map((d) => [d.type, d.disk])).toEqual([
      ['virtio-blk-pci', 0],
      ['virtio-net-pci', undefined],
    ]);
    expect(dm.firmware).toEqual({ boot: 'linux', bios: 'bios-256k.bin', pflash: [] });
  });

  it('accepts the lab machine and rebuilds it in the same slots, disk on a read-only base, NIC on a lone hub', () => {
    const m = manifest();
    expect(() => checkDeviceModel(m)).not.toThrow();
    const args = replayDeviceArgs(m, [DISK], TYPES, '7.2.22');
    const pairs = args.reduce<[string, string][]>((a, v, i) => (i % 2 ? a : [...a, [v, args[i + 1]]]), []);
    const blockdev = JSON.parse(pairs.find(([k]) => k === '-blockdev')![1]) as Record<
      string,
      Record<string, unknown>
    >;
    expect(blockdev.driver).toBe('qcow2');
    expect(blockdev.file).toEqual({ driver: 'file', filename: '/run/r/disk0.qcow2' });
    expect(blockdev.backing).toEqual({
      driver: 'raw',
      'read-only': true,
      'force-share': true,
      file: { driver: 'file', filename: '/srv/disk.img', 'read-only': true, 'force-share': true },
    });
    const devices = pairs
      .filter(([k]) => k === '-device')
      .map(([, v]) => JSON.parse(v) as Record<string, unknown>);
    expect(devices[0]).toMatchObject({
      driver: 'virtio-blk-pci',
      bus: 'pcie.0',
      addr: '0x1.0',
      drive: 'vmi-disk0',
      'num-queues': 1,
    });
    expect(devices[1]).toMatchObject({
      driver: 'virtio-net-pci',
      addr: '0x2.0',
      mac: '52:54:00:76:6d:69',
      netdev: 'vmi-net1',
    });
    expect(devices[1]).not.toHaveProperty('bootindex');
    expect(pairs.filter(([k]) => k === '-netdev').map(([, v]) => v)).toEqual([
      'hubport,id=vmi-net1,hubid=101',
    ]);
    // Nothing else: no user networking, no tap, no socket backend.
    expect(args.join(' ')).not.toMatch(/user|tap|socket|bridge/);
  });

  it('names a device type this QEMU lacks, with what to do', () => {
    const m = manifest((x) => {
      const nic = x.machine.devices![1];
      nic.type = 'virtio-sound-pci';
      nic.props = {};
    });
    checkDeviceModel(m);
    expect(() => replayDeviceArgs(m, [DISK], TYPES, '7.2.22')).toThrow(
      /this host's QEMU 7\.2\.22 has no device type virtio-sound-pci.*replay it on a host whose QEMU has virtio-sound-pci/,
    );
  });

  it.each<[string, (m: CaptureManifest) => void, RegExp]>([
    [
      'a type vmi does not rebuild',
      (m) => (m.machine.devices![1].type = 'vfio-pci'),
      /vfio-pci .* is not one vmi rebuilds/,
    ],
    [
      'a property outside the type allowlist',
      (m) => (m.machine.devices![0].props.x = 1),
      /property x is not one vmi passes/,
    ],
    [
      'a property injecting options',
      (m) => (m.machine.devices![1].props.mac = '52:54:00:00:00:01,netdev=x'),
      /mac=.* is out of range/,
    ],
    [
      'a romfile path',
      (m) => (m.machine.devices![0].props.romfile = '/etc/passwd'),
      /romfile=.* is out of range/,
    ],
    [
      'a bridge bus',
      (m) => (m.machine.devices![0].bus = '/machine/q35/pcie.0/bridge'),
      /vmi rebuilds devices on \/machine\/q35\/pcie\.0 only/,
    ],
    [
      'two devices in one slot',
      (m) => (m.machine.devices![1].addr = 8),
      /two devices at PCI address 00:01\.0/,
    ],
    ['a relative disk path', (m) => (m.machine.disks![0].path = 'disk.img'), /not a plain absolute path/],
    [
      'a disk path with ..',
      (m) => (m.machine.disks![0].path = '/srv/../etc/shadow'),
      /not a plain absolute path/,
    ],
    [
      'a vmdk disk',
      (m) => ((m.machine.disks![0] as { format: string }).format = 'vmdk'),
      /is not raw or qcow2/,
    ],
    [
      'a disk copy that is no part',
      (m) => (m.machine.disks![0].copyPart = 'disks/x.qcow2'),
      /is not a disks\/ part listed/,
    ],
    [
      'a disk no device uses',
      (m) => delete m.machine.devices![0].disk,
      /disk device virtio-blk-pci .* names no disk/,
    ],
    [
      'a PCI function nothing rebuilds',
      (m) =>
        m.machine.pci!.push({
          bus: 0,
          slot: 3,
          function: 0,
          vendor: 0x1234,
          device: 0x1111,
          classCode: 0x300,
          desc: 'VGA controller',
          qdevId: '',
        }),
      /PCI device 00:03\.0 \(VGA controller\) was not made with -device/,
    ],
    [
      'a firmware outside QEMU',
      (m) => (m.machine.firmware!.bios = '/home/u/evil.bin'),
      /is not a QEMU firmware file/,
    ],
    [
      'a writable pflash code',
      (m) =>
        m.machine.firmware!.pflash.push({
          unit: 0,
          path: '/usr/share/OVMF/OVMF_CODE.fd',
          format: 'raw',
          readOnly: false,
        }),
      /pflash 0 .* is not a read-only firmware file/,
    ],
  ])('refuses %s', (_what, mutate, re) => {
    expect(() => checkDeviceModel(manifest(mutate))).toThrow(re);
  });

  it('rebuilds a firmware boot: no -kernel, the recorded firmware, OVMF through pflash with its variable store on an overlay', () => {
    const m = manifest((x) => {
      x.machine.firmware = {
        boot: 'firmware',
        bios: '',
        pflash: [
          { unit: 0, path: '/usr/share/OVMF/OVMF_CODE.fd', format: 'raw', readOnly: true },
          { unit: 1, path: '/var/lib/vm/VARS.fd', format: 'raw', readOnly: false },
        ],
      };
    }, false);
    checkDeviceModel(m);
    const vars: ReplayDisk = {
      overlay: '/run/r/pflash1.qcow2',
      base: '/var/lib/vm/VARS.fd',
      baseFormat: 'raw',
    };
    const fw = replayFirmwareArgs(m, vars);
    expect(fw.slice(-2)).toEqual(['-machine', 'pflash0=vmi-pflash0,pflash1=vmi-pflash1']);
    expect(JSON.parse(fw[1])).toMatchObject({ 'node-name': 'vmi-pflash0', 'read-only': true });
    expect(JSON.parse(fw[3])).toMatchObject({ driver: 'qcow2', backing: { 'read-only': true } });
    expect(() => replayFirmwareArgs(m)).toThrow(/variable store/);
    // SeaBIOS by another name: -bios; QEMU's default: nothing.
    expect(replayFirmwareArgs(manifest((x) => (x.machine.firmware!.bios = 'bios.bin')))).toEqual([
      '-bios',
      'bios.bin',
    ]);
    expect(replayFirmwareArgs(manifest())).toEqual([]);
    const argv = qemuArgs({
      name: 'r',
      runDir: '/run/r',
      append: '',
      cpus: 1,
      cpuModel: 'max',
      memMiB: 256,
      ramFile: '/dev/shm/r.ram',
      extraArgs: [...replayDeviceArgs(m, [DISK], TYPES, '7.2.22'), ...fw],
    });
    expect(argv).not.toContain('-kernel');
    expect(argv).not.toContain('-append');
    expect(argv).toContain('pflash0=vmi-pflash0,pflash1=vmi-pflash1');
  });

  it('lab devices: JSON -blockdev/-device and a hub port with nothing else on it', () => {
    const a = labDeviceArgs({ disk: { path: '/x/d,1.img', format: 'qcow2' }, nic: true });
    expect(JSON.parse(a[1])).toEqual({
      driver: 'file',
      filename: '/x/d,1.img',
      'node-name': 'lab-disk0-file',
    });
    expect(JSON.parse(a[3])).toMatchObject({ driver: 'qcow2', file: 'lab-disk0-file' });
    expect(a).toContain('hubport,id=lab-net0,hubid=0');
    expect(JSON.parse(a[a.length - 1])).toMatchObject({ driver: 'virtio-net-pci', romfile: '' });
  });

  it('orders modules after their dependencies, and names a missing one', () => {
    const deps: Record<string, string[]> = {
      ext4: ['jbd2', 'mbcache', 'crc16'],
      jbd2: [],
      mbcache: [],
      crc16: [],
      virtio_blk: ['virtio', 'virtio_ring'],
      virtio: [],
      virtio_ring: [],
    };
    const order = moduleLoadOrder(['virtio_blk', 'ext4'], (m) => deps[m]);
    expect(order.indexOf('virtio')).toBeLessThan(order.indexOf('virtio_blk'));
    expect(order.indexOf('jbd2')).toBeLessThan(order.indexOf('ext4'));
    expect(new Set(order).size).toBe(order.length);
    expect(() => moduleLoadOrder(['virtio_net'], (m) => deps[m])).toThrow(
      /virtio_net .* not in the kernel package/,
    );
  });
});
