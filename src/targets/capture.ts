/**
 * Replaying a capture: a disposable QEMU clone of the captured machine, resumed from the
 * capture's state, that the normal shadow engine attaches to.
 *
 * The capture is only ever opened read-only. Its RAM is copied (and hashed on the way;
 * a compressed ram.raw.gz is decompressed, its stored bytes hashed) into a fresh /dev/shm
 * file that the clone maps share=on, so the doorbell transport works as on a live lab
 * guest. The clone has no network device, runs under TCG, and
 * has its QMP/gdbstub sockets in a private 0700 run dir; it is killed and its RAM copy
 * and run dir deleted when the replay ends (or fails).
 */
import type { KeyObject } from 'node:crypto';
import { mkdtemp, open as openFile, rm, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { translate } from '../memory/page-walk.js';
import { RamFileMemory, RamLayout, type RamRange } from '../memory/physical.js';
import { REPLAY_RAM_BLOCK } from '../capture/ram-from-process.js';
import { isZero } from '../capture/sparse.js';
import {
  createRamFile,
  findQemu,
  launchQemu,
  qemuDeviceTypes,
  QemuError,
  qemuMachineTypes,
  qemuVersion,
  REPLAY_SANDBOX,
  runDirPaths,
  stopQemu,
} from '../qemu/launcher.js';
import { createOverlay, diskImageInfo } from '../qemu/disk-image.js';
import {
  describeDisk,
  replayDeviceArgs,
  replayFirmwareArgs,
  type ReplayDisk,
} from '../capture/device-policy.js';
import { QmpClient } from '../qemu/qmp.js';
import type { InspectedGuest } from '../qemu/guest-endpoints.js';
import { writeSyscallEntryCache } from '../shadow/syscall-entry.js';
import { ensurePrivateDir, randomTag, runRoot } from '../util/run-dir.js';
import { checkPartHash, checkPartSize, hashFile, readManifest } from '../capture/artifact.js';
import { gunzipRamTo } from '../capture/compression.js';
import { awaitDevstateMigration } from '../capture/devstate-migration.js';
import { checkReplayManifest } from '../capture/replay-policy.js';
import { checkCaptureSignature } from '../capture/signature.js';
import { passwdUser, type HostUser } from '../util/passwd.js';
import { CaptureError, DEVSTATE_PART, ramPartOf, type CaptureManifest } from '../capture/manifest.js';
import { streamMachineType } from '../capture/migration-stream.js';
import type { OpenedTarget, OpenTargetOptions } from './target.js';

export interface ReplayTimings {
  /** Manifest + sizes + hashes of the parts other than the RAM. */
  verifyMs: number;
  /** RAM copy into /dev/shm, hashed on the way. */
  ramCopyMs: number;
  launchMs: number;
  /** migrate-incoming until the stream is loaded. */
  restoreMs: number;
  /** From openReplay() start until the clone runs. */
  totalMs: number;
}

export interface Replay {
  guest: InspectedGuest;
  manifest: CaptureManifest;
  timings: ReplayTimings;
  /** Kills the clone and deletes its RAM copy and run dir; safe to call twice. */
  close(): Promise<void>;
}

export interface ReplayOptions {
  progress?: (m: string) => void;
  /**
   * Ed25519 public keys (loadTrustedKey): the capture must be signed by one of them
   * (manifest.sig, signature.ts), checked before anything else is read or started.
   */
  trust?: readonly KeyObject[];
}

/**
 * Whom replay clones run as when vmi runs as root (QEMU's -runas): VMI_REPLAY_USER, else
 * `vmi-replay` when that user exists, else `nobody`; `VMI_REPLAY_USER=root` keeps root.
 * Undefined when vmi is not root (QEMU then runs as vmi's user anyway). Throws
 * CaptureError for a VMI_REPLAY_USER that does not exist.
 */
export function replayUser(env: NodeJS.ProcessEnv = process.env): HostUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const wanted = env.VMI_REPLAY_USER;
  if (wanted === 'root') return undefined;
  if (wanted) {
    const u = passwdUser(wanted);
    if (!u) throw new CaptureError(`VMI_REPLAY_USER=${wanted}: no such user in /etc/passwd`);
    return u.uid === 0 ? undefined : u;
  }
  return passwdUser('vmi-replay') ?? passwdUser('nobody') ?? { name: 'nobody', uid: 65534, gid: 65534 };
}

