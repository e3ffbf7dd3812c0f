/**
 * The cross-view plugins against a real kernel rootkit (the lab's test fixture,
 * src/lab/guest-modules/vmi_testkit.c), on both kernel series of the lab: 6.1 and 6.12
 * (Debian's amd64 flavour; the module is built against each one's headers). A clean lab
 * guest: no row flagged by psxview, sockxview, modxview or check_syscall. An infected one: the test starts a process and a
 * TCP listener, loads the module from the console telling it to hide both and itself, and
 * proves from the guest's own shell that it does (`ls /proc` lacks the PID while
 * `kill -0` finds it; /proc/net/tcp lacks the port; /proc/modules lacks the module while
 * the kernel's taint shows it). Then each plugin must flag exactly what was hidden, live
 * and on a capture of the infected guest replayed in a clone. The sys_call_table rewrite
 * is made on 6.1 only (the scope): on 6.12 check_syscall must flag nothing.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCapture } from '../../src/capture/create.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { checkIdt } from '../../src/plugins/check-idt.js';
import { checkSyscall } from '../../src/plugins/check-syscall.js';
import { tracing } from '../../src/plugins/tracing.js';
import { modxview } from '../../src/plugins/modxview.js';
import { psxview } from '../../src/plugins/psxview.js';
import { sockxview } from '../../src/plugins/sockxview.js';
import { runPluginsOnGuest, type PluginRequest } from '../../src/runner/run-plugins.js';
import { withReplay } from '../../src/targets/capture.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import { records } from '../helpers/records.js';
import { guestRun, guestSh } from './helpers/guest-shell.js';

/** Kernel aliases (src/lab/kernel.ts): one clean and one infected guest each. */
const KERNELS = ['6.1', '6.12'] as const;
const tag = (kernel: string) => kernel.replace(/\./g, '');
/** The sys_call_table rewrite is asked for on 6.1 only (issue 15). */
const hooksSyscall = (kernel: string) => kernel === '6.1';
const PORT = 4444;
/** __NR_sysfs: the entry vmi_testkit rewrites with hook_syscall=1. */
const SYSFS_NR = 139;
/** kernel/panic.c: TAINT_OOT_MODULE (O) and TAINT_UNSIGNED_MODULE (E). */
const TAINT_O = 1 << 12;
const TAINT_E = 1 << 13;

const requests: PluginRequest[] = [psxview, sockxview, modxview, checkSyscall].map((plugin) => ({
  plugin,
  options: {},
}));

type Rec = Record<string, RowValue>;
const byPlugin = (tables: ResultTable[]): Record<string, Rec[]> =>
  Object.fromEntries(tables.map((t) => [t.plugin, records(t)]));
const flagged = (rows: Rec[]) => rows.filter((r) => r.HIDDEN === true || r.HOOKED === true);

/** Every view's count of rows that see the thing, per plugin (printed by the tests). */
function counts(rows: Rec[]): Record<string, number> {
  const out: Record<string, number> = { rows: rows.length, flagged: flagged(rows).length };
  for (const r of rows)
    for (const [k, v] of Object.entries(r))
      if (v === true && k !== 'HIDDEN' && k !== 'HOOKED') out[k] = (out[k] ?? 0) + 1;
  return out;
}

// ---- check_idt and tracing (their own requests, helpers and `it` blocks) ----

const idtTracing: PluginRequest[] = [checkIdt, tracing].map((plugin) => ({ plugin, options: {} }));

/** check_idt and tracing on a guest (live or replay clone), with no failure and no table error. */
async function runIdtTracing(
  guest: LabGuest | InspectedGuest,
  where: string,
  more: PluginRequest['plugin'][] = [],
): Promise<Record<string, Rec[]>> {
  const run = await runPluginsOnGuest(guest, [
    ...idtTracing,
    ...more.map((plugin) => ({ plugin, options: {} })),
  ]);
  expect(run.failures.map((f) => `${f.plugin}: ${f.message}`)).toEqual([]);
  for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
  const got = byPlugin(run.tables);
  console.log(`${where}, ms per plugin:`, run.pluginMs);
  for (const [plugin, rows] of Object.entries(got)) console.log(`${where} ${plugin}:`, counts(rows));
  return got;
}

/**
 * The guest's own enabled_functions, by its console: tracefs mounted only inside a private
 * mount namespace of one shell (busybox unshare -m), gone when it exits. Lines
 * `function (count) flags \ttramp: … (callback [module]) …`.
 */
async function guestEnabledFunctions(guest: LabGuest): Promise<string[]> {
  const out = await guestSh(
    guest,
    `unshare -m sh -c 'mkdir -p /tmp/vmi-truth-tracefs && mount -t tracefs none /tmp/vmi-truth-tracefs && cat /tmp/vmi-truth-tracefs/enabled_functions; echo END'`,
  );
  const lines = out.split('\n');
  expect(lines).toContain('END');
  return lines.filter((l) => /^\S+ \(\d+\)/.test(l));
}

