/**
 * The "realvm" lab flavour's disk image: Debian 12 (bookworm) with systemd, built by the
 * project from Debian packages and cached like the kernels. Made without loop devices or
 * mounts, so it builds wherever `debootstrap` can chroot:
 *
 * - `debootstrap --variant=minbase --include=systemd-sysv,...` from the mirror the host's
 *   apt already uses (/etc/apt/sources.list(.d), or $VMI_DEBIAN_MIRROR);
 * - the lab kernel's modules for a virtio VM (closure of `depends=`) copied into
 *   /lib/modules/<release>, `depmod -b`;
 * - the lab's units: a root shell on ttyS0 for src/lab/console.ts, two sandboxed listeners,
 *   a ready marker; slow or irrelevant units masked;
 * - an MBR disk: partition 1 FAT16 (active) holding SYSLINUX, the kernel's bzImage and an
 *   initramfs built here (busybox-static: insmod virtio + ext4, mount root, switch_root to
 *   systemd); partition 2 ext4 made by `mkfs.ext4 -d` straight into the image file.
 *
 * Booting: SeaBIOS → MBR (syslinux mbr.bin) → ldlinux.sys → bzImage + initrd. SYSLINUX
 * rather than GRUB because it installs into a FAT file system inside an image file with
 * `syslinux --offset` (mtools), with no loop device and no grub-install probing.
 *
 * The cache key covers the package set, the archive's InRelease (which fixes every package
 * version), the kernel package and version and every file written here; image.json records
 * the installed packages with their versions. The base image is made read-only (0444) and
 * guests open it only as the backing file of a per-guest qcow2 overlay.
 */
import { createReadStream, existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, join, relative } from 'node:path';
import { writeCpio, type CpioEntry } from './cpio.js';
import { cacheRoot, LabError, mustRun, removeQuietly, runTool, sha256 } from './host.js';
import { buildGuestProgram, busyboxPath, parseBusyboxList } from './initramfs.js';
import { copyModule, downloadDeb, findModulesRoot, type LabKernel } from './kernel.js';
import { moduleDepends } from './modinfo.js';
import { randomTag } from '../util/run-dir.js';

/** Bump when the image layout changes in a way the key's inputs do not capture. */
const LAYOUT_VERSION = '1';

export const DEBIAN_SUITE = 'bookworm';
/** Packages on top of minbase: systemd as init, udev (real VMs have it), ip, busybox (nc, httpd). */
export const DEBIAN_PACKAGES = ['systemd-sysv', 'udev', 'iproute2', 'busybox'] as const;
/** Modules the initramfs loads (with their dependencies) to reach the ext4 root on virtio-blk. */
export const INITRAMFS_MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'] as const;
/** Modules copied into the root file system (with dependencies); udev loads them by alias. */
export const ROOTFS_MODULES = [
  ...INITRAMFS_MODULES,
  'virtio_net',
  'virtio_console',
  'virtio_rng',
  'vfat',
  'nls_cp437',
  'nls_ascii',
  'nls_utf8',
  'dummy',
  // systemd loads it at start (automount points); it warns when missing.
  'autofs4',
] as const;

/** The console shell's binary in the image: a copy of the host's busybox-static. */
export const CONSOLE_SHELL = '/usr/local/lib/vmi/busybox';

/** The lab's static helper program (src/lab/guest-programs/labd.c) in the image. */
export const LABD = '/usr/local/sbin/labd';

/** What the image's guest runs, for tests (ground truth still comes from the console). */
export const REALVM_WORKLOAD = {
  hostname: 'vmi-realvm',
  /** vmi-echo.service: busybox nc echo server (all addresses), sandboxed. */
  echoPort: 7000,
  /** vmi-web.service: busybox httpd on 127.0.0.1, sandboxed. */
  httpPort: 8080,
  /** Written by vmi-lab-ready.service once both listen (same path as the busybox lab's). */
  readyFile: '/run/vmi-lab/ready',
  rootDevice: '/dev/vda2',
} as const;

/** Sizes and offsets of the two partitions, in 512-byte sectors. */
export interface DiskLayout {
  bootStart: number;
  bootSectors: number;
  rootStart: number;
  rootSectors: number;
  totalBytes: number;
}

const SECTOR = 512;
const MIB = 1 << 20;