/** Starts a disposable clone of the captured guest; the caller must close() it. */
export async function openReplay(capture: string, opts: ReplayOptions = {}): Promise<Replay> {
  const t0 = performance.now();
  const progress = opts.progress ?? (() => {});
  const dir = resolve(capture);
  // Origin before content: an unsigned or foreign capture is refused before its manifest is used.
  if (opts.trust && opts.trust.length > 0) await checkCaptureSignature(dir, opts.trust);
  const manifest = await readManifest(dir);
  const ram = ramPartOf(manifest);
  // Untrusted input: every machine field is checked before any file or process exists.
  const shm = await statfs('/dev/shm');
  checkReplayManifest(manifest, ram, shm.bavail * shm.bsize);
  const ramPath = join(dir, ram.name);
  for (const [name, want] of Object.entries(manifest.parts)) await checkPartSize(dir, name, want);
  for (const [name, want] of Object.entries(manifest.parts).sort((a, b) => a[1].size - b[1].size)) {
    if (name !== ram.name) checkPartHash(name, want, await hashFile(join(dir, name)));
  }
  const verifyMs = performance.now() - t0;

  await ensurePrivateDir(runRoot());
  await ensurePrivateDir(join(runRoot(), 'replays'));
  const runDir = await mkdtemp(join(runRoot(), 'replays', 'r-'));
  const ramCopy = `/dev/shm/vmi-replay-${randomTag()}.ram`;
  let pid: number | undefined;
  let devstate: FileHandle | undefined;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    try {
      await devstate?.close().catch(() => undefined);
      if (pid) await stopQemu(pid, runDir);
    } finally {
      await unlink(ramCopy).catch(() => undefined);
      await rm(runDir, { recursive: true, force: true }).catch(() => undefined);
    }
  };
  try {
    const m = manifest.machine;
    const t1 = performance.now();
    await createRamFile(ramCopy, m.memMiB);
    if (manifest.mode === 'shared-ram' && ram.compressed) {
      // Decompress into the RAM copy, hashing the stored bytes on the way in.
      await gunzipRamTo(ramPath, ram, ramCopy, { flags: 'r+', verify: true });
    } else if (manifest.mode === 'shared-ram') {
      // Copy and hash in one read-only pass over the capture's RAM.
      const dst = await openFile(ramCopy, 'r+');
      try {
        // Zero chunks are left as holes of the fresh (sparse) copy: an 8 GiB guest costs
        // /dev/shm what it had touched, not 8 GiB.
        const got = await hashFile(
          ramPath,
          async (chunk, off) => {
            if (!isZero(chunk)) await dst.write(chunk, 0, chunk.length, off);
          },
          ram.info.digest,
        );
        checkPartHash(ram.name, ram.info, got);
      } finally {
        await dst.close();
      }
    } else {
      // The full stream carries the RAM: QEMU loads it; the RAM part is still checked.
      checkPartHash(ram.name, ram.info, await hashFile(ramPath, undefined, ram.info.digest));
    }
    const ramCopyMs = performance.now() - t1;

    const t2 = performance.now();
    const extraArgs = await rebuildMachine(dir, runDir, manifest);
    // The device state reaches QEMU as an inherited descriptor (fd 3), read-only: no `cat`
    // to spawn, and a QEMU that dropped root (-runas) needs no access to the capture.
    devstate = await openFile(join(dir, DEVSTATE_PART), 'r');
    const runAs = replayUser();
    const launched = await launchQemu({
      name: `replay-${manifest.id.slice(0, 8)}`,
      runDir,
      ...(m.kernelPart && m.initrdPart
        ? { kernel: join(dir, m.kernelPart), initrd: join(dir, m.initrdPart) }
        : {}),
      extraArgs,
      append: m.append,
      cpus: m.cpus,
      cpuModel: m.cpuModel,
      memMiB: m.memMiB,
      ramFile: ramCopy,
      accel: 'tcg',
      machine: m.machineType,
      incoming: 'defer',
      // Guest code from an untrusted capture runs in this clone: seccomp where QEMU has it.
      sandbox: REPLAY_SANDBOX,
      ...(runAs ? { runAs } : {}),
      passFds: [devstate.fd],
    }).catch((e: unknown) => {
      if (e instanceof QemuError && extraArgs.length > 0)
        throw new CaptureError(`this host's QEMU could not rebuild the captured machine: ${e.message}`);
      throw e;
    });
    pid = launched.pid;
    const launchMs = performance.now() - t2;

    const t3 = performance.now();
    const paths = runDirPaths(runDir);
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
    try {
      const v = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version');
      const have = `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}`;
      if (String(v.qemu.major) !== manifest.qemu.version.split('.')[0]) {
        throw new CaptureError(
          `incompatible QEMU: the capture was made with QEMU ${manifest.qemu.version}, this is ${have}`,
        );
      }
      if (manifest.mode === 'shared-ram') {
        await qmp.execute('migrate-set-capabilities', {
          capabilities: [{ capability: 'x-ignore-shared', state: true }],
        });
      }
      await qmp.execute('migrate-incoming', { uri: 'fd:3' });
      await awaitDevstateMigration(qmp, 'incoming', 120_000).catch((e: unknown) => {
        if (e instanceof CaptureError) throw e;
        // A daemonized QEMU that cannot load a stream exits; its message goes to /dev/null.
        const hint =
          manifest.version < 3
            ? `; this capture (format v${manifest.version}) records no devices, so a guest with disks or NICs cannot be rebuilt from it: capture it again with this vmi`
            : '';
        throw new CaptureError(
          `this host's QEMU exited while loading the captured device state (the rebuilt machine does not match the capture: ${(e as Error).message})${hint}`,
        );
      });
      await devstate.close();
      devstate = undefined;
      const restoreMs = performance.now() - t3;
      // Tell the engine where the syscall entry is (from the saved LSTAR) so it need not search.
      await seedSyscallEntry(runDir, ramCopy, manifest);
      await qmp.execute('cont');
      const timings: ReplayTimings = {
        verifyMs,
        ramCopyMs,
        launchMs,
        restoreMs,
        totalMs: performance.now() - t0,
      };
      progress(
        `replay clone of ${manifest.guest.name} (capture ${manifest.id.slice(0, 8)}) running: verify ${verifyMs.toFixed(0)} ms, ` +
          `RAM ${ram.compressed ? 'decompress' : 'copy'}+hash ${ramCopyMs.toFixed(0)} ms, launch ${launchMs.toFixed(0)} ms, restore ${restoreMs.toFixed(0)} ms`,
      );
      const guest: InspectedGuest = {
        name: manifest.guest.name,
        qmpSocket: paths.qmpSocket,
        gdbSocket: paths.gdbSocket,
        ramFile: ramCopy,
        ramFiles: { [REPLAY_RAM_BLOCK]: ramCopy },
        ram: replayRanges(manifest),
        ramSize: m.memMiB * 1024 * 1024,
        runDir,
        ...(manifest.guest.kernelRelease ? { kernelRelease: manifest.guest.kernelRelease } : {}),
        captureId: manifest.id,
      };
      return { guest, manifest, timings, close };
    } finally {
      qmp.close();
    }
  } catch (e) {
    await close().catch(() => undefined);
    throw e;
  }
}

