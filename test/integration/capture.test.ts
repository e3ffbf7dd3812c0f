/**
 * Captures of a real lab guest: create (fast path), replay in a disposable clone after
 * the source guest is gone, determinism across replays, integrity (hashes unchanged,
 * every flipped byte refused naming its part), SIGKILL mid-capture, ELF export. As root,
 * the clone's QEMU runs as an unprivileged user (-runas), read from /proc/PID/status. The
 * compressed capture is signed (--sign-key's code path) and replayed with its key trusted;
 * another key is refused before any clone starts.
 *
 * Rows that differ by construction: the shadow process (COMM vmi-shadow) is created by
 * each attach, so its PID/creation time differ between the live run and each replay; the
 * live run's own shadow had already exited when the capture was taken. STATE of a task
 * may legitimately differ between replays (a task caught running vs sleeping at the
 * moment of the read); it is compared for everything else only. A kworker's COMM carries the
 * workqueue it last served as a suffix, which is dropped before comparing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, open, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFile, verifyCapture } from '../../src/capture/artifact.js';
import { createCapture, type CreateCaptureResult } from '../../src/capture/create.js';
import { parseElfCore, PT_LOAD, PT_NOTE } from '../../src/capture/elf-core.js';
import { exportCapture } from '../../src/capture/export.js';
import {
  decodeManifest,
  DEVSTATE_PART,
  encodeManifest,
  MANIFEST,
  MANIFEST_SUM,
  RAM_GZ_PART,
  RAM_PART,
} from '../../src/capture/manifest.js';
import { openReplay, replayUser, withReplay, type Replay } from '../../src/targets/capture.js';
import { generateSigningKeyPair, SIGNATURE_FILE } from '../../src/capture/signature.js';
import { passwdUser } from '../../src/util/passwd.js';
import { runRoot } from '../../src/util/run-dir.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import type { ResultTable } from '../../src/output/table.js';
import { pslist } from '../../src/plugins/pslist.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import { requireBuilt } from './helpers/cli.js';
import { guestProcs, guestSh, unseenRows, type GuestProc } from './helpers/guest-shell.js';

const NAME = 't-capture';
const signer = generateSigningKeyPair();
const stranger = generateSigningKeyPair();

/**
 * The uids of the clone's QEMU as the host kernel reports them (real, effective, saved,
 * filesystem), from its pid file and /proc/PID/status.
 */
function cloneUids(r: Replay): number[] {
  const pid = Number(readFileSync(join(r.guest.runDir, 'qemu.pid'), 'utf8').trim());
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const uid = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(status);
  expect(uid, status).not.toBeNull();
  return uid!.slice(1).map(Number);
}
/** The unprivileged user replay clones must run as when the tests run as root. */
const expectedCloneUid = (): number =>
  process.getuid?.() === 0 ? (passwdUser('vmi-replay') ?? passwdUser('nobody'))!.uid : process.getuid!();
const SHADOW = 'vmi-shadow';
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/run.js');

type Row = Record<string, unknown>;
function records(t: ResultTable): Row[] {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}
/**
 * The kernel shows a kworker's comm with the workqueue it last ran for appended
 * ("kworker/0:2-events" then "kworker/0:2-mm_percpu_wq"; "+" instead of "-" while it
 * runs, kernel/workqueue.c wq_worker_comm): that suffix is run-time state,
 * not identity, so it is dropped before comparing.
 */
const normalize = (c: string, v: unknown): string => {
  if (v instanceof Date) return v.toISOString();
  const s = String(v);
  return c === 'COMM' ? s.replace(/^(kworker\/[^-+]+)[-+].*$/, '$1') : s;
};
const key = (r: Row, cols: readonly string[]): string => JSON.stringify(cols.map((c) => normalize(c, r[c])));
function view(t: ResultTable, cols: readonly string[]): string[] {
  const rows = records(t);
  const comm = new Map(rows.map((r) => [r.PID, r.COMM]));
  return (
    rows
      .filter((r) => r.COMM !== SHADOW)
      // The lab's ticker (sh) starts a new `sleep 10` every 10 s: on a loaded host the live
      // table and the capture can be more than 10 s apart.
      .filter((r) => !(r.COMM === 'sleep' && comm.get(r.PPID) === 'sh'))
      .map((r) => key(r, cols))
      .sort()
  );
}