/** check_idt's sound answer, against the guest's kallsyms (read by its console). */
async function expectSoundIdt(guest: LabGuest, idt: Rec[], where: string): Promise<void> {
  expect(flagged(idt), `${where} check_idt`).toEqual([]);
  const present = idt.filter((r) => r.Present === true);
  expect(present.length, `${where} present gates`).toBeGreaterThan(200);
  const ks = await guestSh(guest, "grep -E ' (asm_exc_divide_error|asm_exc_page_fault)$' /proc/kallsyms");
  const addr = (name: string) => BigInt('0x' + new RegExp(`^([0-9a-f]+) \\w ${name}$`, 'm').exec(ks)![1]);
  // Vector 0 is #DE, vector 14 #PF (arch/x86/kernel/idt.c def_idts).
  expect(idt.find((r) => r.Index === 0)).toMatchObject({
    Address: addr('asm_exc_divide_error'),
    Module: 'kernel',
  });
  expect(idt.find((r) => r.Index === 14)).toMatchObject({
    Address: addr('asm_exc_page_fault'),
    Module: 'kernel',
  });
}

describe.each(KERNELS)('cross-view checks on a clean lab guest, kernel %s', (kernel) => {
  const CLEAN = `xv2-clean-${tag(kernel)}`;
  let guest: LabGuest;
  let got: Record<string, Rec[]>;

  beforeAll(async () => {
    await labDown(CLEAN);
    guest = await labUp({ name: CLEAN, kernel });
    const run = await runPluginsOnGuest(guest, requests);
    expect(run.failures.map((f) => `${f.plugin}: ${f.message}`)).toEqual([]);
    for (const t of run.tables) expect(t.errors, t.plugin).toEqual([]);
    got = byPlugin(run.tables);
    console.log('clean guest, ms per plugin:', run.pluginMs);
  }, 300_000);

  afterAll(async () => {
    await labDown(CLEAN);
  });

  it('flags nothing in psxview, sockxview, modxview or check_syscall', () => {
    for (const [plugin, rows] of Object.entries(got)) {
      console.log(`clean ${plugin}:`, counts(rows));
      expect(flagged(rows), plugin).toEqual([]);
    }
  });

  it('exercises every view: sock_diag answers (the diag modules are loaded), the code scan sees module code', async () => {
    const lsmod = await guestSh(guest, 'cat /proc/modules');
    for (const m of ['inet_diag', 'tcp_diag', 'udp_diag', 'unix_diag'])
      expect(lsmod).toMatch(new RegExp(`^${m} `, 'm'));
    expect(got.sockxview.filter((r) => r.sock_diag === true).length).toBeGreaterThan(2);
    const modules = got.modxview.filter((r) => r['In procfs'] === true);
    expect(modules.map((r) => r.Name).sort()).toEqual(
      lsmod
        .split('\n')
        .map((l) => l.split(' ')[0])
        .filter(Boolean)
        .sort(),
    );
    for (const r of modules)
      expect([r.Name, r['In sysfs'], r['In kallsyms'], r['In code scan']]).toEqual([
        r.Name,
        true,
        true,
        true,
      ]);
    // 64-bit table: at least every syscall up to the newest of 6.1.
    expect(got.check_syscall.length).toBeGreaterThanOrEqual(451);
  });

  it('check_idt and tracing flag nothing; tracing matches the guest’s enabled_functions and mounts nothing', async () => {
    const mountsBefore = await guestSh(guest, 'cat /proc/mounts');
    expect(mountsBefore).not.toMatch(/ tracefs | debugfs /);
    const got = await runIdtTracing(guest, 'clean');
    await expectSoundIdt(guest, got.check_idt, 'clean');
    expect(flagged(got.tracing), 'clean tracing').toEqual([]);
    // Every source was read (detached mounts of tracefs and debugfs).
    expect(got.tracing.filter((r) => r.Kind === 'unavailable')).toEqual([]);
    const truth = await guestEnabledFunctions(guest);
    expect(got.tracing.filter((r) => r.Kind === 'ftrace').length).toBeGreaterThanOrEqual(truth.length);
    // The guest's mounts are as they were.
    expect(await guestSh(guest, 'cat /proc/mounts')).toBe(mountsBefore);
  }, 300_000);
});

