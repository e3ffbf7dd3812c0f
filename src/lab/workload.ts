/**
 * What runs inside the lab guest, as data (the ground truth tests compare against) and as
 * the /init script that starts it. Every workload process is started once, never
 * respawned, so PIDs stay stable while a test runs; /init then execs busybox init, which
 * reaps orphans and respawns the root shell on ttyS0 that GuestConsole talks to.
 */

export interface LabWorker {
  role: string;
  secret: string;
  /** argv[1..] after /usr/sbin/labd. */
  args: string[];
}

export const LAB_WORKLOAD = {
  hostname: 'vmi-lab',
  /** busybox httpd serving /var/www. */
  httpPort: 8080,
  /** labd tcp-server (with one labd tcp-client connected to it: an ESTABLISHED pair). */
  tcpPort: 9000,
  /** labd udp: a UDP socket bound on 127.0.0.1. */
  udpPort: 9001,
  /** labd unix-server (stream), with one labd unix-client connected. */
  unixSocket: '/run/vmi-lab/control.sock',
  /** tmpfs mounts made by /init (mount point → options given to mount). */
  tmpfs: {
    '/tmp': 'mode=1777,size=32m',
    '/mnt/evidence': 'mode=0700,size=16m,nosuid,nodev',
    '/run/vmi-lab': 'mode=0755,size=8m,nosuid,nodev,noexec',
  } as Record<string, string>,
  /** Files kept open by `labd hold` (the first is also mmap'ed, the last unlinked after open). */
  heldFiles: [
    '/mnt/evidence/case-notes.txt',
    '/tmp/lab-scratch.db',
    '/var/www/index.html',
    '/tmp/deleted-but-open.tmp',
  ],
  workers: [
    {
      role: 'worker-1',
      secret: 'lab-secret-alpha-7f3a',
      args: ['worker', '--role', 'worker-1', '--shard', '1'],
    },
    {
      role: 'worker-2',
      secret: 'lab-secret-bravo-91c2',
      args: ['worker', '--role', 'worker-2', '--shard', '2'],
    },
    {
      role: 'worker-3',
      secret: 'lab-secret-charlie-d04e',
      args: ['worker', '--role', 'worker-3', '--shard', '3'],
    },
  ] as LabWorker[],
  /**
   * Kernel-facing workload (issue 17: capabilities, ptrace, ebpf; see
   * kernelWorkloadScript): `labkern` helpers started by /init with these pids-file names.
   */
  kernel: {
    /** `labkern caps`: known capability sets (guest-programs/labkern.c). */
    caps: 'kcaps',
    /** `labkern sleep`, traced by `labkern trace` (PTRACE_SEIZE). */
    tracee: 'ktracee',
    tracer: 'ktracer',
    /** `labkern bpf PORT`: socket filter vmilab_sockflt with map vmilab_map on a UDP socket. */
    bpf: 'kbpf',
    bpfPort: 9002,
    bpfProgName: 'vmilab_sockflt',
    bpfMapName: 'vmilab_map',
    /** `labkern nft`: table inet vmilab, chain input, one rule (tcp dport 31337 counter drop). */
    nftTable: 'vmilab',
    nftChain: 'input',
    nftComment: 'vmilab-rule',
  },
  /**
   * Memory plugins (issue 17): an interactive bash (Debian's bash-static as /usr/bin/bash)
   * reading commands from `bashFifo` with HISTTIMEFORMAT set, which runs `bashCommands` at
   * boot; labmem (src/lab/guest-programs/labmem.c) with an anonymous RWX page holding
   * `rwxCode` then `rwxMarker` at offset 32, keeping every line written to `labmemFifo`.
   */
  memory: {
    bashFifo: '/run/vmi-lab/bash.fifo',
    histTimeFormat: '%F %T ',
    bashCommands: ['echo vmi-lab-bash-boot-1', 'cd /run/vmi-lab', 'true vmi-lab-bash-boot-3'],
    labmemFifo: '/run/vmi-lab/labmem.fifo',
    rwxCode: '31c0b83c00000031ff0f05c390909090',
    rwxMarker: 'VMI-LAB-RWX-MARKER-5a17',
  },
  /** Written by /init once every listener is up: `name=pid` lines. */
  pidsFile: '/run/vmi-lab/pids',
  readyFile: '/run/vmi-lab/ready',
} as const;

/** Single-quotes a string for sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');

/**
 * The kernel-facing part of /init (issue 17): a process with known capability sets, a
 * sleeper traced by another, and a loaded eBPF socket filter. Uses /init's `start`.
 */