/**
 * The captured devices and firmware as QEMU arguments: each disk gets a qcow2 overlay in
 * the replay's run dir over a read-only base (the capture's point-in-time copy, or the
 * live image by path); device types this QEMU lacks and missing images are one-line
 * errors that say what to do.
 */
async function rebuildMachine(dir: string, runDir: string, manifest: CaptureManifest): Promise<string[]> {
  const mc = manifest.machine;
  const qemu = await findQemu();
  const version = qemuVersion(qemu);
  // The machine type: one this QEMU has, and the one the device state was saved on (QEMU
  // would only say it exited while loading the stream).
  if (!qemuMachineTypes(qemu).has(mc.machineType))
    throw new CaptureError(
      `this host's QEMU ${version} has no machine type ${mc.machineType}, which the capture was made on (QEMU ${manifest.qemu.version}): replay it on a host whose QEMU has ${mc.machineType}`,
    );
  const saved = await devstateMachineType(join(dir, DEVSTATE_PART));
  if (saved !== undefined && saved !== mc.machineType)
    throw new CaptureError(
      `the manifest says machine type ${mc.machineType} but the device state was saved on ${saved}: this capture was altered after it was made`,
    );
  if (!mc.devices?.length && !mc.firmware) return [];
  const disks: ReplayDisk[] = [];
  for (const [i, k] of (mc.disks ?? []).entries()) {
    const dev = mc.devices?.find((d) => d.disk === i);
    let base: string;
    let baseFormat: 'raw' | 'qcow2';
    if (k.copyPart) {
      base = join(dir, k.copyPart);
      baseFormat = 'qcow2';
    } else {
      base = k.path;
      baseFormat = k.format;
      const st = await stat(base).catch(() => undefined);
      if (!st?.isFile() && !st?.isBlockDevice())
        throw new CaptureError(
          `disk image ${describeDisk(k, dev)} is gone: this capture reads live disk images (made without --with-disks); put the image back at that path, or capture again with --with-disks`,
        );
      const info = await diskImageInfo(base).catch((e: unknown) => {
        throw new CaptureError(`disk image ${describeDisk(k, dev)}: ${(e as Error).message}`);
      });
      if (info.format !== k.format || info.virtualSize !== k.virtualSize)
        throw new CaptureError(
          `disk image ${describeDisk(k, dev)} is now ${info.format}, ${info.virtualSize} bytes (captured: ${k.format}, ${k.virtualSize}): it is not the captured disk`,
        );
    }
    const overlay = join(runDir, `disk${i}.qcow2`);
    await createOverlay(overlay, base, baseFormat);
    disks.push({ overlay, base, baseFormat });
  }
  const vars = mc.firmware?.pflash.find((p) => p.unit === 1);
  let pflashVars: ReplayDisk | undefined;
  if (vars) {
    if (!(await stat(vars.path).catch(() => undefined)))
      throw new CaptureError(`firmware variable store ${vars.path} is gone: put it back at that path`);
    pflashVars = { overlay: join(runDir, 'pflash1.qcow2'), base: vars.path, baseFormat: vars.format };
    await createOverlay(pflashVars.overlay, vars.path, vars.format);
  }
  return [
    ...replayDeviceArgs(manifest, disks, qemuDeviceTypes(qemu), version),
    ...replayFirmwareArgs(manifest, pflashVars),
  ];
}

