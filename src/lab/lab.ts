/**
 * The built-in lab guests, under QEMU with every control endpoint in a private run
 * directory (/tmp/vmi-<uid>/guests/<name>/): the busybox flavour (a Debian kernel booted
 * straight from its vmlinux with a busybox initramfs running a known workload) and the
 * debian flavour (Debian 12 with systemd on a partitioned virtio disk, booted by SeaBIOS
 * and SYSLINUX through a per-guest qcow2 overlay on a cached read-only base; a virtio NIC
 * with no backend off the host; src/lab/debian-image.ts).
 */
import { access, mkdir, readdir, readFile, rm, statfs, unlink } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import type { GuestEndpoints } from '../qemu/guest-endpoints.js';
import {
  chooseAccel,
  createRamFile,
  findQemu,
  isQemuAlive,
  launchQemu,
  type LaunchSpec,
  numaNodeSizes,
  runDirPaths,
  stopQemu,
} from '../qemu/launcher.js';
import { QmpClient } from '../qemu/qmp.js';
import { queryRamMap, type RamRange } from '../qemu/ram-map.js';
import { GuestConsole } from './console.js';
import { ensurePrivateDir, randomTag, runRoot } from '../util/run-dir.js';
import { guestsRoot, LabError, sleep } from './host.js';
import { buildInitramfs } from './initramfs.js';
import { ensureDebianImage } from './debian-image.js';
import { createOverlay } from '../qemu/disk-image.js';
import { randomBytes } from 'node:crypto';
import { ensureDeviceModules, ensureKernel } from './kernel.js';
import { labDeviceArgs, prepareLabDisk } from './lab-devices.js';
import { buildTestkit, TESTKIT_MODULE } from './testkit.js';
import { LAB_WORKLOAD } from './workload.js';
import { processAlive } from '../util/process-alive.js';
import { readStateJson, StateFileError, writeStateFile } from '../util/state-file.js';
import { readFileSync } from 'node:fs';

export { LabError } from './host.js';

export interface LabGuest extends GuestEndpoints {
  pid: number;
  kernelPackage: string;
  kernelRelease: string;
  serialSocket: string;
  consoleLog: string;
  startedAt: string;
  cpus: number;
  cpuModel: string;
  memMiB: number;
  /** QEMU machine type as given (`q35` or `pc`). */
  machine?: LabMachine;
  /** NUMA nodes (1: no NUMA layout). */
  numaNodes?: number;
  /** Data disk image attached as a virtio-blk device (`--disk`, busybox flavour). */
  dataDisk?: string;
  /** A virtio-net NIC on a local hub port (`--nic`, busybox flavour). */
  dataNic?: boolean;
  /** Which lab guest this is (absent in guest.json files written before flavours: busybox). */
  flavour?: LabFlavour;
  /**
   * The debian flavour's disk: a qcow2 overlay in the run dir (all guest writes) on the
   * cached base image (opened read-only; its sha256 at build time given).
   */
  disk?: { overlay: string; base: string; baseSha256: string; device: string };
  /** The debian flavour's NIC: virtio-net-pci on a hub with no other port. */
  nic?: { mac: string; model: string };
}

/**
 * Lab guest flavours: `busybox` (default: the kernel's vmlinux booted with -kernel and a
 * busybox initramfs) and `debian` (Debian 12 with systemd on a partitioned virtio disk,
 * booted by SeaBIOS and SYSLINUX, with a virtio NIC; src/lab/debian-image.ts).
 */
export type LabFlavour = 'busybox' | 'debian';
export const LAB_FLAVOURS: readonly LabFlavour[] = ['busybox', 'debian'];

/** Machine types the lab boots: q35 (default) and i440fx (`pc`). */
export type LabMachine = 'q35' | 'pc';
export const LAB_MACHINES: readonly LabMachine[] = ['q35', 'pc'];
/** Most NUMA nodes a lab guest may have. */
export const MAX_NUMA_NODES = 8;