export function kernelWorkloadScript(): string {
  const k = LAB_WORKLOAD.kernel;
  return `# kernel-facing workload (capabilities, ptrace, ebpf, netfilter)
/usr/sbin/labkern nft >/var/log/lab-nft.log 2>&1 || echo "lab: labkern nft failed" >/dev/console
/usr/sbin/labkern iptables >/var/log/lab-iptables.log 2>&1 || echo "lab: labkern iptables failed" >/dev/console
start ${k.caps} /usr/sbin/labkern caps
start ${k.tracee} /usr/sbin/labkern sleep
start ${k.tracer} /usr/sbin/labkern trace $!
start ${k.bpf} /usr/sbin/labkern bpf ${k.bpfPort}`;
}

/** The guest's /init. `modules` are paths inside the guest of .ko files to insmod. */
export function initScript(modules: readonly string[]): string {
  const w = LAB_WORKLOAD;
  const held = w.heldFiles
    .map((f, i) => (i === w.heldFiles.length - 1 ? shQuote('!' + f) : shQuote(f)))
    .join(' ');
  const workers = w.workers
    .map(
      (k) =>
        `start ${k.role} env LAB_ROLE=${shQuote(k.role)} LAB_SECRET=${shQuote(k.secret)} /usr/sbin/labd ${k.args.map(shQuote).join(' ')}`,
    )
    .join('\n');
  const mounts = Object.entries(w.tmpfs)
    .map(
      ([dir, opts]) =>
        `mkdir -p ${dir}\nmount -t tmpfs -o ${opts} ${dir === '/tmp' ? 'tmpfs' : dir.split('/').pop()} ${dir}`,
    )
    .join('\n');
  return `#!/bin/sh
# vmi lab guest init (generated by src/lab/workload.ts)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# cgroup v2, as systemd mounts it (labsandbox --cgroup makes its own cgroups there).
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
${mounts}
# Keep the serial console for the test shell: only emergencies from the kernel.
dmesg -n 1
hostname ${w.hostname}
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
for m in ${modules.map(shQuote).join(' ')}; do insmod "$m" || echo "lab: insmod $m failed" >/dev/console; done

: > ${w.pidsFile}
start() {
  name=$1
  shift
  "$@" </dev/null >/var/log/lab-$name.log 2>&1 &
  echo "$name=$!" >> ${w.pidsFile}
}
start httpd httpd -f -p 127.0.0.1:${w.httpPort} -h /var/www
start tcp-server /usr/sbin/labd tcp-server ${w.tcpPort}
start udp /usr/sbin/labd udp ${w.udpPort}
start unix-server /usr/sbin/labd unix-server ${w.unixSocket}
start tcp-client /usr/sbin/labd tcp-client ${w.tcpPort}
start unix-client /usr/sbin/labd unix-client ${w.unixSocket}
start holder /usr/sbin/labd hold ${held}
start monitor /usr/sbin/labd monitor /run/vmi-lab/heartbeat
${workers}
start ticker /bin/sh -c 'while true; do sleep 10; done'
${kernelWorkloadScript()}

# ---- Memory plugins (issue 17): an interactive bash with a known history, and labmem.
mkfifo ${w.memory.bashFifo} ${w.memory.labmemFifo}
env HISTTIMEFORMAT=${shQuote(w.memory.histTimeFormat)} PS1='labbash$ ' /usr/bin/bash -i <>${w.memory.bashFifo} >/var/log/lab-bash.log 2>&1 &
echo "bash=$!" >> ${w.pidsFile}
(printf '%s\n' ${w.memory.bashCommands.map(shQuote).join(' ')} > ${w.memory.bashFifo}) &
start labmem /usr/sbin/labmem ${w.memory.labmemFifo}

# Ready once every listener is up and both clients are connected.
i=0
while [ $i -lt 300 ]; do
  if grep -q ':${hex4(w.httpPort)} 00000000:0000 0A' /proc/net/tcp &&
     grep -q ':${hex4(w.tcpPort)} 0100007F:[0-9A-F]* 01' /proc/net/tcp &&
     grep -q ':${hex4(w.udpPort)} ' /proc/net/udp &&
     [ -S ${w.unixSocket} ] &&
     [ "$(grep -c ' 03 ' /proc/net/unix)" -ge 2 ]; then
    break
  fi
  i=$((i + 1))
  sleep 0.1
done
echo "ready after $i polls" > ${w.readyFile}
exec /bin/busybox init
`;
}

export const INITTAB = `# vmi lab guest: busybox init reaps orphans and keeps a root shell on the serial console.
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
`;

export const PROFILE = `export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
# No echo: busybox line editing then reads plain lines, which the host console parses.
stty -echo 2>/dev/null
PS1='lab# '
`;

/** Parses the guest's `LAB_WORKLOAD.pidsFile` (`name=pid` lines) into name → pid. */
export function parseLabPids(text: string): Record<string, number> {
  return Object.fromEntries(
    text
      .trim()
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => l.split('='))
      .map(([k, v]) => [k, Number(v)]),
  );
}
