/**
 * A foreign QEMU (ordinary RAM backend, attached with --qmp only) at doorbell speed: vmi
 * reads and writes its RAM inside the QEMU process (/proc/PID/mem at the addresses QEMU
 * gives for its RAM block). pslist and psaux through that doorbell must equal the guest's
 * own view (its console, never vmi's output). A vmi that may not ptrace QEMU (root
 * without CAP_SYS_PTRACE against a root QEMU, which holds every capability: the kernel's
 * cap_ptrace_access_check refuses it, as it refuses another user's QEMU) must say why in
 * one line and fall back to the trap transport, with the same table.
 *
 * Captures of that guest read its RAM the same way during the pause
 * (src/capture/ram-from-process.ts): the replayed pslist equals the console's process
 * list recorded just before `capture create`, a process started after it is absent, and
 * `capture verify` passes. Without ptrace rights (CAP_SYS_PTRACE dropped, as above) the
 * capture falls back to the full migration stream and says so on stderr and in the manifest.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabGuest } from '../../src/lab/lab.js';
import { ProcessMemory } from '../../src/memory/process-memory.js';
import { RamLayout } from '../../src/memory/ram-layout.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import { findSocketServer } from '../../src/qemu/qemu-process.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import { openForeignGuest } from '../../src/targets/qmp.js';
import { records } from '../helpers/records.js';
import { requireBuilt, runProcess, VMI_BIN } from './helpers/cli.js';
import { foreignRunDir } from '../../src/targets/qmp.js';
import { bootForeignQemu, type ForeignQemu } from '../../src/lab/foreign-qemu.js';
import { readManifest } from '../../src/capture/artifact.js';
import { withReplay } from '../../src/targets/capture.js';
import { expectRowsMatchConsole, guestProcs, guestSh, type GuestProc } from './helpers/guest-shell.js';

/** comm of a process started in the guest after a capture (busybox under another name). */
const MARKER = 'vmiaftercap';

/** Drops CAP_SYS_PTRACE for good (bounding and inheritable sets) before running `cmd`. */
const NO_PTRACE = ['--bounding-set=-sys_ptrace', '--inh-caps=-sys_ptrace', '--'];