describe.each(KERNELS)('cross-view checks against the test rootkit, kernel %s', (kernel) => {
  const INFECTED = `xv2-rk-${tag(kernel)}`;
  const hookSyscall = hooksSyscall(kernel);
  let guest: LabGuest;
  let work: string;
  let pid = 0;
  /** Inodes of the hidden listener's sockets, from the guest's shell (ls -l /proc/PID/fd). */
  let listenerInodes: bigint[] = [];
  let live: Record<string, Rec[]>;
  /** How the kernel dispatches syscalls, from the guest's shell (x64_sys_call in kallsyms). */
  let dispatch = '';

  beforeAll(async () => {
    await labDown(INFECTED);
    work = await mkdtemp(join(tmpdir(), 'vmi-rootkit-test-'));
    guest = await labUp({ name: INFECTED, kernel, rootkit: true });
    pid = Number((await guestSh(guest, 'sleep 100000 </dev/null >/dev/null 2>&1 & echo $!')).trim());
    const httpd = Number(
      (
        await guestSh(guest, `httpd -f -p 127.0.0.1:${PORT} -h /var/www </dev/null >/dev/null 2>&1 & echo $!`)
      ).trim(),
    );
    // Positive controls, before the module: the guest shows both.
    expect(await guestSh(guest, 'ls /proc')).toMatch(new RegExp(`(^|\\s)${pid}(\\s|$)`));
    let tcp = '';
    for (let i = 0; i < 20 && !/:115C 00000000:0000 0A/.test(tcp); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 500));
      tcp = await guestSh(guest, 'cat /proc/net/tcp');
    }
    expect(tcp).toMatch(/:115C 00000000:0000 0A/);
    const fds = await guestSh(guest, `ls -l /proc/${httpd}/fd`);
    listenerInodes = [...fds.matchAll(/socket:\[(\d+)\]/g)].map((m) => BigInt(m[1]));
    expect(listenerInodes.length).toBeGreaterThan(0);
    dispatch =
      (await guestRun(guest, "grep -q ' x64_sys_call$' /proc/kallsyms")).status === 0
        ? 'x64_sys_call'
        : 'sys_call_table';
    await guestSh(
      guest,
      `insmod /lib/modules/$(uname -r)/extra/vmi_testkit.ko hide_pid=${pid} hide_port=${PORT} hook_syscall=${hookSyscall ? 1 : 0}`,
    );
  }, 600_000);

  afterAll(async () => {
    await labDown(INFECTED);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('the rootkit works, by the guest’s own shell', async () => {
    expect(await guestSh(guest, 'ls /proc')).not.toMatch(new RegExp(`(^|\\s)${pid}(\\s|$)`));
    expect((await guestRun(guest, `kill -0 ${pid}`)).status).toBe(0);
    expect(await guestSh(guest, 'cat /proc/net/tcp')).not.toMatch(/:115C /);
    expect(await guestSh(guest, 'cat /proc/modules')).not.toMatch(/vmi_testkit/);
    expect((await guestRun(guest, 'test -e /sys/module/vmi_testkit')).status).not.toBe(0);
    const taint = Number((await guestSh(guest, 'cat /proc/sys/kernel/tainted')).trim());
    expect(taint & (TAINT_O | TAINT_E)).toBe(TAINT_O | TAINT_E);
  });

  /** What each plugin must flag: exactly what the test told the module to hide. */
  function expectFindings(got: Record<string, Rec[]>, where: string): void {
    for (const [plugin, rows] of Object.entries(got)) console.log(`${where} ${plugin}:`, counts(rows));
    const ps = flagged(got.psxview);
    expect(
      ps.map((r) => r.PID),
      `${where} psxview`,
    ).toEqual([pid]);
    expect(ps[0]).toMatchObject({ proc_listing: false, proc_probe: true, getsid: true, COMM: 'sleep' });
    expect(String(ps[0].EVIDENCE)).toMatch(/proc_listing/);

    const socks = flagged(got.sockxview);
    expect(socks.length, `${where} sockxview`).toBeGreaterThan(0);
    expect(socks.map((r) => r.Inode).sort(), `${where} sockxview`).toEqual([...listenerInodes].sort());
    for (const r of socks) expect(r).toMatchObject({ proc_net: false, sock_diag: true, fd_table: true });
    expect(String(socks[0].EVIDENCE)).toMatch(/missing from proc_net/);

    const mods = flagged(got.modxview);
    const named = mods.find((r) => r.Name === 'vmi_testkit');
    expect(named, `${where} modxview names the module (kallsyms)`).toMatchObject({
      'In procfs': false,
      'In sysfs': false,
      'In kallsyms': true,
    });
    const code = mods.filter((r) => r.Name === '?');
    expect(code.length, `${where} modxview: unclaimed module code`).toBeGreaterThan(0);
    for (const r of code) expect(String(r.EVIDENCE)).toMatch(/no listed module claims.*taint .*OE/);
    expect(mods.length).toBe(1 + code.length);

    const sys = flagged(got.check_syscall);
    expect(
      sys.map((r) => [r.Index, r.Syscall]),
      `${where} check_syscall`,
    ).toEqual(hookSyscall ? [[SYSFS_NR, 'sysfs']] : []);
    // Both Debian kernels dispatch through x64_sys_call (6.1.85+ backport, 6.9+): said per row.
    for (const r of got.check_syscall) expect(r.Dispatch).toBe(dispatch);
    if (!hookSyscall) return;
    const target = sys[0]['Handler Address'] as bigint;
    // The rewritten entry points into the hidden module's code the code scan found.
    expect(
      code.some(
        (r) => target >= (r.Address as bigint) && target < (r.Address as bigint) + BigInt(r.Size as number),
      ),
    ).toBe(true);
  }

  it('psxview, sockxview, modxview and check_syscall flag exactly what was hidden', async () => {
    const run = await runPluginsOnGuest(guest, requests);
    expect(run.failures.map((f) => `${f.plugin}: ${f.message}`)).toEqual([]);
    live = byPlugin(run.tables);
    console.log('infected guest, ms per plugin:', run.pluginMs);
    expectFindings(live, 'live');
  }, 300_000);

  it('the same findings on a capture of the infected guest, replayed', async () => {
    const cap = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'rk.vmicap'),
      guestName: guest.name,
      kernelRelease: guest.kernelRelease,
    });
    const replayed = await withReplay(cap.path, async (replay) => {
      const r = await runPluginsOnGuest(replay.guest, requests);
      expect(r.failures.map((f) => `${f.plugin}: ${f.message}`)).toEqual([]);
      for (const t of r.tables) expect(t.metadata.source).toBe('capture');
      return byPlugin(r.tables);
    });
    expectFindings(replayed, 'replay');
    // Same module code at the same address, same table entry.
    expect(flagged(replayed.check_syscall).map((r) => r['Handler Address'])).toEqual(
      flagged(live.check_syscall).map((r) => r['Handler Address']),
    );
  }, 300_000);

  /** tracing's rows for the rootkit's hooks, checked against the guest's own enabled_functions. */
  function expectRootkitHooks(rows: Rec[], truth: string[], where: string): void {
    const hooked = flagged(rows);
    // Truth: the functions the guest's enabled_functions lists (the module hooks
    // __x64_sys_getdents64 and tcp4_seq_show, src/lab/guest-modules/vmi_testkit.c).
    const truthFns = truth.map((l) => l.split(' ')[0]).sort();
    expect(truthFns).toEqual(['__x64_sys_getdents64', 'tcp4_seq_show']);
    expect(hooked.map((r) => r.Function).sort(), `${where} tracing`).toEqual(truthFns);
    for (const r of hooked) {
      const line = truth.find((l) => l.startsWith(`${String(r.Function)} `))!;
      // The kernel names the callback's module through its module tree, which the hidden
      // module is still in: the guest's line says [vmi_testkit], and so must the row.
      const named = /\[vmi_testkit\]/.test(line);
      expect(r, `${where} ${String(r.Function)}`).toMatchObject({
        Kind: 'ftrace',
        Module: named ? 'vmi_testkit' : '?',
        HOOKED: true,
      });
      expect(String(r.Flags)).toMatch(/I/);
      expect(String(r.EVIDENCE)).toMatch(
        named ? /vmi_testkit, which \/proc\/modules does not list/ : /no listed module/,
      );
    }
  }

  it('tracing lists the rootkit’s ftrace hooks, attributed to the hidden module; check_idt flags nothing (live and replay)', async () => {
    const got = await runIdtTracing(guest, 'infected', [modxview]);
    const truth = await guestEnabledFunctions(guest);
    console.log('guest enabled_functions:', truth);
    expectRootkitHooks(got.tracing, truth, 'live');
    await expectSoundIdt(guest, got.check_idt, 'live');
    // The callbacks live in the module code modxview found unclaimed (host page walk).
    const code = flagged(got.modxview).filter((r) => r.Name === '?');
    expect(code.length).toBeGreaterThan(0);
    for (const r of flagged(got.tracing)) {
      const a = r['Callback Address'];
      if (typeof a === 'bigint')
        expect(
          code.some(
            (c) => a >= (c.Address as bigint) && a < (c.Address as bigint) + BigInt(c.Size as number),
          ),
          `${String(r.Function)} callback 0x${a.toString(16)} in unclaimed module code`,
        ).toBe(true);
    }

    const cap = await createCapture({
      qmpSocket: guest.qmpSocket,
      output: join(work, 'rk-idt-tracing.vmicap'),
      guestName: guest.name,
      kernelRelease: guest.kernelRelease,
    });
    const replayed = await withReplay(cap.path, (replay) => runIdtTracing(replay.guest, 'replay'));
    expectRootkitHooks(replayed.tracing, truth, 'replay');
    await expectSoundIdt(guest, replayed.check_idt, 'replay');
    expect(replayed.check_idt.map((r) => r.Address)).toEqual(got.check_idt.map((r) => r.Address));
  }, 400_000);
});