/**
 * The partition layout for a root file system of `rootBytes` (pure): 1 MiB gap, a 48 MiB
 * FAT16 boot partition, the root partition (MiB-aligned, `rootBytes` rounded up to MiB).
 */
export function diskLayout(rootBytes: number, bootMiB = 48): DiskLayout {
  if (!Number.isSafeInteger(rootBytes) || rootBytes <= 0) throw new LabError(`bad root size ${rootBytes}`);
  const bootStart = MIB / SECTOR;
  const bootSectors = (bootMiB * MIB) / SECTOR;
  const rootStart = bootStart + bootSectors;
  const rootSectors = Math.ceil(rootBytes / MIB) * (MIB / SECTOR);
  return { bootStart, bootSectors, rootStart, rootSectors, totalBytes: (rootStart + rootSectors) * SECTOR };
}

/** sfdisk input for the layout: DOS label, p1 FAT16 LBA (0x0e) active, p2 Linux (pure). */
export function sfdiskScript(l: DiskLayout): string {
  return [
    'label: dos',
    'unit: sectors',
    `start=${l.bootStart}, size=${l.bootSectors}, type=e, bootable`,
    `start=${l.rootStart}, size=${l.rootSectors}, type=83`,
    '',
  ].join('\n');
}

/** The kernel command line SYSLINUX passes (it prepends BOOT_IMAGE=/vmlinuz). */
export const REALVM_CMDLINE =
  `root=${REALVM_WORKLOAD.rootDevice} rw console=ttyS0 loglevel=4 quiet panic=-1 ` +
  'systemd.show_status=false';

export function syslinuxConfig(cmdline: string = REALVM_CMDLINE): string {
  return [
    'SERIAL 0 115200',
    'DEFAULT debian',
    'PROMPT 0',
    'TIMEOUT 0',
    'LABEL debian',
    '  KERNEL /vmlinuz',
    '  INITRD /initrd.img',
    `  APPEND ${cmdline}`,
    '',
  ].join('\n');
}

/**
 * Orders modules so that each comes after its dependencies (pure). `deps` maps a module
 * to its `depends=` list; a module missing from `deps` is an error (it was not found), and
 * so is a cycle.
 */
export function moduleLoadOrder(
  wanted: readonly string[],
  deps: ReadonlyMap<string, readonly string[]>,
): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (m: string, chain: string[]): void => {
    const s = state.get(m);
    if (s === 'done') return;
    if (s === 'visiting') throw new LabError(`module dependency cycle: ${[...chain, m].join(' → ')}`);
    const d = deps.get(m);
    if (!d)
      throw new LabError(`kernel module ${m} not found${chain.length ? ` (needed by ${chain.at(-1)})` : ''}`);
    state.set(m, 'visiting');
    for (const x of d) visit(x, [...chain, m]);
    state.set(m, 'done');
    order.push(m);
  };
  for (const m of wanted) visit(m, []);
  return order;
}

/** The initramfs /init: load modules, mount the root named by root=, switch_root to systemd. */
export function realvmInitScript(modulePaths: readonly string[]): string {
  return `#!/bin/sh
# vmi realvm initramfs (generated by src/lab/debian-image.ts)
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modulePaths.join(' ')}; do insmod "$m" || echo "initramfs: insmod $m failed"; done
root=${REALVM_WORKLOAD.rootDevice}
for a in $(cat /proc/cmdline); do case "$a" in root=/dev/*) root=\${a#root=};; esac; done
i=0
while [ ! -b "$root" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "initramfs: cannot mount $root; dropping to a shell"
  exec sh
fi
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
`;
}

const unit = (lines: string[]): string => lines.join('\n') + '\n';

