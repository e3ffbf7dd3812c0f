/**
 * `vmi capture create`: a snapshot of a live guest (device + vCPU state and raw RAM) into
 * a capture directory, built beside the target and renamed into place last.
 *
 * Fast path (guest RAM in a shared memory-backend-file): stop, migrate with x-ignore-shared
 * (device + vCPU state only, ~290 KB), copy the RAM file while the VM is still paused,
 * cont. Full path (no shared RAM): stop, migrate the complete stream, cont, then rebuild
 * raw RAM from the stream. The source guest is resumed on every path (it is only resumed
 * if it was running when we started). With `compress`, the RAM is stored as ram.raw.gz
 * (gzip level 1, streamed), compressed after the guest is resumed.
 */
import { createHash, randomUUID, type KeyObject } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { MigrateInfo } from '../qemu/migration.js';
import { queryRamMap } from '../qemu/ram-map.js';
import { queryDeviceModel } from '../qemu/device-model.js';
import { checkDeviceModel } from './device-policy.js';
import {
  awaitDiskCopies,
  cancelDiskCopies,
  cancelLeftDiskCopies,
  diskCopyPart,
  diskNodes,
  manifestDevices,
  startDiskCopies,
} from './disk-copy.js';
import { copySparse, copySparseFast } from './sparse.js';
import { queryMachineInfo, queryMigrateCapability, queryStatus } from '../qemu/machine-info.js';
import { QmpClient } from '../qemu/qmp.js';
import { hashFile, PARTIAL_RE, partHasher, partialDirFor } from './artifact.js';
import { gzipFile } from './compression.js';
import {
  CAPTURE_FORMAT,
  CAPTURE_VERSION,
  CaptureError,
  DEVSTATE_PART,
  encodeManifest,
  hex,
  MANIFEST,
  MANIFEST_SUM,
  RAM_GZ_PART,
  RAM_PART,
  type CaptureManifest,
  type PartInfo,
  type VcpuRecord,
} from './manifest.js';
import { extractRam, parseVcpus, streamMachineType, type StreamVcpu } from './migration-stream.js';
import { processAlive } from '../util/process-alive.js';
import { shellQuote } from '../util/shell-quote.js';
import { awaitDevstateMigration } from './devstate-migration.js';
import { PARTIAL_STAMP, stampPartialDir, verifyPartialDir } from './partial-stamp.js';
import {
  captureFromProcess,
  ProcessCaptureFallback,
  probeProcessRam,
  REPLAY_RAM_BLOCK,
  type ProcessRam,
} from './ram-from-process.js';
import { splitStreamFile } from './stream-filter.js';
import { SIGNATURE_FILE, signatureFileText } from './signature.js';

export interface CreateCaptureOptions {
  /** QMP socket of the source QEMU. */
  qmpSocket: string;
  /** Output capture directory (must not exist). */
  output: string;
  /** Name recorded for the guest (default: QEMU's -name). */
  guestName?: string;
  kernelRelease?: string;
  /** Force the full-stream path even when RAM is shared. */
  full?: boolean;
  /** Store the RAM gzip-compressed (ram.raw.gz, level 1), after the guest is resumed. */
  compress?: boolean;
  /**
   * Also copy every disk as it was at the pause instant into the capture (disks/diskN.qcow2,
   * QEMU's backup job; the guest resumes while it copies): replays then read those copies.
   */
  withDisks?: boolean;
  /** Ed25519 private key (loadSigningKey): the capture gets a manifest.sig (signature.ts). */
  signKey?: KeyObject;
  progress?: (m: string) => void;
  /** Test hook: called between steps with the step name (e.g. to inject a failure). */
  onStep?: (step: string, partialDir: string) => void | Promise<void>;
}

export interface CreateCaptureResult {
  path: string;
  manifest: CaptureManifest;
  /** stop → cont. */
  pauseMs: number;
  totalMs: number;
  bytes: number;
  /** Time spent compressing the RAM (with `compress`). */
  compressMs?: number;
}

