import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { LAB_FLAVOURS, LAB_MACHINES, labUp, MAX_NUMA_NODES } from '../../lab/lab.js';

export default class LabUp extends VmiCommand {
  static override description =
    'Boot a lab guest: a Debian kernel with a busybox initramfs running a known workload, or (--flavour debian) a Debian 12 VM with systemd booted from a virtio disk (idempotent)';

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --name lab2 --cpus 2 --memory 512',
    '<%= config.bin %> <%= command.id %> --name realvm --flavour debian --memory 1024',
    '<%= config.bin %> <%= command.id %> --name big --memory 8192 --cpus 2',
    '<%= config.bin %> <%= command.id %> --name numa --memory 2048 --cpus 2 --numa 2',
    '<%= config.bin %> <%= command.id %> --name i440fx --machine pc --memory 4096',
    '<%= config.bin %> <%= command.id %> --kernel 6.12-rt',
    '<%= config.bin %> <%= command.id %> --name disky --disk /tmp/lab-disk.img --nic',
    '<%= config.bin %> <%= command.id %> --kernel linux-image-6.12.107+deb12-rt-amd64-unsigned',
  ];

  static override flags = {
    name: Flags.string({ description: 'guest name', default: 'lab' }),
    flavour: Flags.string({
      description:
        'busybox: kernel booted with -kernel and a busybox initramfs (fast); debian: Debian 12 + systemd on a partitioned virtio disk, SeaBIOS + SYSLINUX boot, virtio NIC with no backend off the host (image built once with debootstrap and cached)',
      options: [...LAB_FLAVOURS],
      default: 'busybox',
    }),
    kernel: Flags.string({
      description:
        'Debian kernel image package, or an alias: 6.1, 6.1-cloud, 6.1-rt, 6.12, 6.12-cloud, 6.12-rt (newest of that series; default: 6.1)',
    }),
    cpus: Flags.integer({ description: 'number of vCPUs', default: 1, min: 1, max: 16 }),
    cpu: Flags.string({ description: 'QEMU CPU model', default: 'max' }),
    memory: Flags.integer({
      description:
        "guest RAM in MiB, up to the host's RAM and /dev/shm size (the RAM file is sparse: the host pays for what the guest touches)",
      default: 256,
      min: 64,
    }),
    machine: Flags.string({
      description: 'QEMU machine type: q35, or pc (i440fx)',
      options: [...LAB_MACHINES],
      default: 'q35',
    }),
    numa: Flags.integer({
      description:
        'NUMA nodes: with 2 or more, RAM is split evenly into one memory backend per node and vCPUs are dealt out round-robin',
      default: 1,
      min: 1,
      max: MAX_NUMA_NODES,
    }),
    append: Flags.string({ description: 'extra kernel command-line arguments' }),
    rootkit: Flags.boolean({
      description:
        "put the test rootkit (a test fixture, src/lab/guest-modules/vmi_testkit.c, built against the kernel's Debian headers) in the guest, unloaded, at /lib/modules/$(uname -r)/extra/vmi_testkit.ko",
      default: false,
    }),
    boot: Flags.string({
      description:
        'busybox flavour: kernel image QEMU boots: vmlinux (PVH, fast, 4-level paging; default) or bzimage (slow; 5-level paging with --cpu max,la57=on)',
      options: ['vmlinux', 'bzimage'],
    }),
    disk: Flags.string({
      description:
        'disk image (raw or qcow2) attached as a virtio-blk device; a path that does not exist gets a small ext4 image (the guest can mount /dev/vda)',
    }),
    nic: Flags.boolean({
      description: 'add a virtio-net NIC on a local hub port (nothing leaves the host)',
      default: false,
    }),
    json: Flags.boolean({ description: 'print the guest description as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(LabUp);
    const started = Date.now();
    try {
      const guest = await labUp({
        name: flags.name,
        flavour: LAB_FLAVOURS.find((f) => f === flags.flavour),
        kernel: flags.kernel,
        cpus: flags.cpus,
        cpuModel: flags.cpu,
        memMiB: flags.memory,
        machine: LAB_MACHINES.find((m) => m === flags.machine),
        numaNodes: flags.numa,
        appendCmdline: flags.append,
        rootkit: flags.rootkit,
        bootImage: flags.boot === 'bzimage' ? 'bzImage' : flags.boot === 'vmlinux' ? 'vmlinux' : undefined,
        ...(flags.disk !== undefined ? { disk: flags.disk } : {}),
        nic: flags.nic,
        onProgress: (m) => process.stderr.write(`vmi lab: ${m}\n`),
      });
      if (flags.json) {
        this.log(JSON.stringify(guest, null, 2));
      } else {
        const secs = ((Date.now() - started) / 1000).toFixed(1);
        this.log(`${guest.name} running (pid ${guest.pid}, ${guest.kernelRelease}) in ${secs} s`);
        this.log(`  qmp:    ${guest.qmpSocket}`);
        this.log(`  gdb:    ${guest.gdbSocket}`);
        this.log(`  ram:    ${Object.values(guest.ramFiles ?? { m: guest.ramFile }).join(', ')}`);
        if (guest.ram)
          this.log(
            `  layout: ${guest.ram.map((r) => `0x${r.gpa.toString(16)}+${r.size / 1048576} MiB`).join(', ')}`,
          );
        this.log(`  serial: ${guest.serialSocket} (log ${guest.consoleLog})`);
        if (guest.disk) this.log(`  disk:   ${guest.disk.overlay} (qcow2 on ${guest.disk.base}, read-only)`);
        if (guest.nic) this.log(`  nic:    ${guest.nic.model} ${guest.nic.mac} (hub with no other port)`);
      }
    } catch (e) {
      this.fail(e, 1);
    }
  }
}