/** Files written into the root file system (path → content; mode 0644 unless listed). */
export function rootfsFiles(machineId: string): { files: Record<string, string>; exec: string[] } {
  const w = REALVM_WORKLOAD;
  const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
  const files: Record<string, string> = {
    'etc/hostname': `${w.hostname}\n`,
    'etc/hosts': `127.0.0.1 localhost\n127.0.1.1 ${w.hostname}\n`,
    // The initramfs mounts the root rw; an fstab line for it would make systemd wait for
    // udev's dev-vda2.device (25 s under TCG) and remount it.
    'etc/fstab': `# ${w.rootDevice} / ext4 rw (mounted by the initramfs)\n`,
    'etc/machine-id': `${machineId}\n`,
    'etc/systemd/journald.conf.d/vmi-lab.conf': unit(['[Journal]', 'Storage=volatile', 'RuntimeMaxUse=8M']),
    'srv/www/index.html': '<!doctype html><title>vmi realvm</title><p>vmi realvm guest</p>\n',
    'root/.profile': unit([
      '# vmi realvm: the host talks to this shell through src/lab/console.ts',
      'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb',
      'stty -echo 2>/dev/null',
      "PS1='realvm# '",
    ]),
    // The shell the host's GuestConsole drives: on ttyS0, respawned, no getty or login.
    'etc/systemd/system/vmi-console.service': unit([
      '[Unit]',
      'Description=vmi lab: root shell on the serial console',
      'Conflicts=rescue.service emergency.service',
      '[Service]',
      // busybox-static's ash (the host's, as in the busybox flavour): its applets (cat,
      // base64) need no dynamic loading, which costs tens of ms per exec under TCG; the
      // console driver forks several per command and guestProcs two per process.
      `ExecStart=${CONSOLE_SHELL} sh -l`,
      'WorkingDirectory=/root',
      'Environment=HOME=/root TERM=dumb',
      'StandardInput=tty-force',
      'StandardOutput=tty',
      'StandardError=tty',
      'TTYPath=/dev/ttyS0',
      'TTYReset=yes',
      'TTYVHangup=yes',
      'Restart=always',
      'RestartSec=0',
      '[Install]',
      'WantedBy=multi-user.target',
    ]),
    'etc/systemd/system/vmi-echo.service': unit([
      '[Unit]',
      `Description=vmi lab: TCP echo service on port ${w.echoPort} (busybox nc), sandboxed`,
      '[Service]',
      `ExecStart=/bin/busybox nc -ll -p ${w.echoPort} -e /bin/cat`,
      'User=nobody',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateDevices=yes',
      'CapabilityBoundingSet=',
      'Restart=always',
      '[Install]',
      'WantedBy=multi-user.target',
    ]),
    'etc/systemd/system/vmi-web.service': unit([
      '[Unit]',
      `Description=vmi lab: HTTP on 127.0.0.1:${w.httpPort} (busybox httpd), sandboxed`,
      '[Service]',
      `ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${w.httpPort} -h /srv/www`,
      'User=www-data',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateDevices=yes',
      'ProtectKernelTunables=yes',
      'ProtectControlGroups=yes',
      'MemoryDenyWriteExecute=yes',
      'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
      'SystemCallFilter=@system-service',
      'CapabilityBoundingSet=',
      'Restart=always',
      '[Install]',
      'WantedBy=multi-user.target',
    ]),
    // A root health agent that wakes every 100 ms (no seccomp filter, unlike journald and
    // udevd): like a real VM's agents and timers it keeps the guest from being perfectly
    // idle, so vmi finds a root task returning to user mode to host its shadow.
    'etc/systemd/system/vmi-monitor.service': unit([
      '[Unit]',
      'Description=vmi lab: health agent (labd monitor), rewrites a status file every 100 ms',
      '[Service]',
      `ExecStart=${LABD} monitor /run/vmi-monitor.beat`,
      'Restart=always',
      '[Install]',
      'WantedBy=multi-user.target',
    ]),
    'etc/systemd/system/vmi-lab-ready.service': unit([
      '[Unit]',
      'Description=vmi lab: ready marker once the lab services listen',
      'Wants=vmi-echo.service vmi-web.service',
      'After=vmi-echo.service vmi-web.service',
      '[Service]',
      'Type=oneshot',
      'RemainAfterExit=yes',
      'ExecStart=/usr/local/sbin/vmi-lab-ready',
      '[Install]',
      'WantedBy=multi-user.target',
    ]),
    'usr/local/sbin/vmi-lab-ready': `#!/bin/sh
# Writes ${w.readyFile} once both lab listeners are in /proc/net/tcp or tcp6 (LISTEN = 0A;
# busybox nc binds the IPv6 wildcard when the kernel has IPv6).
mkdir -p ${dirname(w.readyFile)}
i=0
while [ $i -lt 600 ]; do
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':${hex4(w.echoPort)} 0*:0000 0A' &&
     cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':${hex4(w.httpPort)} 0*:0000 0A'; then
    break
  fi
  i=$((i + 1))
  sleep 0.1
done
echo "ready after $i polls" > ${w.readyFile}
`,
  };
  return { files, exec: ['usr/local/sbin/vmi-lab-ready'] };
}

