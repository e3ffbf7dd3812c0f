/**
 * Starting and stopping QEMU for a lab guest: the command line (q35, shared RAM file,
 * PVH kernel boot or a firmware boot from a virtio disk, QMP/gdbstub/serial on unix
 * sockets in a private run dir, no NIC or only local-only ones) and a
 * daemonized process whose pid we track. Nothing here knows what runs inside the guest.
 */
import { spawn, spawnSync } from 'node:child_process';
import { constants, existsSync, readFileSync } from 'node:fs';
import { access, open, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QmpClient } from './qmp.js';

export const QEMU_NOT_FOUND = 'qemu-system-x86_64 not found: install the Debian package qemu-system-x86';

export class QemuError extends Error {
  override name = 'QemuError';
}

/** Finds the QEMU binary ($VMI_QEMU, else qemu-system-x86_64 on PATH) or throws QEMU_NOT_FOUND. */
export async function findQemu(): Promise<string> {
  const explicit = process.env.VMI_QEMU;
  const candidates = explicit
    ? [explicit]
    : (process.env.PATH ?? '/usr/bin:/bin')
        .split(delimiter)
        .filter(Boolean)
        .map((d) => join(d, 'qemu-system-x86_64'));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  throw new QemuError(QEMU_NOT_FOUND);
}

export type Accel = 'kvm' | 'tcg';

/**
 * A real, working KVM: /dev/kvm usable and backed by kvm_intel/kvm_amd, not kvm_pvm
 * (PVM cannot boot a stock Debian kernel).
 */
export function realKvmAvailable(): boolean {
  if (!existsSync('/dev/kvm') || existsSync('/sys/module/kvm_pvm')) return false;
  if (!existsSync('/sys/module/kvm_intel') && !existsSync('/sys/module/kvm_amd')) return false;
  try {
    return (readFileSync('/proc/modules', 'utf8').match(/^kvm_(intel|amd) /m) ?? []).length > 0;
  } catch {
    return false;
  }
}

/**
 * The accelerator: $VMI_ACCEL=kvm|tcg forces one, $VMI_ACCEL=auto uses a real KVM when
 * there is one; the default is TCG, where every measured fact of this project holds.
 */
export function chooseAccel(env: string | undefined = process.env.VMI_ACCEL): Accel {
  if (env === 'kvm') return 'kvm';
  if (env === 'auto') return realKvmAvailable() ? 'kvm' : 'tcg';
  return 'tcg';
}

/**
 * A virtio-blk disk: `file` opened with `format`; `readOnly` for a base that must never
 * change (a qcow2 overlay's backing file is always opened read-only by QEMU anyway).
 */
export interface LaunchDrive {
  /** QEMU id of the drive (the device is `<id>-dev`). */
  id: string;
  file: string;
  format: 'raw' | 'qcow2';
  readOnly?: boolean;
  /** Firmware boot order (0 first); leave out for a data disk. */
  bootIndex?: number;
}

/**
 * A virtio-net-pci card on a QEMU hub port with nothing else on the hub: the guest sees a
 * link, and no frame ever leaves QEMU (no tap, no user networking).
 */
export interface LaunchNic {
  id: string;
  /** Locally administered unicast MAC, e.g. 52:54:00:12:34:56. */
  mac: string;
}

