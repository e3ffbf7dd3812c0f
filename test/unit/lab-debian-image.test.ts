import { describe, expect, it } from 'vitest';
import {
  aptListPrefix,
  diskLayout,
  ENABLED_UNITS,
  moduleLoadOrder,
  parseDebianMirror,
  realvmInitScript,
  rootfsFiles,
  sfdiskScript,
  syslinuxConfig,
} from '../../src/lab/debian-image.js';
import { LabError } from '../../src/lab/host.js';
import { qemuArgs, QemuError, type LaunchSpec } from '../../src/qemu/launcher.js';

describe('debian image: disk layout', () => {
  it('puts a 48 MiB boot partition at 1 MiB and the root after it, MiB-aligned', () => {
    const l = diskLayout(300 * 1048576 + 1);
    expect(l.bootStart).toBe(2048);
    expect(l.bootSectors).toBe(48 * 2048);
    expect(l.rootStart).toBe(2048 + 48 * 2048);
    expect(l.rootSectors).toBe(301 * 2048);
    expect(l.totalBytes).toBe((l.rootStart + l.rootSectors) * 512);
    expect(() => diskLayout(0)).toThrow(LabError);
    expect(() => diskLayout(Number.NaN)).toThrow(LabError);
  });

  it('writes an sfdisk script with an active FAT16 partition and a Linux one', () => {
    const s = sfdiskScript(diskLayout(1048576));
    expect(s).toContain('label: dos');
    expect(s).toMatch(/start=2048, size=98304, type=e, bootable/);
    expect(s).toMatch(/start=100352, size=2048, type=83/);
  });

  it('boots the kernel and initrd from the FAT partition with the root on /dev/vda2', () => {
    const c = syslinuxConfig();
    expect(c).toMatch(/KERNEL \/vmlinuz/);
    expect(c).toMatch(/INITRD \/initrd.img/);
    expect(c).toMatch(/APPEND root=\/dev\/vda2 rw console=ttyS0/);
  });
});

describe('debian image: modules and initramfs', () => {
  const deps = new Map<string, string[]>([
    ['ext4', ['mbcache', 'jbd2', 'crc16']],
    ['jbd2', []],
    ['mbcache', []],
    ['crc16', []],
    ['virtio_blk', ['virtio', 'virtio_ring']],
    ['virtio', []],
    ['virtio_ring', []],
  ]);

  it('loads each module after its dependencies, once', () => {
    const order = moduleLoadOrder(['virtio_blk', 'ext4', 'jbd2'], deps);
    expect(new Set(order).size).toBe(order.length);
    expect(order).toHaveLength(7);
    for (const [m, ds] of deps) for (const d of ds) expect(order.indexOf(d)).toBeLessThan(order.indexOf(m));
  });

  it('names a missing module and a cycle', () => {
    expect(() => moduleLoadOrder(['nope'], deps)).toThrow(/nope not found/);
    expect(() => moduleLoadOrder(['ext4'], new Map([['ext4', ['jbd2']]]))).toThrow(
      /jbd2 not found \(needed by ext4\)/,
    );
    const cyc = new Map([
      ['a', ['b']],
      ['b', ['a']],
    ]);
    expect(() => moduleLoadOrder(['a'], cyc)).toThrow(/cycle: a → b → a/);
  });

  it('the initramfs init inserts the modules in order and switch_roots to systemd', () => {
    const s = realvmInitScript(['/modules/00-a.ko', '/modules/01-b.ko']);
    expect(s).toContain('for m in /modules/00-a.ko /modules/01-b.ko; do insmod');
    expect(s).toContain('mount -t ext4 -o rw "$root" /newroot');
    expect(s).toMatch(/exec switch_root \/newroot \/sbin\/init\n$/);
  });
});