/** The machine type in the configuration section at the head of a device-state stream. */
async function devstateMachineType(path: string): Promise<string | undefined> {
  const fh = await openFile(path, 'r');
  try {
    const head = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return streamMachineType(head.subarray(0, bytesRead));
  } catch (e) {
    throw new CaptureError(`${DEVSTATE_PART}: ${(e as Error).message}`);
  } finally {
    await fh.close();
  }
}

/**
 * The clone's RAM ranges: the captured ranges, whose offsets into ram.raw are offsets into
 * the clone's RAM copy (the same machine type and size give QEMU the same layout).
 */
function replayRanges(manifest: CaptureManifest): RamRange[] {
  return manifest.ram.map((r) => ({ gpa: r.gpa, size: r.size, block: REPLAY_RAM_BLOCK, offset: r.offset }));
}

/** Runs `fn` against a replay clone and always disposes of the clone. */
export async function withReplay<T>(
  capture: string,
  fn: (replay: Replay) => Promise<T>,
  opts: ReplayOptions = {},
): Promise<T> {
  const replay = await openReplay(capture, opts);
  try {
    return await fn(replay);
  } finally {
    await replay.close();
  }
}

/** A capture directory, replayed in a disposable clone. */
export interface CaptureTargetSpec {
  path: string;
  /** Public keys one of which must have signed it (`--trust`); none: not checked. */
  trust?: readonly KeyObject[];
}

/** A capture as a target: its replay clone; close() destroys the clone. */
export function open(spec: CaptureTargetSpec, opts: OpenTargetOptions = {}): Promise<OpenedTarget> {
  return openReplay(spec.path, { ...opts, ...(spec.trust ? { trust: spec.trust } : {}) });
}

/**
 * Writes the engine's per-guest syscall-entry cache (runDir/syscall-entry.json: LSTAR and
 * the 16 code bytes there) from the captured LSTAR, read through the RAM copy with the
 * captured CR3. Without it the engine finds the entry by single-stepping, which also works.
 */
async function seedSyscallEntry(runDir: string, ramFile: string, manifest: CaptureManifest): Promise<void> {
  const v = manifest.vcpus[0];
  const lstar = BigInt(v.lstar);
  if (lstar === 0n) return;
  const mem = new RamFileMemory(ramFile, new RamLayout(replayRanges(manifest)));
  try {
    const t = await translate(mem, BigInt(v.cr3), BigInt(v.cr4), lstar);
    if (!t || (t.paddr & 0xfffn) > 0xff0n) return;
    const bytes = (await mem.read(t.paddr, 16)).toString('hex');
    writeSyscallEntryCache(runDir, { lstar: v.lstar, bytes });
  } catch {
    // leave it to the engine
  } finally {
    mem.close();
  }
}