export interface LaunchSpec {
  name: string;
  runDir: string;
  /** Kernel for a direct (-kernel) boot; leave out to boot through the firmware from a disk. */
  kernel?: string;
  initrd?: string;
  append?: string;
  /** virtio-blk disks, in PCI order. */
  drives?: LaunchDrive[];
  /** virtio-net cards with a local-only backend. */
  nics?: LaunchNic[];
  cpus: number;
  cpuModel: string;
  memMiB: number;
  /**
   * Shared RAM file (created beforehand, 0600) of the one RAM block `m`. Which guest-physical
   * ranges map to which file offsets is QEMU's business (see ram-map.ts): only on q35 below
   * 2.75 GiB (pc: 3.5 GiB) is file offset = guest-physical address.
   */
  ramFile: string;
  /**
   * NUMA: one shared RAM file per node (blocks `m0`, `m1`, ...; each node gets memMiB/n,
   * the last one the remainder; vCPUs are dealt out round-robin). Replaces `ramFile`'s
   * single backend when it has two or more entries.
   */
  numaRamFiles?: string[];
  accel?: Accel;
  /** Machine type (default `q35`); a capture replay names the exact one, e.g. pc-q35-7.2. */
  machine?: string;
  /** `-incoming` value (e.g. `defer`): start waiting for a migration stream instead of booting. */
  incoming?: string;
  /** `-sandbox` value (seccomp), e.g. {@link REPLAY_SANDBOX}; left out when QEMU lacks -sandbox. */
  sandbox?: string;
  /**
   * `-runas UID:GID`: QEMU drops root just before the VM starts, after it has opened
   * everything on its command line (kernel, initrd, RAM file, sockets, pid file, console
   * FIFO). Anything it needs later must come as an open descriptor ({@link passFds}).
   */
  runAs?: { uid: number; gid: number };
  /**
   * Open descriptors QEMU inherits as fd 3, 4, … (e.g. a migration stream for
   * `migrate-incoming fd:3`), so that a QEMU that dropped root needs no file access.
   */
  passFds?: number[];
  /**
   * Cap of console.log in bytes (rotated once to console.log.1): QEMU logs into a FIFO
   * that console-log-writer copies with the cap. Default {@link CONSOLE_LOG_CAP}.
   */
  consoleLogCap?: number;
  /**
   * Device and firmware arguments (-blockdev, -netdev, -device, -bios ...), already
   * validated by the caller (lab-devices.ts, capture/device-policy.ts); appended as given.
   */
  extraArgs?: readonly string[];
}

/** What the guest's serial console may fill on the host: console.log plus one rotation. */
export const CONSOLE_LOG_CAP = 8 << 20;

/**
 * The seccomp sandbox of replay clones: obsolete syscalls and resource control
 * (setpriority, sched_setaffinity, ...) denied. Measured on QEMU 7.2: `elevateprivileges=deny`
 * and `spawn=deny` make `-daemonize` fail (exit 1, or SIGSYS at the fork), and the
 * migration stream comes in through `exec:cat`, so those two stay allowed.
 */
export const REPLAY_SANDBOX = 'on,obsolete=deny,resourcecontrol=deny';

const sandboxSupport = new Map<string, boolean>();

/** True when this QEMU binary has `-sandbox` (built with seccomp); asked once per binary. */
export function qemuHasSandbox(qemu: string): boolean {
  let v = sandboxSupport.get(qemu);
  if (v === undefined) {
    const r = spawnSync(qemu, ['-help'], { encoding: 'utf8', timeout: 10_000 });
    v = r.status === 0 && /^-sandbox on/m.test(r.stdout ?? '');
    sandboxSupport.set(qemu, v);
  }
  return v;
}

const deviceTypeCache = new Map<string, Set<string>>();