export interface LabUpOptions {
  /** Guest name, default 'lab'. */
  name?: string;
  /** Which guest to boot, default busybox. */
  flavour?: LabFlavour;
  /** Debian kernel image package or alias (`6.12-rt`); default: the newest linux-image-6.1.0-N-amd64. */
  kernel?: string;
  cpus?: number;
  cpuModel?: string;
  memMiB?: number;
  /** Machine type, default q35. */
  machine?: LabMachine;
  /** NUMA nodes, default 1: with 2 or more, one memory backend (and RAM file) per node. */
  numaNodes?: number;
  /** Extra kernel command-line arguments. */
  appendCmdline?: string;
  /** Cap of the console log in bytes (default CONSOLE_LOG_CAP, 8 MiB; rotated once to .1). */
  consoleLogCap?: number;
  /**
   * What QEMU boots: the uncompressed vmlinux through its PVH entry (default, 2-4 s under
   * TCG, always 4-level paging) or the compressed bzImage (12-15 s; its decompressor is
   * what switches to 5-level paging when the CPU model has la57).
   */
  bootImage?: 'vmlinux' | 'bzImage';
  /**
   * Put the test rootkit (src/lab/guest-modules/vmi_testkit.c, built against the kernel's
   * Debian headers) in the initramfs at /lib/modules/<release>/extra/vmi_testkit.ko. It is
   * NOT loaded: a test loads it from the console with insmod and its parameters.
   */
  rootkit?: boolean;
  /**
   * A disk image (raw or qcow2, probed by qemu-img) attached as a virtio-blk device with
   * qdev id `disk0`; a path that does not exist yet gets a small ext4 image
   * (createLabDiskImage). The guest loads virtio/ext4 modules and can mount /dev/vda.
   */
  disk?: string;
  /** A virtio-net-pci NIC on a hub port with nothing else on the hub: no frame leaves the host. */
  nic?: boolean;
  onProgress?: (message: string) => void;
}

export const DEFAULT_LAB_NAME = 'lab';
export const BASE_CMDLINE = 'console=ttyS0 loglevel=4 panic=-1 quiet';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const GUEST_JSON = 'guest.json';
const STARTING = 'starting';
const RAM_MARKER = 'ram-file';
/** Written once the guest answered on its console: later `lab up` calls need not ask it. */
const READY = 'ready';

function bootTimeoutMs(): number {
  const v = Number(process.env.VMI_BOOT_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 240_000;
}

export function validateGuestName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw new LabError(
      `invalid guest name ${JSON.stringify(name)}: use 1-32 letters, digits, '.', '_' or '-'`,
    );
  }
  return name;
}

function guestDir(name: string): string {
  return join(guestsRoot(), name);
}

/** The fields of guest.json that vmi acts on (pid, sockets, RAM file) have the right types. */
function isLabGuest(v: unknown): v is LabGuest {
  const g = v as Partial<LabGuest> | null;
  return (
    typeof g === 'object' &&
    g !== null &&
    typeof g.name === 'string' &&
    Number.isSafeInteger(g.pid) &&
    (g.pid as number) > 1 &&
    typeof g.runDir === 'string' &&
    typeof g.qmpSocket === 'string' &&
    typeof g.serialSocket === 'string'
  );
}

/** guest.json: undefined when absent, a LabError naming the file when it cannot be parsed. */
async function readGuestJson(dir: string): Promise<LabGuest | undefined> {
  try {
    return await readStateJson(join(dir, GUEST_JSON), isLabGuest);
  } catch (e) {
    if (!(e instanceof StateFileError)) throw e;
    throw new CorruptGuestError(e.path, e.reason, dir);
  }
}

/**
 * A guest whose guest.json exists but cannot be parsed. Nothing is stopped or removed on
 * the strength of such a file: its QEMU (if any) keeps running until the user decides.
 */
export class CorruptGuestError extends LabError {
  constructor(
    readonly path: string,
    readonly reason: string,
    readonly dir: string,
  ) {
    const qemu = readPidFileSync(runDirPaths(dir).pidFile);
    super(
      `${path} cannot be read (${reason}); the guest was left as it is` +
        (qemu && isQemuAlive(qemu, dir) ? ` (its QEMU, pid ${qemu}, is still running)` : '') +
        `: repair or remove that file, or stop the guest yourself and remove ${dir}`,
    );
  }
}