/** QEMU's own view of the VM's run state (QMP serves one client at a time: connect per call). */
async function qmpStatus(qmpSocket: string): Promise<string> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    return (await qmp.execute<{ status: string }>('query-status')).status;
  } finally {
    qmp.close();
  }
}

/**
 * The guest's process list by its own shell, just before and just after a capture: a
 * process in both was there at the capture's instant, one in neither cannot have been.
 */
interface ConsoleTruth {
  before: Map<number, GuestProc>;
  after: Map<number, GuestProc>;
}

/**
 * A replayed pslist against the source guest's console truth, both directions (the clone
 * has no console of its own): every process the guest showed before and after the capture
 * is in the table with the guest's PPID and COMM, and every row of the table (but the
 * replay's own shadow) is a process the guest showed before or after it.
 */
function expectMatchesConsole(
  t: ResultTable,
  truth: ConsoleTruth,
  /** Guest processes a replay may legitimately lack (see the compressed replay). */
  mayEnd: (p: GuestProc) => boolean = () => false,
): void {
  const rows = records(t).filter((r) => r.COMM !== SHADOW);
  const byPid = new Map(rows.map((r) => [r.PID as number, r]));
  let compared = 0;
  for (const p of truth.before.values()) {
    const later = truth.after.get(p.pid);
    if (!later || later.comm !== p.comm) continue; // exited (or the pid reused) around the capture
    if (mayEnd(p) && !byPid.has(p.pid)) continue;
    const row = byPid.get(p.pid);
    expect(row, `pid ${p.pid} (${p.comm}) of the guest missing from the replayed pslist`).toBeDefined();
    expect(row!.PPID, `PPID of ${p.pid}`).toBe(p.ppid);
    expect(normalize('COMM', row!.COMM), `COMM of ${p.pid}`).toBe(normalize('COMM', p.comm));
    compared++;
  }
  expect(compared).toBeGreaterThan(40);
  // A `sleep` the ticker started in the clone itself (the clone runs its userland, on host
  // time, until the replay freeze: a known replay limit) is accepted where `mayEnd` says so.
  const newInClone = (r: Record<string, unknown>): boolean =>
    r.COMM === 'sleep' && mayEnd({ pid: r.PID as number, ppid: r.PPID as number, comm: 'sleep', state: 'S' });
  const extra = unseenRows(rows, truth.before, truth.after).filter((r) => !newInClone(r));
  expect(
    extra.map((r) => `${String(r.PID)} ${String(r.COMM)}`),
    'rows for processes the guest never showed',
  ).toEqual([]);
}

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0x01;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