/** Names in `qemu -device help` output (`name "virtio-blk-pci", bus PCI, ...`), pure. */
export function parseDeviceHelp(text: string): Set<string> {
  return new Set([...text.matchAll(/^name "([^"]+)"/gm)].map((m) => m[1]));
}

/** The device types this QEMU binary has (`-device help`), asked once per binary. */
export function qemuDeviceTypes(qemu: string): Set<string> {
  let v = deviceTypeCache.get(qemu);
  if (!v) {
    const r = spawnSync(qemu, ['-device', 'help'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0)
      throw new QemuError(`${qemu} -device help failed: ${(r.stderr ?? '').trim().split('\n')[0]}`);
    v = parseDeviceHelp(`${r.stdout ?? ''}\n${r.stderr ?? ''}`);
    deviceTypeCache.set(qemu, v);
  }
  return v;
}

const machineTypeCache = new Map<string, Set<string>>();

/**
 * Machine type names in `qemu -machine help` output, pure: the first word of each line
 * after "Supported machines are:" (`pc-q35-7.2   Standard PC (Q35 + ICH9, 2009)`), aliases
 * (`q35 ... (alias of pc-q35-7.2)`) included.
 */
export function parseMachineHelp(text: string): Set<string> {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => /^Supported machines are:/.test(l));
  return new Set(
    lines
      .slice(start + 1)
      .map((l) => /^([A-Za-z0-9][A-Za-z0-9._-]*)\s/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined),
  );
}

/** The machine types this QEMU binary has (`-machine help`), asked once per binary. */
export function qemuMachineTypes(qemu: string): Set<string> {
  let v = machineTypeCache.get(qemu);
  if (!v) {
    const r = spawnSync(qemu, ['-machine', 'help'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0)
      throw new QemuError(`${qemu} -machine help failed: ${(r.stderr ?? '').trim().split('\n')[0]}`);
    v = parseMachineHelp(r.stdout ?? '');
    machineTypeCache.set(qemu, v);
  }
  return v;
}

const versionCache = new Map<string, string>();

/** `X.Y.Z` of this QEMU binary (`--version`), asked once per binary; 'unknown' if unreadable. */
export function qemuVersion(qemu: string): string {
  let v = versionCache.get(qemu);
  if (!v) {
    const r = spawnSync(qemu, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    v = /version (\d+\.\d+\.\d+)/.exec(r.stdout ?? '')?.[1] ?? 'unknown';
    versionCache.set(qemu, v);
  }
  return v;
}

/** Paths of the control endpoints inside a run dir. */
export function runDirPaths(runDir: string): {
  qmpSocket: string;
  gdbSocket: string;
  serialSocket: string;
  wakeSocket: string;
  consoleLog: string;
  /** The FIFO QEMU logs the console into (console-log-writer caps it into consoleLog). */
  consoleFifo: string;
  pidFile: string;
  qemuLog: string;
} {
  return {
    qmpSocket: join(runDir, 'qmp.sock'),
    gdbSocket: join(runDir, 'gdb.sock'),
    serialSocket: join(runDir, 'serial.sock'),
    wakeSocket: join(runDir, 'wake.sock'),
    consoleLog: join(runDir, 'console.log'),
    consoleFifo: join(runDir, 'console.fifo'),
    pidFile: join(runDir, 'qemu.pid'),
    qemuLog: join(runDir, 'qemu.log'),
  };
}

/** Unix socket paths must fit sockaddr_un.sun_path (108 bytes with the NUL). */
export const MAX_UNIX_PATH = 107;

/** The QEMU argv (without the binary), pure. */
export function qemuArgs(spec: LaunchSpec): string[] {
  const p = runDirPaths(spec.runDir);
  for (const s of [p.qmpSocket, p.gdbSocket, p.serialSocket, p.wakeSocket]) {
    if (Buffer.byteLength(s) > MAX_UNIX_PATH) throw new QemuError(`unix socket path too long: ${s}`);
  }
  if (spec.machine !== undefined && !/^[A-Za-z0-9_.-]+$/.test(spec.machine))
    throw new QemuError(`invalid machine type ${JSON.stringify(spec.machine)}`);
  const drives = spec.drives ?? [];
  const nics = spec.nics ?? [];
  for (const v of [
    spec.ramFile,
    ...(spec.numaRamFiles ?? []),
    spec.runDir,
    spec.kernel ?? '',
    spec.initrd ?? '',
    ...drives.map((d) => d.file),
  ]) {
    // QEMU's option parser treats ',' as a separator (',,' escapes it); keep paths plain.
    if (v.includes(',')) throw new QemuError(`path must not contain ',': ${v}`);
  }
  for (const id of [...drives.map((d) => d.id), ...nics.map((n) => n.id)])
    if (!/^[A-Za-z][A-Za-z0-9_-]{0,30}$/.test(id))
      throw new QemuError(`invalid device id ${JSON.stringify(id)}`);
  for (const n of nics)
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(n.mac) || (parseInt(n.mac.slice(0, 2), 16) & 3) !== 2)
      throw new QemuError(`NIC MAC must be a locally administered unicast address, got ${n.mac}`);
  // A replay's devices come as extraArgs (its device model); a lab guest's boot disk as a drive.
  if (!spec.kernel && !drives.some((d) => d.bootIndex !== undefined) && (spec.extraArgs ?? []).length === 0)
    throw new QemuError('nothing to boot: give a kernel or a drive with a boot index');
  const kernelArgs = spec.kernel
    ? [
        '-kernel',
        spec.kernel,
        ...(spec.initrd ? ['-initrd', spec.initrd] : []),
        ...(spec.append !== undefined ? ['-append', spec.append] : []),
      ]
    : [];
  const driveArgs = drives.flatMap((d) => [
    '-drive',
    `if=none,id=${d.id},file=${d.file},format=${d.format}${d.readOnly ? ',read-only=on' : ''}`,
    '-device',
    `virtio-blk-pci,drive=${d.id},id=${d.id}-dev${d.bootIndex !== undefined ? `,bootindex=${d.bootIndex}` : ''}`,
  ]);
  // Each NIC on its own hub with no other port: frames go nowhere.
  const nicArgs = nics.flatMap((n, i) => [
    '-netdev',
    `hubport,id=${n.id},hubid=${i}`,
    '-device',
    `virtio-net-pci,netdev=${n.id},id=${n.id}-dev,mac=${n.mac}`,
  ]);
  const accel = spec.accel ?? 'tcg';
  return [
    '-name',
    `vmi-${spec.name}`,
    ...memoryArgs(spec),
    '-accel',
    accel,
    '-cpu',
    spec.cpuModel,
    '-smp',
    String(spec.cpus),
    ...kernelArgs,
    ...driveArgs,
    ...nicArgs,
    // -nographic cannot be combined with -daemonize; -display none is its equivalent here.
    '-display',
    'none',
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-nic',
    'none',
    '-qmp',
    `unix:${p.qmpSocket},server=on,wait=off`,
    '-gdb',
    `unix:${p.gdbSocket},server=on,wait=off`,
    '-chardev',
    `socket,id=ser0,path=${p.serialSocket},server=on,wait=off,logfile=${p.consoleFifo}`,
    '-serial',
    'chardev:ser0',
    // ttyS1: the shadow's wake-up line (see GuestEndpoints.wake).
    '-chardev',
    `socket,id=wake,path=${p.wakeSocket},server=on,wait=off`,
    '-serial',
    'chardev:wake',
    ...(spec.extraArgs ?? []),
    '-pidfile',
    p.pidFile,
    ...(spec.incoming ? ['-incoming', spec.incoming] : []),
    ...(spec.sandbox ? ['-sandbox', spec.sandbox] : []),
    ...(spec.runAs ? ['-runas', `${spec.runAs.uid}:${spec.runAs.gid}`] : []),
    '-daemonize',
  ];
}

/** MiB of each NUMA node: memMiB split evenly, the remainder on the last node. */
export function numaNodeSizes(memMiB: number, nodes: number): number[] {
  const each = Math.floor(memMiB / nodes);
  return Array.from({ length: nodes }, (_, i) => (i === nodes - 1 ? memMiB - each * (nodes - 1) : each));
}

/**
 * -machine, -m, the memory backend(s) and NUMA nodes. One node: `-machine TYPE,memory-backend=m`.
 * Several: a backend per node (`m0`, `m1`, ...) and `-numa node,memdev=mI,cpus=...`.
 */
function memoryArgs(spec: LaunchSpec): string[] {
  const machine = spec.machine ?? 'q35';
  const files = spec.numaRamFiles ?? [];
  const backend = (id: string, mib: number, path: string): string[] => [
    '-object',
    `memory-backend-file,id=${id},size=${mib}M,mem-path=${path},share=on`,
  ];
  if (files.length < 2) {
    return [
      '-machine',
      `${machine},memory-backend=m`,
      '-m',
      `${spec.memMiB}M`,
      ...backend('m', spec.memMiB, spec.ramFile),
    ];
  }
  const sizes = numaNodeSizes(spec.memMiB, files.length);
  const args = ['-machine', machine, '-m', `${spec.memMiB}M`];
  files.forEach((f, i) => {
    const cpus = Array.from({ length: spec.cpus }, (_, c) => c).filter((c) => c % files.length === i);
    args.push(
      ...backend(`m${i}`, sizes[i], f),
      '-numa',
      [`node,nodeid=${i},memdev=m${i}`, ...cpus.map((c) => `cpus=${c}`)].join(','),
    );
  });
  return args;
}

/** Creates the guest RAM file ourselves (0600, exclusive) so it is never world-readable. */
export async function createRamFile(path: string, memMiB: number): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.truncate(memMiB * 1024 * 1024);
  } finally {
    await fh.close();
  }
}