function readPidFileSync(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isSafeInteger(n) && n > 1 ? n : undefined;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Removes a guest's run dir and its RAM file, stopping a QEMU still recorded there. */
async function cleanupGuestDir(dir: string): Promise<void> {
  // Throws (and nothing is stopped) when guest.json is there but cannot be parsed.
  const guest = await readGuestJson(dir);
  const qemuPid =
    guest?.pid ?? Number((await readFile(runDirPaths(dir).pidFile, 'utf8').catch(() => '')).trim());
  if (qemuPid && isQemuAlive(qemuPid, dir)) await stopQemu(qemuPid, dir);
  const marker = (await readFile(join(dir, RAM_MARKER), 'utf8').catch(() => '')).split('\n');
  const rams = new Set(
    [guest?.ramFile, ...Object.values(guest?.ramFiles ?? {}), ...marker].map((r) => r?.trim()),
  );
  for (const ram of rams)
    if (ram && ram.startsWith('/dev/shm/vmi-')) await unlink(ram).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

type DirState =
  { kind: 'absent' } | { kind: 'running'; guest: LabGuest } | { kind: 'starting' } | { kind: 'stale' };

async function dirState(name: string): Promise<DirState> {
  const dir = guestDir(name);
  const entries = await readdir(dir).catch(() => undefined);
  if (!entries) return { kind: 'absent' };
  const guest = await readGuestJson(dir);
  if (guest) return isQemuAlive(guest.pid, dir) ? { kind: 'running', guest } : { kind: 'stale' };
  const starter = Number((await readFile(join(dir, STARTING), 'utf8').catch(() => '')).trim());
  if (starter && processAlive(starter)) return { kind: 'starting' };
  return { kind: 'stale' };
}

/** The running guest of that name; stale leftovers (QEMU gone) are cleaned up. */
export async function findLabGuest(name: string): Promise<LabGuest | undefined> {
  validateGuestName(name);
  const st = await dirState(name);
  if (st.kind === 'running') return st.guest;
  if (st.kind === 'stale') await cleanupGuestDir(guestDir(name));
  return undefined;
}

/**
 * Every running lab guest of this user, by name. A guest whose guest.json cannot be
 * parsed is reported to `onProblem` and skipped (left untouched); without `onProblem`
 * it is an error.
 */
export async function listLabGuests(onProblem?: (e: CorruptGuestError) => void): Promise<LabGuest[]> {
  const names = await readdir(guestsRoot()).catch(() => [] as string[]);
  const guests: LabGuest[] = [];
  for (const name of names.sort()) {
    if (!NAME_RE.test(name)) continue;
    let g: LabGuest | undefined;
    try {
      g = await findLabGuest(name);
    } catch (e) {
      if (!(e instanceof CorruptGuestError) || !onProblem) throw e;
      onProblem(e);
    }
    if (g) guests.push(g);
  }
  return guests;
}

/** Stops a guest and removes its run dir and RAM file; false when none was running. */
export async function labDown(name: string = DEFAULT_LAB_NAME): Promise<boolean> {
  validateGuestName(name);
  const st = await dirState(name);
  if (st.kind === 'absent') return false;
  await cleanupGuestDir(guestDir(name));
  return st.kind === 'running' || st.kind === 'starting';
}

function tail(text: string, lines: number): string {
  return text
    .split('\n')
    .map((l) => l.replace(/\r/g, '').trim())
    .filter(Boolean)
    .slice(-lines)
    .join(' | ');
}

/** Waits until the guest's console shell answers and the workload reported ready. */
async function waitReady(guest: LabGuest, onProgress?: (m: string) => void): Promise<void> {
  const deadline = Date.now() + bootTimeoutMs();
  // A systemd guest under a loaded TCG host can take seconds per command; the busybox one
  // answers in milliseconds once its shell runs (a lost line is retried sooner).
  const tryMs = guest.flavour === 'debian' ? 15_000 : 3000;
  let console: GuestConsole | undefined;
  let lastError = 'no answer';
  try {
    while (Date.now() < deadline) {
      if (!isQemuAlive(guest.pid, guest.runDir)) {
        const log = await readFile(guest.consoleLog, 'utf8').catch(() => '');
        throw new LabError(
          `guest ${guest.name} stopped while booting: ${tail(log, 3) || 'no console output'}`,
        );
      }
      try {
        console ??= await GuestConsole.connect(guest.serialSocket, { timeoutMs: 3000 });
        const r = await console.run(`cat ${LAB_WORKLOAD.readyFile}`, tryMs);
        if (r.status === 0) {
          onProgress?.(`workload ${r.output.trim()}`);
          return;
        }
        lastError = 'workload not ready yet';
        await sleep(300);
      } catch (e) {
        lastError = (e as Error).message;
        if (console && /closed|error/i.test(lastError)) {
          console.close();
          console = undefined;
        }
        await sleep(300);
      }
    }
    const log = await readFile(guest.consoleLog, 'utf8').catch(() => '');
    throw new LabError(
      `guest ${guest.name} did not become ready within ${bootTimeoutMs() / 1000} s (${lastError}); console: ${tail(log, 3)}`,
    );
  } finally {
    console?.close();
  }
}

/**
 * The largest lab guest, MiB: the host's RAM and the size of /dev/shm (where the RAM
 * files live), whichever is smaller. The files are sparse, so a guest costs what it
 * touches; this bound only stops a guest that could fill either.
 */
async function maxGuestMiB(): Promise<number> {
  const shm = await statfs('/dev/shm').catch(() => undefined);
  const shmMiB = shm ? Math.floor((shm.blocks * shm.bsize) / 1048576) : Infinity;
  return Math.max(64, Math.min(Math.floor(totalmem() / 1048576), shmMiB));
}

/**
 * Where QEMU put the guest's RAM, recorded in guest.json so that attaches need not ask:
 * ranges from the flat view, and each backend's file (only the files this lab created).
 */
async function labRamMap(
  qmpSocket: string,
  ramFiles: readonly string[],
): Promise<{ ranges: RamRange[]; files: Record<string, string> }> {
  const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 10_000 });
  try {
    const map = await queryRamMap(qmp);
    const files = Object.fromEntries(Object.entries(map.files).filter(([, f]) => ramFiles.includes(f)));
    const missing = map.ranges.find((r) => !files[r.block]);
    if (missing)
      throw new LabError(`QEMU maps RAM block ${missing.block}, which is none of the lab's RAM files`);
    return { ranges: map.ranges, files };
  } finally {
    qmp.close();
  }
}