describe('foreign guest through QEMU process memory', () => {
  let vm: ForeignQemu;
  let guest: LabGuest;

  beforeAll(async () => {
    requireBuilt('dist/commands/plugins/run.js');
    vm = await bootForeignQemu();
    // The console helpers need only the serial socket.
    guest = { serialSocket: vm.serialSocket } as LabGuest;
  });
  afterAll(async () => {
    await vm?.stop();
    if (vm) await rm(foreignRunDir(vm.qmpSocket), { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
  });
  let work: string | undefined;

  /** A capture through the CLI (so its stderr is what a user reads), then verify and replay. */
  async function captureAndReplay(
    name: string,
    prefix: readonly string[],
  ): Promise<{
    stderr: string[];
    before: Map<number, GuestProc>;
    rows: Record<string, unknown>[];
    path: string;
    ms: number;
  }> {
    work ??= await mkdtemp(join(tmpdir(), 'vmi-foreign-cap-'));
    const path = join(work, name);
    const before = await guestProcs(guest);
    const r = await runProcess(
      prefix[0] ?? process.execPath,
      [
        ...prefix.slice(1),
        ...(prefix.length ? [process.execPath] : []),
        VMI_BIN,
        'capture',
        'create',
        '--qmp',
        vm.qmpSocket,
        '-o',
        path,
      ],
      { timeoutMs: 300_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    console.log(`${name}: ${r.stderr.trim()}`);
    // The guest runs again: a marker started now must not be in the capture.
    await guestSh(
      guest,
      `printf '#!/bin/sh\\nsleep 600\\n' > /tmp/${MARKER} && chmod +x /tmp/${MARKER} && (/tmp/${MARKER} >/dev/null 2>&1 &)`,
    );
    const after = await guestProcs(guest);
    expect(
      [...after.values()].some((p) => p.comm === MARKER),
      'the marker runs in the guest',
    ).toBe(true);
    const v = await runProcess(process.execPath, [VMI_BIN, 'capture', 'verify', path], {
      timeoutMs: 120_000,
    });
    expect(v.code, v.stderr).toBe(0);
    const rows = await withReplay(path, async (rp) => {
      const run = await runPluginsOnGuest(rp.guest, [{ plugin: pslist, options: {} }]);
      expect(run.tables[0].errors).toEqual([]);
      return records(run.tables[0]).filter((x) => x.PID !== run.session.shadowPid);
    });
    expect(
      rows.some((x) => x.COMM === MARKER),
      'a process started after the capture is in it',
    ).toBe(false);
    expectRowsMatchConsole(rows, before, after, `replayed pslist of ${name}`);
    await guestSh(guest, `killall ${MARKER}; rm -f /tmp/${MARKER}`);
    return { stderr: r.stderr.split('\n').filter((l) => l.trim()), before, rows, path, ms: r.ms };
  }

  it('finds the QEMU process and its RAM block exactly', async () => {
    expect(findSocketServer(vm.qmpSocket).pid).toBe(vm.qemu.pid);
    const f = await openForeignGuest(vm.qmpSocket);
    const host = f.endpoints.qemuRam;
    const ranges = f.endpoints.ram!;
    await f.close();
    expect(host, f.endpoints.qemuRamRefused).toBeDefined();
    expect(host!.pid).toBe(vm.qemu.pid);
    expect(Object.keys(host!.blockBases)).toEqual(['pc.ram']);
    // QEMU's own copy of 32 MiB of guest RAM (pmemsave, with the VM paused so that
    // nothing changes in between) must equal what vmi reads inside the QEMU process.
    const file = join(vm.dir, 'pmem.bin');
    const at = 0x100000;
    const size = 32 << 20;
    const qmp = await QmpClient.connect(vm.qmpSocket);
    const mem = new ProcessMemory(host!, new RamLayout(ranges), false);
    try {
      await qmp.execute('stop');
      await qmp.execute('pmemsave', { val: at, size, filename: file });
      const ours = await mem.read(BigInt(at), size);
      const theirs = await readFile(file);
      expect(theirs.length).toBe(size);
      expect(theirs.some((b) => b !== 0)).toBe(true);
      expect(ours.equals(theirs), 'RAM read through /proc/PID/mem equals QEMU pmemsave').toBe(true);
    } finally {
      await qmp.execute('cont').catch(() => undefined);
      qmp.close();
      mem.close();
    }
  });

  it('pslist and psaux through the process-memory doorbell equal the console view', async () => {
    const before = await guestProcs(guest);
    const f = await openForeignGuest(vm.qmpSocket);
    let run: Awaited<ReturnType<typeof runPluginsOnGuest>>;
    try {
      run = await runPluginsOnGuest(f.endpoints, [
        { plugin: pslist, options: {} },
        { plugin: psaux, options: {} },
      ]);
    } finally {
      await f.close();
    }
    const after = await guestProcs(guest);
    expect(run.session.transport).toBe('doorbell');
    expect(run.session.memory).toBe('qemu-process');
    expect(run.session.fallback).toBeUndefined();
    console.log(
      `foreign, process-memory doorbell: attach ${run.session.attachMs.toFixed(0)} ms, pslist ${run.pluginMs.pslist?.toFixed(1)} ms, ${run.session.batches} batches`,
    );
    const [ps, aux] = run.tables;
    expect(ps.errors).toEqual([]);
    expect(aux.errors).toEqual([]);
    const shadow = run.session.shadowPid;
    expectRowsMatchConsole(
      records(ps).filter((r) => r.PID !== shadow),
      before,
      after,
      'pslist',
    );
    expectRowsMatchConsole(
      records(aux).filter((r) => r.PID !== shadow),
      before,
      after,
      'psaux',
    );
    // Command lines as the guest reads them.
    const out = await guestSh(
      guest,
      `for d in /proc/[0-9]*; do a=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; echo "\${d#/proc/}|$a"; done`,
    );
    let args = 0;
    for (const line of out.split('\n')) {
      const m = /^(\d+)\|(.*)$/.exec(line.replace(/\r$/, ''));
      const row = m && records(aux).find((r) => r.PID === Number(m[1]));
      if (!m || !row || !m[2].trim() || after.get(Number(m[1]))?.comm !== before.get(Number(m[1]))?.comm)
        continue;
      expect(row.ARGS, `psaux ARGS of ${m[1]}`).toBe(m[2].trim());
      args++;
    }
    expect(args).toBeGreaterThan(10);
    // Nothing left behind.
    expect((await guestSh(guest, 'cat /proc/[0-9]*/comm')).includes('vmi-shadow')).toBe(false);
  });

  it('refuses a QEMU it may not ptrace in one line and falls back to trap', async () => {
    const pid = vm.qemu.pid!;
    // The set-up is what it claims: without CAP_SYS_PTRACE this root cannot open QEMU's
    // memory (with it, it can).
    const open = ['sh', '-c', `exec 3< /proc/${pid}/mem`];
    expect((await runProcess(open[0], open.slice(1))).code).toBe(0);
    const denied = await runProcess('setpriv', [...NO_PTRACE, ...open]);
    expect(denied.code, denied.stderr).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);

    const before = await guestProcs(guest);
    const cli = ['plugins', 'run', 'pslist', '--qmp', vm.qmpSocket, '-r', 'json'];
    const r = await runProcess('setpriv', [...NO_PTRACE, process.execPath, VMI_BIN, ...cli], {
      timeoutMs: 180_000,
    });
    const after = await guestProcs(guest);
    expect(r.code, r.stderr).toBe(0);
    const notes = r.stderr.split('\n').filter((l) => /transport trap/.test(l));
    expect(notes, r.stderr).toHaveLength(1);
    console.log(`no CAP_SYS_PTRACE: ${notes[0]} (${r.ms.toFixed(0)} ms)`);
    expect(notes[0]).toMatch(
      /^vmi: transport trap, not doorbell: no access to QEMU's memory \(pid \d+\): \/proc\/\d+\/mem: (EACCES|EPERM) \(needs ptrace rights over QEMU\)$/,
    );
    // The shadow is left out of pslist by default: every row is a guest process.
    expectRowsMatchConsole(
      JSON.parse(r.stdout) as Record<string, unknown>[],
      before,
      after,
      'pslist over trap',
    );

    // Asked for the doorbell explicitly: refused with one line, nonzero exit.
    const d = await runProcess(
      'setpriv',
      [...NO_PTRACE, process.execPath, VMI_BIN, ...cli, '--transport', 'doorbell'],
      { timeoutMs: 120_000 },
    );
    expect(d.code).not.toBe(0);
    const errors = d.stderr.split('\n').filter((l) => /doorbell/.test(l));
    expect(errors, d.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(/needs a shared RAM file or access to QEMU's memory/);
    console.log(`no CAP_SYS_PTRACE, --transport doorbell: ${errors[0]}`);
  });

  it("capture create reads the RAM in QEMU's memory during the pause; the replay is the guest at that instant", async () => {
    const c = await captureAndReplay('procmem.vmicap', []);
    const paths = c.stderr.filter((l) => /^vmi: RAM (read )?from /.test(l));
    expect(paths, c.stderr.join('\n')).toHaveLength(1);
    expect(paths[0]).toMatch(/^vmi: RAM read from QEMU's process memory \(pid \d+\): /);
    const m = await readManifest(c.path);
    expect(m.ramSource).toBe('process-memory');
    expect(m.mode).toBe('shared-ram');
    expect(m.ramSourceNote).toBeUndefined();
    // devstate.bin holds no page of the guest's RAM block: a few hundred KiB, not the RAM.
    expect(m.parts['devstate.bin'].size).toBeLessThan(4 << 20);
    expect(m.timing.pauseMs).toBeGreaterThan(0);
    console.log(
      `foreign capture via process memory: pause ${m.timing.pauseMs.toFixed(0)} ms (RAM read ${m.timing.copyMs.toFixed(0)} ms), migrate ${m.timing.migrateMs.toFixed(0)} ms, CLI ${c.ms.toFixed(0)} ms`,
    );
    expect((await guestSh(guest, 'cat /proc/[0-9]*/comm')).includes('vmi-shadow')).toBe(false);
  });

  it('capture create without ptrace rights falls back to the full migration stream, names the path, and replays', async () => {
    const c = await captureAndReplay('fullstream.vmicap', ['setpriv', ...NO_PTRACE]);
    const paths = c.stderr.filter((l) => /^vmi: RAM (read )?from /.test(l));
    expect(paths, c.stderr.join('\n')).toHaveLength(1);
    expect(paths[0]).toMatch(
      /^vmi: RAM from the full migration stream \(the guest is paused while it is written\), not QEMU's process memory: no access to QEMU's memory \(pid \d+\): \/proc\/\d+\/mem: (EACCES|EPERM)/,
    );
    const m = await readManifest(c.path);
    expect(m.ramSource).toBe('migration-stream');
    // Split after the guest resumed: ram.raw plus a devstate.bin without its pages, so a
    // replay clone (whose RAM block has its own name) loads it.
    expect(m.mode).toBe('shared-ram');
    expect(m.parts['devstate.bin'].size).toBeLessThan(4 << 20);
    expect(m.ramSourceNote).toMatch(/no access to QEMU's memory/);
    console.log(
      `foreign capture via the full stream (no CAP_SYS_PTRACE): pause ${m.timing.pauseMs.toFixed(0)} ms, CLI ${c.ms.toFixed(0)} ms`,
    );
  });
});