/**
 * Starts QEMU daemonized; resolves with its pid once QEMU has set everything up (the
 * daemonizing parent exits only then), or rejects with QEMU's own error line.
 */
export async function launchQemu(spec: LaunchSpec): Promise<{ pid: number; argv: string[] }> {
  const qemu = await findQemu();
  const args = qemuArgs(spec.sandbox && !qemuHasSandbox(qemu) ? { ...spec, sandbox: undefined } : spec);
  const p = runDirPaths(spec.runDir);
  await startConsoleLogWriter(p, spec.consoleLogCap ?? CONSOLE_LOG_CAP);
  const log = await open(p.qemuLog, 'w', 0o600);
  let code: number | null;
  try {
    code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(qemu, args, {
        stdio: ['ignore', log.fd, log.fd, ...(spec.passFds ?? [])],
        cwd: spec.runDir,
      });
      child.on('error', (e: NodeJS.ErrnoException) =>
        reject(e.code === 'ENOENT' ? new QemuError(QEMU_NOT_FOUND) : e),
      );
      child.on('exit', (c) => resolve(c));
    });
  } finally {
    await log.close();
  }
  if (code !== 0) {
    const msg = (await readFile(p.qemuLog, 'utf8').catch(() => ''))
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    throw new QemuError(`qemu failed to start (exit ${code}): ${msg.slice(-1)[0] ?? 'no message'}`);
  }
  const pid = Number((await readFile(p.pidFile, 'utf8')).trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new QemuError(`bad pid file ${p.pidFile}`);
  return { pid, argv: [qemu, ...args] };
}