describe('captures of the lab guest', () => {
  let guest: LabGuest;
  let work: string;
  let cap: CreateCaptureResult;
  let gzCap: CreateCaptureResult;
  let before: ResultTable;
  let beforeGz: ResultTable;
  let truth: ConsoleTruth;
  let truthGz: ConsoleTruth;
  const report: Record<string, string> = {};

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    work = await mkdtemp(join(tmpdir(), 'vmi-capture-test-'));
  });

  afterAll(async () => {
    await labDown(NAME);
    if (work) await rm(work, { recursive: true, force: true });
    console.log('capture figures:', report);
  });

  it('captures the live guest right after a live pslist, and resumes it', async () => {
    // The guest's own word for its syscall entry point (the console shell is root, which
    // kallsyms shows real addresses to) and its process list, before and after (the live
    // pslist comes last before the capture: the ticker's sleep changes pid every 10 s).
    const kallsyms = await guestSh(guest, "grep ' entry_SYSCALL_64$' /proc/kallsyms");
    const entry = /^([0-9a-f]{16}) [Tt] entry_SYSCALL_64$/m.exec(kallsyms);
    expect(entry, `no entry_SYSCALL_64 in the guest's /proc/kallsyms: ${kallsyms}`).not.toBeNull();
    const lstarFromGuest = BigInt(`0x${entry![1]}`);
    expect(lstarFromGuest).not.toBe(0n); // hidden addresses read as zeros
    const beforeProcs = await guestProcs(guest);
    before = (await runPluginsOnGuest(guest, [{ plugin: pslist, options: {} }])).tables[0];
    cap = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'lab.vmicap'),
      guestName: guest.name,
      kernelRelease: guest.kernelRelease,
    });
    const m = cap.manifest;
    expect(m.mode).toBe('shared-ram');
    expect(m.vcpus).toHaveLength(1);
    expect(m.machine.machineType).toMatch(/^pc-q35-/);
    expect(m.guest.banner).toContain(guest.kernelRelease);
    expect(m.guest.banner).toMatch(/ #\d+ /);
    truth = { before: beforeProcs, after: await guestProcs(guest) };
    // The LSTAR parsed from QEMU's migration stream is where the guest kernel says its
    // syscall entry is; so is the one the engine found by single-stepping (its cache).
    expect(BigInt(m.vcpus[0].lstar)).toBe(lstarFromGuest);
    const cached = JSON.parse(readFileSync(join(guest.runDir, 'syscall-entry.json'), 'utf8')) as {
      lstar: string;
    };
    expect(BigInt(cached.lstar)).toBe(lstarFromGuest);
    expect(BigInt(m.vcpus[0].cr3)).not.toBe(0n);
    const qmp = await QmpClient.connect(guest.qmpSocket);
    try {
      expect((await qmp.execute<{ status: string }>('query-status')).status).toBe('running');
    } finally {
      qmp.close();
    }
    const rawSize = m.parts[RAM_PART].size;
    const gz = execFileSync('sh', ['-c', `gzip -1 -c '${join(cap.path, RAM_PART)}' | wc -c`])
      .toString()
      .trim();
    report.captureMs = cap.totalMs.toFixed(0);
    report.pauseMs = `${cap.pauseMs.toFixed(1)} (migrate ${m.timing.migrateMs.toFixed(1)}, RAM copy ${m.timing.copyMs.toFixed(1)})`;
    report.artifactBytes = `${cap.bytes} (ram.raw ${rawSize}, gzip -1 ${gz}; devstate ${m.parts[DEVSTATE_PART].size})`;
    expect(readdirSync(work)).toEqual(['lab.vmicap']);
    await verifyCapture(cap.path);
  });

  it('a compressed capture (--compress) of the same guest: ram.raw.gz, much smaller, verifies', async () => {
    // Its own live view just before: the lab's ticker starts a new `sleep 10` every 10 s,
    // so a pslist taken before the first capture may not match this one's instant.
    const gzProcs = await guestProcs(guest);
    beforeGz = (await runPluginsOnGuest(guest, [{ plugin: pslist, options: {} }])).tables[0];
    gzCap = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'lab-gz.vmicap'),
      guestName: guest.name,
      kernelRelease: guest.kernelRelease,
      compress: true,
      signKey: createPrivateKey(signer.privatePem),
    });
    expect(existsSync(join(gzCap.path, SIGNATURE_FILE))).toBe(true);
    truthGz = { before: gzProcs, after: await guestProcs(guest) };
    const parts = gzCap.manifest.parts;
    expect(parts[RAM_PART]).toBeUndefined();
    const gz = parts[RAM_GZ_PART];
    expect(gz.compression).toBe('gzip');
    expect(gz.uncompressedSize).toBe(cap.manifest.parts[RAM_PART].size);
    expect(gz.size).toBe((await stat(join(gzCap.path, RAM_GZ_PART))).size);
    expect(gz.size).toBeLessThan(gz.uncompressedSize! / 2);
    expect(existsSync(join(gzCap.path, RAM_PART))).toBe(false);
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith(`vmi-capture-${process.pid}-`))).toEqual([]);
    expect(gzCap.manifest.guest.banner).toBe(cap.manifest.guest.banner);
    report.compressed = `${RAM_GZ_PART} ${gz.size} of ${gz.uncompressedSize} bytes, gzip ${gzCap.compressMs?.toFixed(0)} ms after resume; pause ${gzCap.pauseMs.toFixed(1)} ms (RAM copy ${gzCap.manifest.timing.copyMs.toFixed(1)}), total ${gzCap.totalMs.toFixed(0)} ms`;
    await verifyCapture(gzCap.path);
    requireBuilt('dist/commands/capture/info.js');
    const r = await runCli(['capture', 'info', gzCap.path]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        `storage +ram\\.raw\\.gz: gzip, ${gz.size} bytes stored, ${gz.uncompressedSize} uncompressed`,
      ),
    );
  });

  let first: ResultTable;
  it('replays after the source guest is gone: pslist equals the one taken live', async () => {
    await labDown(NAME);
    const t0 = performance.now();
    let firstResultMs = 0;
    let clone = '';
    let uids: number[] = [];
    first = await withReplay(cap.path, async (r) => {
      clone = r.guest.runDir;
      uids = cloneUids(r);
      const run = await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }]);
      firstResultMs = performance.now() - t0;
      report.replayPhases = JSON.stringify(
        Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, Math.round(v)])),
      );
      report.replayAttachMs = run.session.attachMs.toFixed(0);
      return run.tables[0];
    });
    report.replayToFirstResultMs = firstResultMs.toFixed(0);
    report.pslistOnCaptureTotalMs = (performance.now() - t0).toFixed(0);
    expect(first.errors).toEqual([]);
    // As root the clone dropped root for good (QEMU's -runas): all four uids.
    expect(uids).toEqual(Array(4).fill(expectedCloneUid()));
    if (process.getuid?.() === 0) expect(replayUser()?.uid).not.toBe(0);
    expect(first.metadata?.source).toBe('capture');
    expect(first.metadata?.['capture.id']).toBe(cap.manifest.id);
    const cols = ['PID', 'TID', 'PPID', 'COMM', 'CREATION TIME'];
    expect(view(first, cols)).toEqual(view(before, cols));
    expectMatchesConsole(first, truth);
    // The replay's own shadow is left out of the table; its PID is in the metadata.
    expect(records(first).filter((r) => r.COMM === SHADOW)).toHaveLength(0);
    expect(first.metadata['shadow.rows']).toBe('excluded (1)');
    // The clone is gone: run dir deleted, no replay RAM left in /dev/shm.
    expect(existsSync(clone)).toBe(false);
  });

  it('replays twice to identical tables, and the capture is unchanged', async () => {
    const second = await withReplay(
      cap.path,
      async (r) => (await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }])).tables[0],
    );
    const cols = first.columns.map((c) => c.name).filter((c) => c !== 'STATE');
    expect(view(second, cols)).toEqual(view(first, cols));
    const again = await verifyCapture(cap.path);
    expect(again.manifest.parts).toEqual(cap.manifest.parts);
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith('vmi-replay-'))).toEqual([]);
  });

  it('replays the compressed capture: pslist equals the one taken live; raw/ELF export decompress', async () => {
    // Signed by `signer`: with another key trusted it is refused before any clone exists.
    const replays = join(runRoot(), 'replays');
    const clonesBefore = existsSync(replays) ? readdirSync(replays) : [];
    await expect(
      withReplay(gzCap.path, async () => 'ran', { trust: [createPublicKey(stranger.publicPem)] }),
    ).rejects.toThrow(
      /manifest\.sig: signed by key sha256:[0-9a-f]{64}, which is not among the trusted keys/,
    );
    expect(existsSync(replays) ? readdirSync(replays) : []).toEqual(clonesBefore);
    const t0 = performance.now();
    const t = await withReplay(
      gzCap.path,
      async (r) => {
        expect(cloneUids(r)).toEqual(Array(4).fill(expectedCloneUid()));
        report.replayPhasesCompressed = JSON.stringify(
          Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, Math.round(v)])),
        );
        return (await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }])).tables[0];
      },
      { trust: [createPublicKey(signer.publicPem)] },
    );
    report.pslistOnCompressedCaptureTotalMs = (performance.now() - t0).toFixed(0);
    expect(t.errors).toEqual([]);
    const cols = ['PID', 'TID', 'PPID', 'COMM', 'CREATION TIME'];
    // The ticker's `sleep 10` can end in the clone as soon as it resumes (its timer runs on
    // host time: a known replay limit, issue 14); every other task must be there.
    const noSleep = (rows: string[]): string[] => rows.filter((r) => !r.includes('"sleep"'));
    expect(noSleep(view(t, cols))).toEqual(noSleep(view(beforeGz, cols)));
    expectMatchesConsole(t, truthGz, (p) => p.comm === 'sleep');
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith('vmi-replay-'))).toEqual([]);
    // export raw = a gunzip of the stored part, byte for byte; the ELF core carries the same RAM.
    const raw = join(work, 'lab-gz.raw');
    await exportCapture(gzCap.path, 'raw', raw);
    const sha = (s: string): string => execFileSync('sh', ['-c', s]).toString().split(' ')[0];
    const want = sha(`gzip -dc '${join(gzCap.path, RAM_GZ_PART)}' | sha256sum`);
    expect(sha(`sha256sum '${raw}'`)).toBe(want);
    const elf = join(work, 'lab-gz.elf');
    await exportCapture(gzCap.path, 'elf', elf);
    const size = gzCap.manifest.parts[RAM_GZ_PART].uncompressedSize!;
    const head = Buffer.alloc(8192);
    const fh = await open(elf, 'r');
    await fh.read(head, 0, head.length, 0);
    await fh.close();
    const load = parseElfCore(head).phdrs.filter((p) => p.type === PT_LOAD);
    expect(load[0].filesz).toBe(BigInt(size));
    expect((await stat(elf)).size).toBe(Number(load[0].offset) + size);
    expect(sha(`tail -c ${size} '${elf}' | sha256sum`)).toBe(want);
    await rm(raw);
    await rm(elf);
    // One flipped byte in ram.raw.gz: verify and replay refuse, naming the part.
    const part = join(gzCap.path, RAM_GZ_PART);
    const at = Math.floor((await stat(part)).size / 2);
    await flipByte(part, at);
    try {
      await expect(verifyCapture(gzCap.path)).rejects.toThrow(/^ram\.raw\.gz: sha256 mismatch/);
      await expect(openReplay(gzCap.path)).rejects.toThrow(/^ram\.raw\.gz: /);
    } finally {
      await flipByte(part, at);
    }
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith('vmi-replay-'))).toEqual([]);
  });

  it('exports raw and ELF; the ELF core parses with readelf and our parser', async () => {
    const raw = join(work, 'lab.raw');
    await exportCapture(cap.path, 'raw', raw);
    expect((await stat(raw)).size).toBe(cap.manifest.parts[RAM_PART].size);
    const elf = join(work, 'lab.elf');
    const t0 = performance.now();
    await exportCapture(cap.path, 'elf', elf);
    report.elfExportMs = (performance.now() - t0).toFixed(0);
    const out = execFileSync('readelf', ['-h', '-l', '-n', elf]).toString();
    expect(out).toMatch(/Type:\s+CORE/);
    expect(out).toMatch(/Machine:\s+Advanced Micro Devices X86-64/);
    expect(out).toMatch(/LOAD\s+0x[0-9a-f]+ 0x0+ 0x0+\s+0x0*10000000 0x0*10000000/);
    expect(out.match(/NT_PRSTATUS/g)).toHaveLength(cap.manifest.vcpus.length);
    const fh = await open(elf, 'r');
    const head = Buffer.alloc(8192);
    await fh.read(head, 0, head.length, 0);
    const core = parseElfCore(head);
    const load = core.phdrs.filter((p) => p.type === PT_LOAD);
    expect(load).toHaveLength(1);
    expect(load[0].paddr).toBe(0n);
    expect(load[0].filesz).toBe(BigInt(cap.manifest.parts[RAM_PART].size));
    expect(core.phdrs.filter((p) => p.type === PT_NOTE)).toHaveLength(1);
    const v = cap.manifest.vcpus[0];
    expect(core.prstatus[0].rip).toBe(BigInt(v.rip));
    expect(core.prstatus[0].rsp).toBe(BigInt(v.rsp));
    // The RAM in the core is the capture's RAM, byte for byte (a page with the banner).
    const ram = await readFile(raw);
    const i = ram.indexOf('Linux version ');
    const page = Buffer.alloc(4096);
    await fh.read(page, 0, 4096, Number(load[0].offset) + (i & ~0xfff));
    await fh.close();
    expect(page.equals(ram.subarray(i & ~0xfff, (i & ~0xfff) + 4096))).toBe(true);
    await rm(raw);
    await rm(elf);
  });

  it('refuses a flipped byte, a truncated or a missing part, naming the part (verify and replay)', async () => {
    const parts = [MANIFEST, MANIFEST_SUM, ...Object.keys(cap.manifest.parts)];
    for (const part of parts) {
      const path = join(cap.path, part);
      const size = (await stat(path)).size;
      const at = part === MANIFEST_SUM ? 3 : Math.floor(size / 2);
      await flipByte(path, at);
      try {
        const named = part === MANIFEST_SUM ? /manifest\.(msgpack|sha256): / : `${part}: `;
        await expect(verifyCapture(cap.path), part).rejects.toThrow(named);
        await expect(openReplay(cap.path), part).rejects.toThrow(named);
      } finally {
        await flipByte(path, at);
      }
    }
    // Truncated and missing parts.
    const dev = join(cap.path, DEVSTATE_PART);
    const saved = await readFile(dev);
    await truncate(dev, saved.length - 100);
    await expect(verifyCapture(cap.path)).rejects.toThrow(/devstate\.bin: truncated/);
    await rename(dev, dev + '.away');
    await expect(verifyCapture(cap.path)).rejects.toThrow(/devstate\.bin: missing/);
    await expect(openReplay(cap.path)).rejects.toThrow(/devstate\.bin: missing/);
    await rm(dev + '.away');
    await writeFile(dev, saved, { mode: 0o600 });
    await verifyCapture(cap.path);
    // A capture from another QEMU major version (manifest re-signed) is refused.
    const mPath = join(cap.path, MANIFEST);
    const sPath = join(cap.path, MANIFEST_SUM);
    const [mBuf, sBuf] = [await readFile(mPath), await readFile(sPath)];
    try {
      const other = { ...decodeManifest(mBuf), qemu: { version: '99.0.0' } };
      const enc = encodeManifest(other);
      await writeFile(mPath, enc);
      await writeFile(sPath, createHash('sha256').update(enc).digest('hex') + '\n');
      await expect(openReplay(cap.path)).rejects.toThrow(
        /incompatible QEMU: the capture was made with QEMU 99\.0\.0/,
      );
    } finally {
      await writeFile(mPath, mBuf);
      await writeFile(sPath, sBuf);
    }
    // The CLI: one line naming the part, non-zero exit.
    requireBuilt('dist/commands/capture/verify.js', 'dist/commands/plugins/run.js');
    await flipByte(join(cap.path, RAM_PART), 12345);
    try {
      const r = await runCli(['capture', 'verify', cap.path]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(/^vmi: error: ram\.raw: sha256 mismatch/),
      ]);
      const p = await runCli(['plugins', 'run', 'pslist', '--capture', cap.path]);
      expect(p.code).not.toBe(0);
      expect(p.stderr).toMatch(/ram\.raw: sha256 mismatch/);
    } finally {
      await flipByte(join(cap.path, RAM_PART), 12345);
    }
  });

  it('no space left while creating: one error naming the part, no artifact, guest resumed', async () => {
    // A 100 MiB tmpfs: the boot files fit, ram.raw (256 MiB) does not. Needs mount rights.
    const small = join(work, 'small');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(small);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=100M', 'tmpfs', small], { stdio: 'pipe' });
    } catch (e) {
      const why = (e as { stderr?: Buffer }).stderr?.toString().trim() || String(e);
      throw new Error(`the ENOSPC case needs a 100 MiB tmpfs and mount refused it (run as root): ${why}`, {
        cause: e,
      });
    }
    try {
      guest = await labUp({ name: NAME });
      const target = join(small, 'full.vmicap');
      await expect(createCapture({ qmpSocket: guest.qmpSocket, output: target })).rejects.toThrow(
        /^ram\.raw: no space left on device \(ENOSPC\)$/,
      );
      expect(readdirSync(small)).toEqual([]);
      const qmp = await QmpClient.connect(guest.qmpSocket);
      try {
        expect((await qmp.execute<{ status: string }>('query-status')).status).toBe('running');
      } finally {
        qmp.close();
      }
      expect((await guestSh(guest, 'echo alive')).trim()).toBe('alive');
      expect(readdirSync('/dev/shm').filter((f) => f.startsWith(`vmi-capture-${process.pid}-`))).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
  });

  it('a capture killed with SIGKILL mid-way leaves no artifact that verifies; the next one resumes the guest', async () => {
    requireBuilt('dist/commands/capture/create.js');
    guest = await labUp({ name: NAME });
    const target = join(work, 'killed.vmicap');
    // The kill must land between the device-state migration (devstate.bin written into
    // the partial directory) and the rename into place; if it lands late (a loaded host
    // let the capture finish), try again, and fail saying so after 3 tries.
    let killed: { pid: number; partial: string } | undefined;
    const tries: string[] = [];
    for (let attempt = 0; attempt < 3 && !killed; attempt++) {
      const child = spawn(process.execPath, [CLI, 'capture', 'create', '--guest', NAME, '-o', target], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      const partial = join(work, `.killed.vmicap.partial-${child.pid}`);
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && child.exitCode === null && !existsSync(join(partial, DEVSTATE_PART)))
        await new Promise((r) => setTimeout(r, 2));
      child.kill('SIGKILL');
      await exited;
      const landed = child.signalCode === 'SIGKILL' && existsSync(partial) && !existsSync(target);
      tries.push(
        `try ${attempt + 1}: signal ${child.signalCode}, exit ${child.exitCode}, partial ${existsSync(partial)}, ` +
          `artifact ${existsSync(target)}, status ${await qmpStatus(guest.qmpSocket)}; ${stderr.trim()}`,
      );
      if (landed) killed = { pid: child.pid!, partial };
      else await rm(target, { recursive: true, force: true });
    }
    expect(killed, `the SIGKILL never landed mid-capture:\n${tries.join('\n')}`).toBeDefined();
    report.afterSigkill = tries[tries.length - 1];
    expect(existsSync(target)).toBe(false);
    await expect(verifyCapture(killed!.partial)).rejects.toThrow(/incomplete/);
    await expect(verifyCapture(target)).rejects.toThrow(/no such capture/);
    // A SIGKILLed capture cannot resume the guest itself: it may be left paused. The next
    // capture to that name resumes a guest it left paused, sweeps the dead partial dir and
    // its /dev/shm staging file, and succeeds.
    const next = await createCapture({ qmpSocket: guest.qmpSocket, output: target });
    expect(await qmpStatus(guest.qmpSocket)).toBe('running');
    // And the guest itself runs: its shell answers and its clock moves.
    const uptime = async (): Promise<number> =>
      Number((await guestSh(guest, 'cat /proc/uptime')).split(' ')[0]);
    const u0 = await uptime();
    await new Promise((r) => setTimeout(r, 1000));
    expect(await uptime()).toBeGreaterThan(u0 + 0.5);
    expect(readdirSync(work).filter((f) => f.includes('partial'))).toEqual([]);
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith(`vmi-capture-${killed!.pid}-`))).toEqual([]);
    await verifyCapture(next.path);
  });

  it('full-stream path (no shared RAM assumed): RAM rebuilt from the stream is the guest RAM, and replays', async () => {
    guest = await labUp({ name: NAME });
    // QEMU's QMP socket serves one client at a time: connect per step.
    const qmpDo = async <T>(cmd: string): Promise<T> => {
      const q = await QmpClient.connect(guest.qmpSocket);
      try {
        return await q.execute<T>(cmd);
      } finally {
        q.close();
      }
    };
    let full: CreateCaptureResult;
    try {
      // Paused by us, so the RAM file and the stream hold the same bytes; left paused by the capture.
      await qmpDo('stop');
      full = await createCapture({
        qmpSocket: guest.qmpSocket,
        output: join(work, 'full.vmicap'),
        full: true,
      });
      expect((await qmpDo<{ status: string }>('query-status')).status).not.toBe('running');
      // ram.raw's digest is the sparse one (test/unit/capture-sparse.test.ts checks it
      // against an independent computation): the same digest of the guest's RAM file.
      const ramNow = await hashFile(guest.ramFile!, undefined, 'sha256-sparse');
      expect(full.manifest.parts[RAM_PART].sha256).toBe(ramNow.sha256);
      expect(full.manifest.parts[RAM_PART].digest).toBe('sha256-sparse');
    } finally {
      await qmpDo('cont');
    }
    expect(full.manifest.mode).toBe('full-stream');
    report.fullStream = `pause ${full.pauseMs.toFixed(0)} ms, devstate ${full.manifest.parts[DEVSTATE_PART].size} bytes, RAM rebuilt in ${full.manifest.timing.copyMs.toFixed(0)} ms`;
    const t = await withReplay(full.path, async (r) => {
      expect(r.guest.captureId).toBe(full.manifest.id);
      return (await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }])).tables[0];
    });
    expect(t.errors).toEqual([]);
    expect(records(t).some((r) => r.PID === 1)).toBe(true);
  });
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
