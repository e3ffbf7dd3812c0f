/**
 * A foreign QEMU (ordinary RAM backend, attached with --qmp only) at doorbell speed: vmi
 * reads and writes its RAM inside the QEMU process (/proc/PID/mem at the addresses QEMU
 * gives for its RAM block). pslist and psaux through that doorbell must equal the guest's
 * own view (its console, never vmi's output). A vmi that may not ptrace QEMU (root
 * without CAP_SYS_PTRACE against a root QEMU, which holds every capability: the kernel's
 * cap_ptrace_access_check refuses it, as it refuses another user's QEMU) must say why in
 * one line and fall back to the trap transport, with the same table.
 */
import { readFile, rm } from 'node:fs/promises';
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
import { expectRowsMatchConsole, guestProcs, guestSh } from './helpers/guest-shell.js';

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
  });

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
});