/**
 * The FIFO QEMU logs the console into, and the detached process that copies it into
 * console.log with a cap (src/qemu/console-log-writer.ts). Started before QEMU.
 */
async function startConsoleLogWriter(p: ReturnType<typeof runDirPaths>, cap: number): Promise<void> {
  const made = spawnSync('mkfifo', ['-m', '600', p.consoleFifo], { encoding: 'utf8' });
  if (made.status !== 0) throw new QemuError(`mkfifo ${p.consoleFifo}: ${made.stderr?.trim() || made.error}`);
  const js = fileURLToPath(new URL('./console-log-writer.js', import.meta.url));
  const script = existsSync(js) ? js : js.replace(/\.js$/, '.ts');
  const child = spawn(process.execPath, [script, p.consoleFifo, p.consoleLog, String(cap), p.pidFile], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  // It must hold the FIFO before QEMU opens it for writing; opening O_RDWR takes it at once.
  for (let i = 0; i < 100 && !existsSync(p.consoleLog); i++) await new Promise((r) => setTimeout(r, 20));
  if (!existsSync(p.consoleLog)) throw new QemuError('the console log writer did not start');
}

/**
 * True when `pid` is a live (not zombie) QEMU process; with `runDir`, also checks that its
 * command line names that run dir (guards against pid reuse).
 */
export function isQemuAlive(pid: number, runDir?: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes('qemu-system')) return false;
    return runDir ? cmdline.includes(runDir) : true;
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitGone(pid: number, runDir: string, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!isQemuAlive(pid, runDir)) return true;
    await sleep(50);
  }
  return !isQemuAlive(pid, runDir);
}

/** Stops QEMU: QMP quit, then SIGTERM, then SIGKILL. Resolves once the process is gone. */
export async function stopQemu(pid: number, runDir: string): Promise<void> {
  if (!isQemuAlive(pid, runDir)) return;
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(runDirPaths(runDir).qmpSocket, { timeoutMs: 3000 });
    // QEMU may close the socket before it answers `quit`: that is success too.
    await qmp.execute('quit', undefined, 3000).catch(() => undefined);
  } catch {
    // no QMP: fall through to signals
  } finally {
    qmp?.close();
  }
  if (await waitGone(pid, runDir, 5000)) return;
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    try {
      process.kill(pid, sig);
    } catch {
      return;
    }
    if (await waitGone(pid, runDir, 3000)) return;
  }
  throw new QemuError(`qemu pid ${pid} did not exit`);
}