function checkInt(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max)
    throw new LabError(`${what} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

/**
 * Boots a lab guest (or returns the one already running under that name) and resolves
 * once its console shell answers and the workload is up.
 */
export async function labUp(opts: LabUpOptions = {}): Promise<LabGuest> {
  const name = validateGuestName(opts.name ?? DEFAULT_LAB_NAME);
  const progress = opts.onProgress;
  const cpus = checkInt('cpus', opts.cpus ?? 1, 1, 16);
  const memMiB = checkInt('memory (MiB)', opts.memMiB ?? 256, 64, await maxGuestMiB());
  const machine = opts.machine ?? 'q35';
  if (!LAB_MACHINES.includes(machine))
    throw new LabError(`machine must be one of ${LAB_MACHINES.join(', ')}, got ${JSON.stringify(machine)}`);
  const numaNodes = checkInt('NUMA nodes', opts.numaNodes ?? 1, 1, MAX_NUMA_NODES);
  if (memMiB / numaNodes < 64)
    throw new LabError(`each of the ${numaNodes} NUMA nodes needs at least 64 MiB`);
  const flavour = opts.flavour ?? 'busybox';
  if (!LAB_FLAVOURS.includes(flavour))
    throw new LabError(`flavour must be one of ${LAB_FLAVOURS.join(', ')}, got ${JSON.stringify(flavour)}`);
  if (flavour === 'debian' && (opts.bootImage || opts.appendCmdline))
    throw new LabError('the debian flavour boots through its bootloader: no --boot or --append');
  const cpuModel = opts.cpuModel ?? 'max';
  if (!/^[A-Za-z0-9_.+=,-]+$/.test(cpuModel))
    throw new LabError(`invalid CPU model ${JSON.stringify(cpuModel)}`);
  await findQemu();

  await ensurePrivateDir(runRoot());
  await ensurePrivateDir(guestsRoot());
  const dir = guestDir(name);

  // Claim the name: mkdir is atomic. Someone else's live or booting guest is waited for.
  const claimDeadline = Date.now() + bootTimeoutMs();
  for (;;) {
    try {
      await mkdir(dir, { mode: 0o700 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await dirState(name);
    if (st.kind === 'running') {
      if (await exists(join(dir, READY))) {
        progress?.(`guest ${name} already running (pid ${st.guest.pid})`);
        return st.guest;
      }
      // Booted by a process that is still waiting for it, or that died while waiting.
      const starter = Number((await readFile(join(dir, STARTING), 'utf8').catch(() => '')).trim());
      if (starter && processAlive(starter)) {
        if (Date.now() > claimDeadline)
          throw new LabError(`guest ${name} is being started by another process`);
        await sleep(500);
        continue;
      }
      await waitReady(st.guest, progress);
      await writeStateFile(join(dir, READY), `${new Date().toISOString()}\n`);
      return st.guest;
    }
    if (st.kind === 'stale') await cleanupGuestDir(dir);
    else if (st.kind === 'starting') {
      if (Date.now() > claimDeadline) throw new LabError(`guest ${name} is being started by another process`);
      await sleep(500);
    }
  }

  let ramFiles: string[] = [];
  try {
    await writeStateFile(join(dir, STARTING), `${process.pid}\n`);
    const t0 = Date.now();
    const kernel = await ensureKernel(opts.kernel, progress);
    let boot: Pick<LaunchSpec, 'kernel' | 'initrd' | 'append' | 'drives' | 'nics'>;
    let disk: LabGuest['disk'];
    let nic: LabGuest['nic'];
    let dataDisk: Awaited<ReturnType<typeof prepareLabDisk>> | undefined;
    if (flavour === 'debian') {
      const image = await ensureDebianImage(kernel, progress);
      const overlay = join(dir, 'disk.qcow2');
      await createOverlay(overlay, image.path, 'raw');
      disk = { overlay, base: image.path, baseSha256: image.sha256, device: 'virtio-blk-pci' };
      nic = {
        mac: `52:54:00:${randomBytes(3).toString('hex').match(/../g)!.join(':')}`,
        model: 'virtio-net-pci',
      };
      boot = {
        drives: [{ id: 'disk0', file: overlay, format: 'qcow2', bootIndex: 0 }],
        nics: [{ id: 'net0', mac: nic.mac }],
      };
      progress?.(
        `kernel ${kernel.release} and Debian image ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    } else {
      const unloaded: Record<string, string> = opts.rootkit
        ? { [TESTKIT_MODULE]: await buildTestkit(kernel, progress) }
        : {};
      const withDevices = opts.disk !== undefined || !!opts.nic;
      const devModules = withDevices ? await ensureDeviceModules(kernel, progress) : [];
      const initrd = await buildInitramfs(kernel, progress, devModules, unloaded);
      dataDisk = opts.disk !== undefined ? await prepareLabDisk(opts.disk, progress) : undefined;
      boot = {
        kernel: opts.bootImage === 'bzImage' ? kernel.vmlinuz : kernel.vmlinux,
        initrd: initrd.path,
        append: [BASE_CMDLINE, opts.appendCmdline?.trim()].filter(Boolean).join(' '),
      };
      progress?.(
        `kernel ${kernel.release} and initramfs ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    }

    // Sparse files (ftruncate): the host pays for the pages the guest touches, not memMiB.
    const tag = randomTag();
    ramFiles =
      numaNodes === 1
        ? [`/dev/shm/vmi-${name}-${tag}.ram`]
        : Array.from({ length: numaNodes }, (_, i) => `/dev/shm/vmi-${name}-${tag}-node${i}.ram`);
    await writeStateFile(join(dir, RAM_MARKER), ramFiles.join('\n') + '\n');
    const nodeMiB = numaNodeSizes(memMiB, numaNodes);
    for (const [i, f] of ramFiles.entries()) await createRamFile(f, nodeMiB[i]);
    const ramFile = ramFiles[0];
    const accel = chooseAccel();
    progress?.(
      `starting qemu (${flavour}, ${accel}, ${machine}, ${cpus} vCPU, ${memMiB} MiB${numaNodes > 1 ? ` in ${numaNodes} NUMA nodes` : ''}, -cpu ${cpuModel})`,
    );
    const t1 = Date.now();
    const { pid } = await launchQemu({
      name,
      runDir: dir,
      ...boot,
      cpus,
      cpuModel,
      memMiB,
      ramFile,
      ...(numaNodes > 1 ? { numaRamFiles: ramFiles } : {}),
      machine,
      accel,
      consoleLogCap: opts.consoleLogCap,
      extraArgs: labDeviceArgs({ ...(dataDisk ? { disk: dataDisk } : {}), nic: !!opts.nic }),
    });
    const paths = runDirPaths(dir);
    const ramMap = await labRamMap(paths.qmpSocket, ramFiles);
    const guest: LabGuest = {
      name,
      qmpSocket: paths.qmpSocket,
      gdbSocket: paths.gdbSocket,
      ramFile,
      ramFiles: ramMap.files,
      ram: ramMap.ranges,
      ramSize: memMiB * 1024 * 1024,
      runDir: dir,
      pid,
      kernelPackage: kernel.package,
      kernelRelease: kernel.release,
      serialSocket: paths.serialSocket,
      wake: { socket: paths.wakeSocket, device: '/dev/ttyS1' },
      consoleLog: paths.consoleLog,
      startedAt: new Date().toISOString(),
      cpus,
      cpuModel,
      memMiB,
      machine,
      numaNodes,
      flavour,
      ...(disk ? { disk } : {}),
      ...(nic ? { nic } : {}),
      ...(dataDisk ? { dataDisk: dataDisk.path } : {}),
      ...(opts.nic ? { dataNic: true } : {}),
    };
    await writeStateFile(join(dir, GUEST_JSON), JSON.stringify(guest, null, 2) + '\n');
    await waitReady(guest, progress);
    await writeStateFile(join(dir, READY), `${new Date().toISOString()}\n`);
    await rm(join(dir, STARTING), { force: true });
    progress?.(`guest ${name} booted in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    return guest;
  } catch (e) {
    await cleanupGuestDir(dir).catch(() => undefined);
    for (const f of ramFiles) await unlink(f).catch(() => undefined);
    throw e;
  }
}