function toolVersion(): string {
  try {
    const pkg = JSON.parse(
      // dist/capture/*.js and src/capture/*.ts are both two levels below the package root
      readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Names a failing step's part in the error: "ram.raw: no space left on device (ENOSPC)". */
async function step<T>(part: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CaptureError) throw e;
    const err = e as NodeJS.ErrnoException;
    const what = err.code === 'ENOSPC' ? 'no space left on device (ENOSPC)' : err.message;
    throw new CaptureError(`${part}: ${what}`);
  }
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function vcpuRecord(v: StreamVcpu): VcpuRecord {
  const [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15] = v.regs.map(hex);
  const [es, cs, ss, ds, fs, gs] = v.segs;
  return {
    index: v.index,
    rax,
    rbx,
    rcx,
    rdx,
    rsi,
    rdi,
    rbp,
    rsp,
    r8,
    r9,
    r10,
    r11,
    r12,
    r13,
    r14,
    r15,
    rip: hex(v.rip),
    eflags: hex(v.eflags),
    cs: cs.selector,
    ss: ss.selector,
    ds: ds.selector,
    es: es.selector,
    fs: fs.selector,
    gs: gs.selector,
    fsBase: hex(fs.base),
    gsBase: hex(gs.base),
    kernelGsBase: hex(v.kernelGsBase),
    cr0: hex(v.cr0),
    cr2: hex(v.cr2),
    cr3: hex(v.cr3),
    cr4: hex(v.cr4),
    efer: hex(v.efer),
    star: hex(v.star),
    lstar: hex(v.lstar),
    cstar: hex(v.cstar),
    fmask: hex(v.fmask),
  };
}

/** The first complete "Linux version ..." string in RAM (the kernel's linux_banner). */
export async function findBanner(ramPath: string): Promise<string | undefined> {
  const needle = Buffer.from('Linux version ');
  const fh = await open(ramPath, 'r');
  try {
    const CH = 16 * 1024 * 1024;
    const buf = Buffer.alloc(CH + 512);
    for (let off = 0; ; off += CH) {
      const { bytesRead } = await fh.read(buf, 0, CH + 512, off);
      if (bytesRead === 0) return undefined;
      const view = buf.subarray(0, bytesRead);
      for (let i = view.indexOf(needle); i >= 0 && i < CH; i = view.indexOf(needle, i + 1)) {
        let end = i;
        while (end < view.length && end - i < 400 && view[end] >= 0x20 && view[end] < 0x7f) end++;
        const s = view.subarray(i, end).toString('latin1');
        // linux_banner: "Linux version <release> (<builder>) ... #<n> ..." (the first copy in
        // a Debian kernel's RAM, in .init data, reads "# SMP": skip copies without the number)
        if (/^Linux version \S+ \(.+\) #\d+ /.test(s)) return s.trim();
      }
      if (bytesRead < CH + 512) return undefined;
    }
  } finally {
    await fh.close();
  }
}

/**
 * A content-addressed copy of a boot file inside the capture (a copy, never a hard link:
 * the capture must not share an inode with the kernel cache).
 */
async function addBootFile(
  dir: string,
  src: string,
  kind: string,
): Promise<{ part: string; info: PartInfo }> {
  const info = await step(`${kind} (${src})`, () => hashFile(src));
  const part = `boot/${kind}-${info.sha256.slice(0, 16)}`;
  await mkdir(join(dir, 'boot'), { recursive: true, mode: 0o700 });
  await step(part, () => copyFile(src, join(dir, part), constants.COPYFILE_FICLONE));
  const again = await stat(join(dir, part));
  if (again.size !== info.size) throw new CaptureError(`${part}: changed while copying`);
  return { part, info };
}

/** Written in the partial dir while the source guest is paused; removed once it runs again. */
const PAUSED_MARKER = 'source-paused.json';

/**
 * Cleans up after captures of this target that were killed (SIGKILL): removes their
 * `.NAME.partial-<pid>` dirs and /dev/shm staging files, and resumes a source guest that
 * a killed capture left paused after its migration (QEMU status postmigrate).
 */
async function sweepStalePartials(out: string, progress: (m: string) => void): Promise<void> {
  const parent = dirname(out);
  for (const e of await readdir(parent).catch(() => [] as string[])) {
    const m = PARTIAL_RE.exec(e);
    if (!m || m[1] !== basename(out)) continue;
    const pid = Number(m[2]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || processAlive(pid)) continue;
    const dir = join(parent, e);
    // Only what vmi wrote as this user: owner, mode and a stamp keyed with our secret.
    // A planted directory is left as it is; no socket named in it is ever connected to.
    const ours = await verifyPartialDir(dir, pid);
    if (!ours) {
      progress(`left ${dir} alone: not a partial capture this user's vmi wrote`);
      continue;
    }
    if (ours.qmpSocket) {
      try {
        const q = await QmpClient.connect(ours.qmpSocket, { timeoutMs: 3000 });
        try {
          // Let a migration the killed capture started finish (QEMU runs it on its own).
          for (let i = 0; i < 500; i++) {
            const mig = await q.execute<MigrateInfo>('query-migrate');
            if (mig.status !== 'active' && mig.status !== 'setup' && mig.status !== 'device') break;
            await new Promise((r) => setTimeout(r, 10));
          }
          // Disk copies the killed capture started (in the pause, or while the guest ran on).
          const jobs = await cancelLeftDiskCopies(q);
          if (jobs > 0) progress(`cancelled ${jobs} disk-copy job(s) of a killed capture (pid ${pid})`);
          // The stamp names a paused guest only while the capture had it paused.
          const st = await queryStatus(q);
          if (ours.phase === 'paused' && (st.status === 'postmigrate' || st.status === 'paused')) {
            await q.execute('cont');
            progress(`resumed the guest a killed capture (pid ${pid}) had left paused`);
          }
        } finally {
          q.close();
        }
      } catch {
        // the guest is gone
      }
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    await removeOwnStaging(pid);
  }
}

/** /dev/shm staging files of capture `pid`: our exact naming, regular files owned by us. */
async function removeOwnStaging(pid: number): Promise<void> {
  const re = new RegExp(`^vmi-capture-${pid}-[0-9a-f]{8}\\.ram$`);
  for (const f of await readdir('/dev/shm').catch(() => [] as string[])) {
    if (!re.test(f)) continue;
    const path = join('/dev/shm', f);
    const st = await lstat(path).catch(() => undefined);
    if (st && st.isFile() && st.uid === process.getuid!()) await unlink(path).catch(() => undefined);
  }
}

/**
 * Polls query-status until the guest runs again (a background snapshot resumes it once
 * the device state is saved); returns that instant (performance.now()). A failed
 * migration ends the wait (the caller's wait for the migration reports it).
 */
async function awaitResume(q: QmpClient, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const st = await queryStatus(q);
    if (st.running) return performance.now();
    const mig = await q.execute<MigrateInfo>('query-migrate');
    if (mig.status === 'failed' || mig.status === 'cancelled' || Date.now() > end) return performance.now();
    await new Promise((r) => setTimeout(r, 1));
  }
}

export async function createCapture(opts: CreateCaptureOptions): Promise<CreateCaptureResult> {
  const t0 = performance.now();
  const progress = opts.progress ?? (() => {});
  const out = resolve(opts.output);
  if (
    await stat(out).then(
      () => true,
      () => false,
    )
  ) {
    throw new CaptureError(`${out} already exists: choose another name or delete it`);
  }
  await sweepStalePartials(out, progress);
  const tmp = partialDirFor(out);
  await step(basename(tmp), () => mkdir(tmp, { mode: 0o700 }));
  await stampPartialDir(tmp, process.pid);
  let qmp: QmpClient | undefined;
  /** RAM snapshot staged in /dev/shm during the pause. */
  let staging: string | undefined;
  try {
    qmp = await QmpClient.connect(opts.qmpSocket, { timeoutMs: 5000 });
    const q = qmp;

    // Machine description (before pausing: none of this counts toward the pause).
    const { version, machineType, kernel, initrd, append, cpus, cpuModel, memBytes, ramFile, name, uuid } =
      await queryMachineInfo(q);
    // A firmware boot (no -kernel) is recorded as such; a -kernel boot needs its -initrd too.
    const linuxBoot = kernel !== '';
    if (linuxBoot && !initrd)
      throw new CaptureError('the guest was booted with -kernel but no -initrd: replay could not rebuild it');
    const model = await queryDeviceModel(q);
    const dm = manifestDevices(model, linuxBoot);
    const nodes = diskNodes(model, dm.disks);
    const copying = !!opts.withDisks && dm.disks.length > 0;
    // Where RAM is: ram.raw holds the one RAM block, the manifest says which ranges of it
    // sit at which guest-physical addresses (q35/pc split RAM around the PCI hole).
    const ramMap = await queryRamMap(q);
    const blocks = [...new Set(ramMap.ranges.map((r) => r.block))];
    if (blocks.length !== 1)
      throw new CaptureError(
        `the guest's RAM is in ${blocks.length} memory backends (${blocks.join(', ')}, e.g. NUMA nodes): captures support one`,
      );
    if (ramFile && ramMap.files[blocks[0]] !== ramFile)
      throw new CaptureError(`the shared RAM file ${ramFile} is not the guest's RAM block ${blocks[0]}`);
    let mode: CaptureManifest['mode'] = ramFile && !opts.full ? 'shared-ram' : 'full-stream';
    // RAM private to QEMU: read it in QEMU's own memory during the pause when this user may
    // (ram-from-process.ts); otherwise, and with --full, the full stream as before.
    let procRam: ProcessRam | undefined;
    let ramSourceNote: string | undefined = opts.full ? 'asked for (--full)' : undefined;
    if (!ramFile && !opts.full) {
      const probe = copying
        ? { refused: '--with-disks takes the disks and RAM at one stop of its own' }
        : await probeProcessRam(q, opts.qmpSocket, ramMap, memBytes);
      if ('ram' in probe) procRam = probe.ram;
      else ramSourceNote = probe.refused;
    }
    const qname = name?.replace(/^vmi-/, '');

    const kernelPart = linuxBoot ? await addBootFile(tmp, kernel, 'vmlinux') : undefined;
    const initrdPart = linuxBoot ? await addBootFile(tmp, initrd, 'initrd') : undefined;
    await opts.onStep?.('boot-files', tmp);

    const prevIgnore = await queryMigrateCapability(q, 'x-ignore-shared');
    // RAM private to QEMU taken from a full stream: the stream is split afterwards into
    // ram.raw and a devstate.bin without its pages (as a lab capture's), which a replay
    // clone loads; x-ignore-shared makes the RAM list read as the clone expects.
    const apart = !ramFile && !!prevIgnore;
    if (mode === 'shared-ram' && !prevIgnore) {
      throw new CaptureError('this QEMU has no x-ignore-shared migration capability');
    }
    const status = await queryStatus(q);
    if (status.status === 'inmigrate' || status.status === 'finish-migrate') {
      throw new CaptureError(`the guest is migrating (${status.status})`);
    }
    // With disk copies on a running guest the device state goes out as a background
    // snapshot (disk-copy.ts says why): QEMU itself resumes the guest after it.
    const background = copying && status.running;
    const prevBg = background ? await queryMigrateCapability(q, 'background-snapshot') : undefined;
    if (background && !prevBg)
      throw new CaptureError(
        '--with-disks needs the background-snapshot migration capability (QEMU 6.0 or later)',
      );
    if (copying) await step('disks', () => mkdir(join(tmp, 'disks'), { mode: 0o700 }));
    const devPath = join(tmp, DEVSTATE_PART);
    const ramPath = join(tmp, RAM_PART);
    let pauseMs = 0;
    let migrateMs = 0;
    let copyMs = 0;
    if (status.running) {
      await writeFile(join(tmp, PAUSED_MARKER), JSON.stringify({ qmpSocket: resolve(opts.qmpSocket) }), {
        mode: 0o600,
      });
      // What a sweep trusts is the stamp, keyed with this user's secret, not the marker.
      await stampPartialDir(tmp, process.pid, resolve(opts.qmpSocket));
    }
    const copyRam = async (): Promise<void> => {
      // Memory to memory while paused (~0.1 s for 256 MiB); to the capture's disk after cont.
      const tc = performance.now();
      staging = `/dev/shm/vmi-capture-${process.pid}-${randomUUID().slice(0, 8)}.ram`;
      // Holes stay holes: a big, mostly untouched guest costs what it touched.
      try {
        await copySparseFast(ramFile!, staging);
      } catch {
        await unlink(staging).catch(() => undefined);
        staging = undefined;
        await step(RAM_PART, () => copySparse(ramFile!, ramPath));
      }
      copyMs = performance.now() - tc;
      await opts.onStep?.('ram-copied', tmp);
    };
    let resumedAt: number | undefined;
    let viaProcess = false;
    if (procRam) {
      staging = `/dev/shm/vmi-capture-${process.pid}-${randomUUID().slice(0, 8)}.ram`;
      try {
        const r = await captureFromProcess(q, procRam, {
          devPath,
          stagingPath: staging,
          resume: status.running,
          progress,
        });
        ({ pauseMs, migrateMs, copyMs } = r);
        viaProcess = true;
        mode = 'shared-ram';
      } catch (e) {
        await unlink(staging).catch(() => undefined);
        staging = undefined;
        if (!(e instanceof ProcessCaptureFallback)) throw e;
        // The guest runs and nothing of the attempt is left: the full stream follows.
        ramSourceNote = `the process-memory capture did not start (${e.message})`;
      }
      if (viaProcess) {
        await rm(join(tmp, PAUSED_MARKER), { force: true });
        await stampPartialDir(tmp, process.pid);
        await opts.onStep?.('migrated', tmp);
      }
    }
    if (!ramFile && !viaProcess)
      progress(
        `RAM from the full migration stream (the guest is paused while it is written), not QEMU's process memory: ${ramSourceNote ?? 'unknown reason'}`,
      );
    if (!viaProcess) {
      const tStop = performance.now();
      await q.execute('stop');
      try {
        if (copying) {
          await startDiskCopies(q, tmp, nodes);
          // A paused guest stays paused: its disks are copied before the device state.
          if (!background) await awaitDiskCopies(q, nodes.length, 3_600_000);
        }
        // A background snapshot resumes the guest as soon as the device state is saved.
        if (background && mode === 'shared-ram') await copyRam();
        if (prevIgnore || background) {
          await q.execute('migrate-set-capabilities', {
            capabilities: [
              ...(prevIgnore
                ? [{ capability: 'x-ignore-shared', state: mode === 'shared-ram' || apart }]
                : []),
              ...(background ? [{ capability: 'background-snapshot', state: true }] : []),
            ],
          });
        }
        const tm = performance.now();
        await q.execute('migrate', { uri: `exec:cat > ${shellQuote(devPath)}` });
        if (background) resumedAt = await awaitResume(q, 30_000);
        await awaitDevstateMigration(q, 'outgoing', mode === 'shared-ram' ? 30_000 : 300_000);
        migrateMs = performance.now() - tm;
        await opts.onStep?.('migrated', tmp);
        if (!background && mode === 'shared-ram') await copyRam();
      } catch (e) {
        if (copying) await cancelDiskCopies(q, nodes.length);
        throw e;
      } finally {
        if (status.running) await q.execute('cont');
        pauseMs = (resumedAt ?? performance.now()) - tStop;
        if (background && prevBg && !prevBg.state) {
          await q
            .execute('migrate-set-capabilities', {
              capabilities: [{ capability: 'background-snapshot', state: false }],
            })
            .catch(() => undefined);
        }
        await rm(join(tmp, PAUSED_MARKER), { force: true });
        // While QEMU copies the disks, a sweep after a kill must still find the guest's jobs.
        await stampPartialDir(tmp, process.pid, background ? resolve(opts.qmpSocket) : undefined, 'copying');
        if (prevIgnore && prevIgnore.state !== (mode === 'shared-ram' || apart)) {
          await q
            .execute('migrate-set-capabilities', {
              capabilities: [{ capability: 'x-ignore-shared', state: prevIgnore.state }],
            })
            .catch(() => undefined);
        }
      }
    }
    // With compression the staged copy is compressed straight into ram.raw.gz (below).
    // ram.raw's digest, when it is computed while ram.raw is written (one pass over 8 GiB, not two).
    let ramHashed: PartInfo | undefined;
    if (staging && !opts.compress) {
      const tw = performance.now();
      const h = partHasher('sha256-sparse');
      const { size } = await step(RAM_PART, () =>
        copySparse(staging!, ramPath, (c, off) => h.update(c, off)),
      );
      ramHashed = { size, sha256: h.hex(), digest: 'sha256-sparse' };
      await unlink(staging).catch(() => undefined);
      staging = undefined;
      progress(`wrote ${RAM_PART} in ${(performance.now() - tw).toFixed(0)} ms (after the guest resumed)`);
    }
    progress(
      `guest paused ${pauseMs.toFixed(1)} ms (migrate ${migrateMs.toFixed(1)} ms, RAM copy ${copyMs.toFixed(1)} ms)`,
    );
    let diskCopyMs: number | undefined;
    if (background) {
      // The guest runs; QEMU copies the disks as they were at the pause.
      const td = performance.now();
      await awaitDiskCopies(q, nodes.length, 3_600_000);
      diskCopyMs = performance.now() - td;
      await stampPartialDir(tmp, process.pid);
      progress(
        `copied ${nodes.length} disk(s) as of the pause in ${diskCopyMs.toFixed(0)} ms (after the guest resumed)`,
      );
    }
    q.close();
    qmp = undefined;

    if (mode === 'full-stream' && apart) {
      const tx = performance.now();
      const whole = `${devPath}.full`;
      await step(DEVSTATE_PART, () => rename(devPath, whole));
      const r = await step(RAM_PART, async () =>
        splitStreamFile(whole, devPath, ramPath, {
          block: blocks[0],
          blockBytes: memBytes,
          renameTo: REPLAY_RAM_BLOCK,
        }),
      );
      await unlink(whole);
      copyMs = performance.now() - tx;
      mode = 'shared-ram';
      progress(
        `split the stream into ${RAM_PART} (${r.covered} pages) and ${DEVSTATE_PART} without them in ${copyMs.toFixed(0)} ms`,
      );
    }
    const stream = await step(DEVSTATE_PART, () => readFile(devPath));
    const streamType = streamMachineType(stream);
    if (streamType && streamType !== machineType) {
      throw new CaptureError(`${DEVSTATE_PART}: stream machine type ${streamType}, expected ${machineType}`);
    }
    const vcpus = parseVcpus(stream);
    if (mode === 'full-stream') {
      const tx = performance.now();
      const r = await step(RAM_PART, () => extractRam(stream, ramPath));
      copyMs = performance.now() - tx;
      if (r.size !== memBytes)
        throw new CaptureError(`${RAM_PART}: RAM block ${r.block} is ${r.size} bytes, expected ${memBytes}`);
      progress(`rebuilt ${RAM_PART} from the stream (${r.pages} pages) in ${copyMs.toFixed(0)} ms`);
    }
    await opts.onStep?.('parts-written', tmp);

    // The raw RAM: ram.raw in the capture, or (compressing) the /dev/shm staging copy.
    const rawPath = staging ?? ramPath;
    const banner = await findBanner(rawPath);
    let ramInfo: PartInfo;
    let compressMs: number | undefined;
    if (opts.compress) {
      const tz = performance.now();
      ramInfo = await step(RAM_GZ_PART, () => gzipFile(rawPath, join(tmp, RAM_GZ_PART)));
      compressMs = performance.now() - tz;
      await unlink(rawPath).catch(() => undefined);
      if (rawPath === staging) staging = undefined;
      progress(
        `wrote ${RAM_GZ_PART} (${ramInfo.size} of ${ramInfo.uncompressedSize} bytes) in ${compressMs.toFixed(0)} ms (after the guest resumed)`,
      );
    } else {
      // Sparse digest: zero MiBs (most of a big, young guest) cost a compare, not a hash.
      ramInfo = ramHashed ?? (await step(RAM_PART, () => hashFile(ramPath, undefined, 'sha256-sparse')));
    }
    const ramSize = ramInfo.uncompressedSize ?? ramInfo.size;
    const ramName = opts.compress ? RAM_GZ_PART : RAM_PART;
    if (ramSize !== memBytes) {
      throw new CaptureError(
        `${ramName}: ${ramSize} bytes${opts.compress ? ' uncompressed' : ''}, expected ${memBytes}`,
      );
    }
    const parts: Record<string, PartInfo> = {
      [DEVSTATE_PART]: await step(DEVSTATE_PART, () => hashFile(devPath)),
      [ramName]: ramInfo,
      ...(kernelPart && initrdPart
        ? { [kernelPart.part]: kernelPart.info, [initrdPart.part]: initrdPart.info }
        : {}),
    };
    if (copying) {
      for (const [i, k] of dm.disks.entries()) {
        const part = diskCopyPart(i);
        // QEMU created the copy with its own umask: the capture's parts are 0600.
        await step(part, () => chmod(join(tmp, part), 0o600));
        parts[part] = await step(part, () => hashFile(join(tmp, part)));
        k.copyPart = part;
      }
    }
    const manifest: CaptureManifest = {
      format: CAPTURE_FORMAT,
      version: CAPTURE_VERSION,
      id: randomUUID(),
      createdAt: new Date().toISOString(),
      tool: { name: 'vmi', version: toolVersion() },
      mode,
      ramSource:
        ramFile && mode === 'shared-ram' ? 'shared-file' : viaProcess ? 'process-memory' : 'migration-stream',
      ...(!viaProcess && ramSourceNote !== undefined ? { ramSourceNote } : {}),
      guest: {
        name: opts.guestName ?? qname ?? basename(dirname(opts.qmpSocket)),
        ...(uuid && !/^[0-]+$/.test(uuid.replace(/-/g, '')) ? { uuid } : {}),
        ...(opts.kernelRelease ? { kernelRelease: opts.kernelRelease } : {}),
        ...(banner ? { banner } : {}),
      },
      qemu: {
        version: `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`,
        ...(version.package ? { package: version.package } : {}),
      },
      machine: {
        machineType,
        cpuModel,
        cpus,
        memMiB: Math.round(memBytes / (1024 * 1024)),
        append,
        ...(kernelPart && initrdPart ? { kernelPart: kernelPart.part, initrdPart: initrdPart.part } : {}),
        devices: dm.devices,
        pci: dm.pci,
        disks: dm.disks,
        firmware: dm.firmware,
      },
      ...(dm.disks.length > 0 ? { disks: copying ? ('point-in-time' as const) : ('live' as const) } : {}),
      ram: ramMap.ranges.map((r) => ({ gpa: r.gpa, size: r.size, offset: r.offset })),
      vcpus: vcpus.map(vcpuRecord),
      timing: { pauseMs, migrateMs, copyMs, ...(diskCopyMs !== undefined ? { diskCopyMs } : {}) },
      parts,
    };
    manifest.timing.totalMs = performance.now() - t0;
    try {
      checkDeviceModel(manifest);
    } catch (e) {
      progress(`warning: this capture will not replay: ${(e as Error).message}`);
    }
    const mbuf = encodeManifest(manifest);
    await step(MANIFEST, () => writeFile(join(tmp, MANIFEST), mbuf, { mode: 0o600 }));
    const sum = createHash('sha256').update(mbuf).digest('hex');
    await step(MANIFEST_SUM, () => writeFile(join(tmp, MANIFEST_SUM), sum + '\n', { mode: 0o600 }));
    const signed = opts.signKey ? [SIGNATURE_FILE] : [];
    if (opts.signKey) {
      const key = opts.signKey;
      // Inside the partial directory: a capture appears under its name signed or not at all.
      await step(SIGNATURE_FILE, () =>
        writeFile(join(tmp, SIGNATURE_FILE), signatureFileText(sum, key), { mode: 0o600 }),
      );
    }
    await opts.onStep?.('manifest-written', tmp);
    await step('fsync', async () => {
      for (const p of [MANIFEST, MANIFEST_SUM, ...signed, ...Object.keys(parts)])
        await fsyncPath(join(tmp, p));
      if (kernelPart) await fsyncPath(join(tmp, 'boot'));
      if (copying) await fsyncPath(join(tmp, 'disks'));
      // The stamp is for sweeps of partials only; a finished capture does not carry it.
      await rm(join(tmp, PARTIAL_STAMP), { force: true });
      await fsyncPath(tmp);
    });
    await step(basename(out), () => rename(tmp, out));
    await fsyncPath(dirname(out)).catch(() => undefined);
    const bytes = Object.values(parts).reduce((a, p) => a + p.size, 0);
    return {
      path: out,
      manifest,
      pauseMs,
      totalMs: performance.now() - t0,
      bytes,
      ...(compressMs !== undefined ? { compressMs } : {}),
    };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  } finally {
    qmp?.close();
    if (staging) await unlink(staging).catch(() => undefined);
  }
}