describe('debian image: systemd configuration', () => {
  it('keeps a root shell on ttyS0 and sandboxes the listeners', () => {
    const { files, exec } = rootfsFiles('0'.repeat(32));
    expect(files['etc/systemd/system/vmi-console.service']).toMatch(/TTYPath=\/dev\/ttyS0/);
    expect(files['etc/systemd/system/vmi-console.service']).toMatch(/Restart=always/);
    for (const u of ['vmi-echo', 'vmi-web']) {
      const text = files[`etc/systemd/system/${u}.service`];
      for (const opt of ['PrivateTmp=yes', 'ProtectSystem=strict', 'NoNewPrivileges=yes'])
        expect(text, `${u}: ${opt}`).toContain(opt);
    }
    for (const u of ENABLED_UNITS) expect(files[`etc/systemd/system/${u}`], u).toBeDefined();
    expect(exec).toEqual(['usr/local/sbin/vmi-lab-ready']);
    // 7000 = 0x1B58 and 8080 = 0x1F90 as /proc/net/tcp prints them.
    expect(files['usr/local/sbin/vmi-lab-ready']).toContain(':1B58 0*:0000 0A');
    expect(files['usr/local/sbin/vmi-lab-ready']).toContain(':1F90 0*:0000 0A');
  });
});

describe('debian image: the host mirror', () => {
  it('reads deb822 and one-line sources', () => {
    const deb822 = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`;
    expect(parseDebianMirror(deb822)).toBe('http://deb.debian.org/debian');
    expect(parseDebianMirror('Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\n')).toBeUndefined();
    expect(parseDebianMirror('deb [arch=amd64] http://mirror.example/debian bookworm main\n')).toBe(
      'http://mirror.example/debian',
    );
    expect(parseDebianMirror('deb http://mirror.example/debian bullseye main\n')).toBeUndefined();
    expect(parseDebianMirror('# deb http://x/debian bookworm main\n')).toBeUndefined();
  });

  it("names apt's list files like apt does", () => {
    expect(aptListPrefix('http://deb.debian.org/debian')).toBe('deb.debian.org_debian');
    expect(aptListPrefix('https://m.example/debian/')).toBe('m.example_debian');
  });
});

describe('qemu command line: firmware boot from a virtio disk', () => {
  const spec: LaunchSpec = {
    name: 'realvm',
    runDir: '/tmp/vmi-0/guests/realvm',
    cpus: 1,
    cpuModel: 'max',
    memMiB: 1024,
    ramFile: '/dev/shm/vmi-realvm-1.ram',
    drives: [{ id: 'disk0', file: '/tmp/vmi-0/guests/realvm/disk.qcow2', format: 'qcow2', bootIndex: 0 }],
    nics: [{ id: 'net0', mac: '52:54:00:12:34:56' }],
  };

  it('has no -kernel, a bootable virtio-blk and a virtio-net on a lone hub port', () => {
    const a = qemuArgs(spec);
    expect(a).not.toContain('-kernel');
    expect(a).not.toContain('-append');
    expect(a[a.indexOf('-drive') + 1]).toBe(
      'if=none,id=disk0,file=/tmp/vmi-0/guests/realvm/disk.qcow2,format=qcow2',
    );
    expect(a).toContain('virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=0');
    expect(a[a.indexOf('-netdev') + 1]).toBe('hubport,id=net0,hubid=0');
    expect(a).toContain('virtio-net-pci,netdev=net0,id=net0-dev,mac=52:54:00:12:34:56');
    const netdevs = a.filter((_, i) => a[i - 1] === '-netdev' || a[i - 1] === '-nic');
    expect(netdevs).toEqual(['hubport,id=net0,hubid=0', 'none']);
  });

  it('refuses nothing to boot, bad ids, global MACs and commas', () => {
    expect(() => qemuArgs({ ...spec, drives: [{ ...spec.drives![0], bootIndex: undefined }] })).toThrow(
      /nothing to boot/,
    );
    expect(() => qemuArgs({ ...spec, nics: [{ id: 'n,0', mac: '52:54:00:12:34:56' }] })).toThrow(QemuError);
    expect(() => qemuArgs({ ...spec, nics: [{ id: 'n0', mac: '00:11:22:33:44:55' }] })).toThrow(/locally/);
    expect(() => qemuArgs({ ...spec, drives: [{ ...spec.drives![0], file: '/a,b' }] })).toThrow(/','/);
  });
});