/** Units enabled (multi-user.target.wants) and masked (→ /dev/null) in the image. */
export const ENABLED_UNITS = [
  'vmi-console.service',
  'vmi-monitor.service',
  'vmi-echo.service',
  'vmi-web.service',
  'vmi-lab-ready.service',
];
/** Slow under TCG or irrelevant without a network or a screen. */
export const MASKED_UNITS = [
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'apt-daily.service',
  'apt-daily-upgrade.service',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'systemd-timesyncd.service',
  'getty@tty1.service',
  'serial-getty@ttyS0.service',
  'console-getty.service',
  'systemd-networkd-wait-online.service',
  'systemd-udev-settle.service',
  // Measured on the critical path under TCG (~2-4 s each, systemd-analyze critical-chain):
  // the root is mounted rw by the initramfs and fstab is empty; users exist; no logins.
  'systemd-remount-fs.service',
  'systemd-sysusers.service',
  'systemd-update-utmp.service',
  // Starts gettys on tty2-6 when dbus is absent (15 s of blame); there is no screen.
  'getty-static.service',
  // No kmod binary in minbase (udev loads modules through libkmod itself).
  'kmod-static-nodes.service',
  'modprobe@dm_mod.service',
  'modprobe@loop.service',
  'modprobe@fuse.service',
  'modprobe@efi_pstore.service',
  'modprobe@drm.service',
  'systemd-pstore.service',
  'systemd-random-seed.service',
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  'sys-kernel-config.mount',
  'sys-fs-fuse-connections.mount',
];

/**
 * The Debian mirror the host's apt uses for bookworm (deb822 .sources or one-line
 * sources.list text; pure): the first `deb` URI whose suites include bookworm.
 */
export function parseDebianMirror(text: string): string | undefined {
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (k: string): string | undefined =>
      new RegExp(`^${k}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim();
    const types = field('Types');
    const uris = field('URIs');
    const suites = field('Suites');
    if (types && uris && suites && types.split(/\s+/).includes('deb')) {
      if (suites.split(/\s+/).includes(DEBIAN_SUITE)) return uris.split(/\s+/)[0];
    }
  }
  for (const line of text.split('\n')) {
    const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/.exec(line);
    if (m && m[2] === DEBIAN_SUITE) return m[1];
  }
  return undefined;
}

/** Where apt keeps a mirror's list files: the URI without scheme, '/' → '_' (pure). */
export function aptListPrefix(mirror: string): string {
  return mirror
    .replace(/^[a-z]+:\/\//, '')
    .replace(/\/+$/, '')
    .replace(/\//g, '_');
}

async function hostMirror(): Promise<string> {
  if (process.env.VMI_DEBIAN_MIRROR) return process.env.VMI_DEBIAN_MIRROR;
  const texts: string[] = [];
  texts.push(await readFile('/etc/apt/sources.list', 'utf8').catch(() => ''));
  const d = '/etc/apt/sources.list.d';
  for (const f of (await readdir(d).catch(() => [] as string[])).sort()) {
    if (f.endsWith('.sources') || f.endsWith('.list'))
      texts.push(await readFile(join(d, f), 'utf8').catch(() => ''));
  }
  for (const t of texts) {
    const m = parseDebianMirror(t);
    if (m) return m;
  }
  throw new LabError(
    `no Debian ${DEBIAN_SUITE} mirror in /etc/apt/sources.list(.d): set VMI_DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)`,
  );
}

/** sha256 of the suite's InRelease as apt fetched it: it fixes every package version. */
async function releaseDigest(mirror: string, onProgress?: (m: string) => void): Promise<string> {
  const path = `/var/lib/apt/lists/${aptListPrefix(mirror)}_dists_${DEBIAN_SUITE}_InRelease`;
  let data = await readFile(path).catch(() => undefined);
  if (!data) {
    onProgress?.('running apt-get update');
    await mustRun('apt-get', ['update', '-qq'], { timeoutMs: 300_000 });
    data = await readFile(path).catch(() => undefined);
  }
  if (!data) throw new LabError(`apt has no ${path}: run apt-get update (mirror ${mirror})`);
  return sha256(data);
}

export interface DebianImage {
  /** Cache directory. */
  dir: string;
  /** The raw disk image (read-only base; never written after the build). */
  path: string;
  /** sha256 of the disk image at build time. */
  sha256: string;
  sizeBytes: number;
  /** The disk image's mtime after the build (ms): a later write moves it. */
  mtimeMs: number;
  key: string;
  suite: string;
  mirror: string;
  kernelPackage: string;
  kernelVersion: string;
  kernelRelease: string;
  layout: DiskLayout;
  /** `name version` of every installed package. */
  packages: string[];
  /** Modules the initramfs loads, in order. */
  initramfsModules: string[];
  buildSeconds: number;
}

function imagesRoot(): string {
  return join(cacheRoot(), 'images');
}

async function cachedImage(dir: string): Promise<DebianImage | undefined> {
  try {
    const img = JSON.parse(await readFile(join(dir, 'image.json'), 'utf8')) as DebianImage;
    const st = await stat(img.path);
    // A base that something wrote to (its mtime moved) is rebuilt, never booted.
    return st.size === img.sizeBytes && st.mtimeMs === img.mtimeMs ? img : undefined;
  } catch {
    return undefined;
  }
}

/** sha256 of a file, streamed. */
export async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Every .ko(.xz|.zst|.gz) under the package's module tree: module name → path. */
async function indexModules(modDir: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const entries = await readdir(join(modDir, 'kernel'), { recursive: true });
  for (const e of entries) {
    const m = /(?:^|\/)([^/]+)\.ko(?:\.(?:xz|zst|gz))?$/.exec(e);
    // Module names use '_' where file names may have '-' (virtio-rng.ko → virtio_rng).
    if (m) index.set(m[1]!.replace(/-/g, '_'), join(modDir, 'kernel', e));
  }
  return index;
}

/**
 * Copies `wanted` and their dependency closure from the package's module tree into
 * `destRoot/lib/modules/<release>/` (uncompressed, same relative paths). Returns name →
 * path relative to destRoot, and the dependency map.
 */
async function copyModules(
  wanted: readonly string[],
  modDir: string,
  release: string,
  destRoot: string,
): Promise<{ paths: Map<string, string>; deps: Map<string, string[]> }> {
  const index = await indexModules(modDir);
  const paths = new Map<string, string>();
  const deps = new Map<string, string[]>();
  const queue = [...wanted];
  while (queue.length) {
    const name = queue.shift()!;
    if (deps.has(name)) continue;
    const src = index.get(name);
    if (!src) throw new LabError(`kernel module ${name} not in the kernel package`);
    const rel = join('lib/modules', release, relative(modDir, src).replace(/\.(xz|zst|gz)$/, ''));
    await mkdir(dirname(join(destRoot, rel)), { recursive: true });
    await copyModule(src, join(destRoot, rel));
    const d = moduleDepends(await readFile(join(destRoot, rel))).map((x) => x.replace(/-/g, '_'));
    deps.set(name, d);
    paths.set(name, rel);
    queue.push(...d);
  }
  return { paths, deps };
}

async function writeTree(
  root: string,
  files: Record<string, string>,
  exec: readonly string[],
): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    const p = join(root, rel);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, text, { mode: exec.includes(rel) ? 0o755 : 0o644 });
    if (exec.includes(rel)) await chmod(p, 0o755);
  }
}

async function forceSymlink(target: string, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await unlink(path).catch(() => undefined);
  await symlink(target, path);
}

/**
 * Unmounts whatever is still mounted below `root` (debootstrap mounts proc and sys in the
 * chroot, and bind-mounts /dev inside containers) and removes it. Nothing is removed while
 * a mount remains: a recursive delete through a bind mount of /dev would hit the host.
 */
async function removeBuildRoot(root: string): Promise<void> {
  await unmountUnder(root);
  await removeQuietly(root);
}

/** Unmounts (lazily, deepest first) every mount at or below `root`; throws if one stays. */
async function unmountUnder(root: string): Promise<void> {
  const under = async (): Promise<string[]> =>
    (await readFile('/proc/self/mounts', 'utf8').catch(() => ''))
      .split('\n')
      .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
      .filter((m) => m === root || m.startsWith(`${root}/`))
      .sort((a, b) => b.length - a.length);
  for (const m of await under()) await runTool('umount', ['-l', m]);
  const left = await under();
  if (left.length)
    throw new LabError(`cannot unmount ${left[0]} (left by debootstrap): remove ${root} by hand`);
}

/** Removes what a lab guest never reads (docs, man pages, locales, apt's caches). */
async function shrink(root: string): Promise<void> {
  for (const d of [
    'usr/share/doc',
    'usr/share/man',
    'usr/share/info',
    'usr/share/locale',
    'var/cache/apt',
    'var/lib/apt/lists',
  ]) {
    const p = join(root, d);
    for (const e of await readdir(p).catch(() => [] as string[])) await removeQuietly(join(p, e));
  }
}

async function duBytes(dir: string): Promise<number> {
  const r = await mustRun('du', ['-s', '--block-size=1', '-x', dir]);
  return Number(r.stdout.toString('utf8').split(/\s/)[0]);
}

async function buildInitrd(modules: Array<{ name: string; data: Buffer }>): Promise<Buffer> {
  const bb = busyboxPath();
  const busybox = await readFile(bb).catch(() => {
    throw new LabError(`${bb} not found: install the Debian package busybox-static`);
  });
  const applets = parseBusyboxList((await mustRun(bb, ['--list-full'])).stdout.toString('utf8'));
  const entries: CpioEntry[] = [];
  for (const d of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'newroot', 'modules'])
    entries.push({ type: 'dir', path: d });
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 });
  for (const a of applets) {
    if (!['bin', 'sbin', 'usr/bin', 'usr/sbin'].includes(a.split('/').slice(0, -1).join('/'))) continue;
    entries.push({ type: 'symlink', path: a, target: '/bin/busybox' });
  }
  const paths: string[] = [];
  modules.forEach((m, i) => {
    const p = `modules/${String(i).padStart(2, '0')}-${m.name}.ko`;
    entries.push({ type: 'file', path: p, data: m.data });
    paths.push(`/${p}`);
  });
  entries.push({ type: 'file', path: 'init', data: realvmInitScript(paths), mode: 0o755 });
  return writeCpio(entries);
}

/** Bump when what bootstrapRoot leaves changes in a way its key does not capture. */
const BOOTSTRAP_VERSION = '1';

/**
 * The debootstrap'ed root (minbase + DEBIAN_PACKAGES, docs and apt caches removed) in
 * `root`: unpacked from its cached tar (images/debootstrap-<suite>-<key>.tar, keyed by the
 * mirror, its InRelease and the package set), else made with debootstrap and cached. The
 * slow step (5-6 min under load) is thus paid once per archive state, not per layout.
 */
async function bootstrapRoot(
  mirror: string,
  releaseSha: string,
  root: string,
  onProgress?: (m: string) => void,
): Promise<void> {
  const key = sha256(
    BOOTSTRAP_VERSION,
    mirror,
    releaseSha,
    DEBIAN_SUITE,
    'minbase',
    DEBIAN_PACKAGES.join(','),
  ).slice(0, 16);
  const tar = join(imagesRoot(), `debootstrap-${DEBIAN_SUITE}-${key}.tar`);
  await mkdir(root, { recursive: true });
  if (existsSync(tar)) {
    onProgress?.(`unpacking the cached debootstrap root ${tar}`);
    await mustRun('tar', ['-xpf', tar, '--numeric-owner', '-C', root], { timeoutMs: 600_000 });
    return;
  }
  onProgress?.(`debootstrap ${DEBIAN_SUITE} (minbase + ${DEBIAN_PACKAGES.join(', ')}) from ${mirror}`);
  const db = await runTool(
    'debootstrap',
    ['--variant=minbase', `--include=${DEBIAN_PACKAGES.join(',')}`, DEBIAN_SUITE, root, mirror],
    { timeoutMs: 45 * 60_000 },
  );
  await unmountUnder(root);
  if (db.code !== 0) {
    const log = await readFile(join(root, 'debootstrap/debootstrap.log'), 'utf8').catch(() => '');
    const why = (db.stderr + log).trim().split('\n').filter(Boolean).slice(-1)[0] ?? `exit code ${db.code}`;
    throw new LabError(`debootstrap failed: ${why}`);
  }
  await shrink(root);
  await removeQuietly(join(root, 'debootstrap'));
  const part = `${tar}.tmp-${process.pid}-${randomTag()}`;
  try {
    await mustRun('tar', ['-cf', part, '--numeric-owner', '--xattrs', '-C', root, '.'], {
      timeoutMs: 600_000,
    });
    await rename(part, tar);
  } finally {
    await removeQuietly(part);
  }
}

/** The image's cache key inputs other than the kernel and the archive state. */
function staticKeyParts(): string {
  return JSON.stringify({
    LAYOUT_VERSION,
    suite: DEBIAN_SUITE,
    packages: DEBIAN_PACKAGES,
    initramfs: INITRAMFS_MODULES,
    rootfs: ROOTFS_MODULES,
    files: rootfsFiles('MACHINE-ID'),
    enabled: ENABLED_UNITS,
    masked: MASKED_UNITS,
    syslinux: syslinuxConfig(),
    init: realvmInitScript(['M']),
  });
}

/**
 * The Debian image for a kernel: cached under images/debian-bookworm-<key>; built (5-10
 * min under load: debootstrap dominates) when absent. Safe when processes race: each builds
 * in its own temp dir and renames it in.
 */
export async function ensureDebianImage(
  kernel: LabKernel,
  onProgress?: (m: string) => void,
): Promise<DebianImage> {
  const mirror = await hostMirror();
  const release = await releaseDigest(mirror, onProgress);
  const busybox = await readFile(busyboxPath()).catch(() => {
    throw new LabError(`${busyboxPath()} not found: install the Debian package busybox-static`);
  });
  const labd = await readFile(await buildGuestProgram('labd', onProgress));
  const key = sha256(staticKeyParts(), mirror, release, kernel.package, kernel.version, busybox, labd).slice(
    0,
    16,
  );
  const finalDir = join(imagesRoot(), `debian-${DEBIAN_SUITE}-${key}`);
  const cached = await cachedImage(finalDir);
  if (cached) return cached;

  const t0 = Date.now();
  await mkdir(imagesRoot(), { recursive: true });
  const tmp = join(imagesRoot(), `.tmp-${key}-${process.pid}-${randomTag()}`);
  await mkdir(tmp);
  try {
    const root = join(tmp, 'root');
    await bootstrapRoot(mirror, release, root, onProgress);
    const pk = await mustRun('chroot', [root, 'dpkg-query', '-W', '-f=${Package} ${Version}\\n']);
    const packages = pk.stdout.toString('utf8').trim().split('\n').filter(Boolean);

    onProgress?.(`copying ${kernel.release} modules into the image`);
    const kdir = join(tmp, 'kernel');
    await mkdir(kdir);
    const deb = await downloadDeb(kernel.package, kdir, onProgress);
    const kroot = join(kdir, 'root');
    await mustRun('dpkg-deb', ['-x', deb, kroot], { timeoutMs: 300_000 });
    const { release: rel, dir: modDir } = await findModulesRoot(kroot);
    if (rel !== kernel.release)
      throw new LabError(`kernel package has modules of ${rel}, not ${kernel.release}`);
    const { paths, deps } = await copyModules(ROOTFS_MODULES, modDir, rel, root);
    for (const f of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) {
      if (existsSync(join(modDir, f)))
        await writeFile(join(root, 'lib/modules', rel, f), await readFile(join(modDir, f)));
    }
    await mustRun('depmod', ['-b', root, rel]);
    const order = moduleLoadOrder(INITRAMFS_MODULES, deps);
    const initrd = await buildInitrd(
      await Promise.all(
        order.map(async (name) => ({ name, data: await readFile(join(root, paths.get(name)!)) })),
      ),
    );

    onProgress?.('configuring systemd units');
    const { files, exec } = rootfsFiles(randomBytes(16).toString('hex'));
    await writeTree(root, files, exec);
    await mkdir(join(root, dirname(CONSOLE_SHELL)), { recursive: true });
    await writeFile(join(root, CONSOLE_SHELL), busybox, { mode: 0o755 });
    await writeFile(join(root, LABD), labd, { mode: 0o755 });
    for (const u of ENABLED_UNITS)
      await forceSymlink(
        `/etc/systemd/system/${u}`,
        join(root, 'etc/systemd/system/multi-user.target.wants', u),
      );
    for (const u of MASKED_UNITS) await forceSymlink('/dev/null', join(root, 'etc/systemd/system', u));
    await removeQuietly(join(root, 'etc/systemd/system/getty.target.wants/getty@tty1.service'));

    onProgress?.('assembling the disk image (sfdisk, mkfs.fat, syslinux, mkfs.ext4 -d)');
    // ext4 metadata and journal need room beside the files; the guest gets some free space.
    const used = await duBytes(root);
    const layout = diskLayout(Math.ceil(used * 1.25) + 128 * MIB);
    const img = join(tmp, 'disk.raw');
    await writeFile(img, '');
    await mustRun('truncate', ['-s', String(layout.totalBytes), img]);
    await mustRun('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', img], {
      input: Buffer.from(sfdiskScript(layout)),
    });
    const bootOffset = layout.bootStart * SECTOR;
    await mustRun('mkfs.fat', [
      '-F',
      '16',
      '-n',
      'VMIBOOT',
      '--offset',
      String(layout.bootStart),
      img,
      String((layout.bootSectors * SECTOR) / 1024),
    ]);
    await mustRun('syslinux', ['--install', '--offset', String(bootOffset), img]);
    await writeFile(join(kdir, 'syslinux.cfg'), syslinuxConfig());
    await writeFile(join(kdir, 'initrd.img'), initrd);
    const fat = `${img}@@${bootOffset}`;
    await mustRun('mcopy', ['-o', '-i', fat, join(kdir, 'syslinux.cfg'), '::syslinux.cfg']);
    await mustRun('mcopy', ['-o', '-i', fat, kernel.vmlinuz, '::vmlinuz']);
    await mustRun('mcopy', ['-o', '-i', fat, join(kdir, 'initrd.img'), '::initrd.img']);
    await mustRun('dd', [`if=${mbrBin()}`, `of=${img}`, 'bs=440', 'count=1', 'conv=notrunc', 'status=none']);
    await mustRun(
      'mkfs.ext4',
      [
        '-q',
        '-F',
        '-L',
        'vmiroot',
        '-d',
        root,
        '-E',
        `offset=${layout.rootStart * SECTOR}`,
        img,
        `${(layout.rootSectors * SECTOR) / 1024}k`,
      ],
      { timeoutMs: 600_000 },
    );
    const size = (await stat(img)).size;
    if (size !== layout.totalBytes)
      throw new LabError(`disk image is ${size} bytes, expected ${layout.totalBytes}`);
    onProgress?.('hashing the disk image');
    const digest = await fileSha256(img);
    await chmod(img, 0o444);
    const { mtimeMs } = await stat(img);
    const image: DebianImage = {
      dir: finalDir,
      path: join(finalDir, 'disk.raw'),
      sha256: digest,
      sizeBytes: size,
      mtimeMs,
      key,
      suite: DEBIAN_SUITE,
      mirror,
      kernelPackage: kernel.package,
      kernelVersion: kernel.version,
      kernelRelease: kernel.release,
      layout,
      packages,
      initramfsModules: order,
      buildSeconds: Math.round((Date.now() - t0) / 100) / 10,
    };
    await removeBuildRoot(root);
    await removeQuietly(kdir);
    await writeFile(join(tmp, 'image.json'), JSON.stringify(image, null, 2) + '\n');
    try {
      await rename(tmp, finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      const other = await cachedImage(finalDir);
      if (other) return other;
      await removeQuietly(finalDir);
      await rename(tmp, finalDir);
    }
    onProgress?.(`Debian image ready in ${image.buildSeconds} s (${(size / MIB).toFixed(0)} MiB)`);
    return image;
  } finally {
    await removeBuildRoot(join(tmp, 'root')).then(
      () => removeQuietly(tmp),
      (e: Error) => onProgress?.(e.message),
    );
  }
}

/** SYSLINUX's MBR boot code (Debian package syslinux-common). */
function mbrBin(): string {
  const p = process.env.VMI_SYSLINUX_MBR ?? '/usr/lib/syslinux/mbr/mbr.bin';
  if (!existsSync(p)) throw new LabError(`${p} not found: install the Debian package syslinux-common`);
  return p;
}
