/**
 * Guests of every memory size and layout (issue 20): lab guests whose RAM QEMU splits
 * around the PCI hole (q35 at 3, 4 and 8 GiB, i440fx at 4 GiB), with two vCPUs, with two
 * NUMA nodes in two memory backends. On each, pslist and psaux must equal what the
 * guest's own shell shows (ground truth from the console, never vmi's output), and the
 * layout vmi learnt from QEMU must agree with the guest kernel's /proc/iomem. The 8 GiB
 * guest is captured; the capture replays, and its ELF export has one PT_LOAD per RAM
 * range, matching the guest's System RAM. RAM files are sparse: an 8 GiB guest must not
 * cost the host 8 GiB.
 */
import { lstat, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createCapture } from '../../src/capture/create.js';
import { parseElfCore, PT_LOAD } from '../../src/capture/elf-core.js';
import { exportCapture } from '../../src/capture/export.js';
import { labDown, labUp, type LabGuest, type LabUpOptions } from '../../src/lab/lab.js';
import type { ResultTable } from '../../src/output/table.js';
import { psaux } from '../../src/plugins/psaux.js';
import { pslist } from '../../src/plugins/pslist.js';
import type { RamRange } from '../../src/qemu/ram-map.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import { withReplay } from '../../src/targets/capture.js';
import { records } from '../helpers/records.js';
import { expectRowsMatchConsole, guestProcs, guestSh, type GuestProc } from './helpers/guest-shell.js';

const GiB = 1024 ** 3;
const report: Record<string, string> = {};

/** System RAM ranges of the guest's /proc/iomem, read by its root shell: [start, end] inclusive. */
async function iomemSystemRam(guest: LabGuest): Promise<{ start: number; end: number }[]> {
  const out = await guestSh(guest, "grep 'System RAM' /proc/iomem");
  return out
    .split('\n')
    .map((l) => /^\s*([0-9a-f]+)-([0-9a-f]+) : System RAM/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ start: parseInt(m[1], 16), end: parseInt(m[2], 16) }));
}

/**
 * vmi's ranges against the kernel's System RAM: every System RAM range lies inside one
 * range, every range holds System RAM, the ranges hold exactly the guest's RAM size,
 * and above 4 GiB (no firmware reservations there) they are equal.
 */
function expectLayoutMatchesIomem(
  ranges: readonly { gpa: number; size: number }[],
  ram: { start: number; end: number }[],
  bytes: number,
  what: string,
): void {
  expect(ram.length, `${what}: /proc/iomem has System RAM`).toBeGreaterThan(0);
  for (const r of ram) {
    const inside = ranges.filter((x) => x.gpa <= r.start && r.end < x.gpa + x.size);
    expect(
      inside,
      `${what}: System RAM 0x${r.start.toString(16)}-0x${r.end.toString(16)} inside one range`,
    ).toHaveLength(1);
  }
  for (const x of ranges) {
    expect(
      ram.some((r) => x.gpa <= r.start && r.end < x.gpa + x.size),
      `${what}: range 0x${x.gpa.toString(16)} holds System RAM`,
    ).toBe(true);
    if (x.gpa >= 4 * GiB)
      expect(ram, `${what}: range above 4 GiB`).toContainEqual({ start: x.gpa, end: x.gpa + x.size - 1 });
  }
  expect(
    ranges.reduce((a, x) => a + x.size, 0),
    `${what}: bytes in all ranges`,
  ).toBe(bytes);
}

/** Every process's command line as the guest's shell reads it (NULs as spaces). */
async function guestCmdlines(guest: LabGuest): Promise<Map<number, string>> {
  const out = await guestSh(
    guest,
    `for d in /proc/[0-9]*; do a=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; echo "\${d#/proc/}|$a"; done`,
  );
  const m = new Map<number, string>();
  for (const line of out.split('\n')) {
    const r = /^(\d+)\|(.*)$/.exec(line.replace(/\r$/, ''));
    if (r) m.set(Number(r[1]), r[2].trim());
  }
  return m;
}

function expectMatchesConsole(
  t: ResultTable,
  before: Map<number, GuestProc>,
  after: Map<number, GuestProc>,
  shadowPid: number,
  what: string,
): number {
  expect(t.errors, what).toEqual([]);
  return expectRowsMatchConsole(
    records(t).filter((r) => r.PID !== shadowPid),
    before,
    after,
    what,
  );
}

/** pslist and psaux in one attach, each checked against the guest's console. */
async function expectPluginsMatchConsole(guest: LabGuest, what: string): Promise<void> {
  const before = await guestProcs(guest);
  const cmdlines = await guestCmdlines(guest);
  const t0 = performance.now();
  const run = await runPluginsOnGuest(guest, [
    { plugin: pslist, options: {} },
    { plugin: psaux, options: {} },
  ]);
  report[what] =
    `attach ${run.session.attachMs.toFixed(0)} ms, pslist ${run.pluginMs.pslist?.toFixed(0)} ms, total ${(performance.now() - t0).toFixed(0)} ms`;
  const after = await guestProcs(guest);
  const [ps, aux] = run.tables;
  expectMatchesConsole(ps, before, after, run.session.shadowPid, `${what} pslist`);
  expectMatchesConsole(aux, before, after, run.session.shadowPid, `${what} psaux`);
  let args = 0;
  for (const r of records(aux)) {
    const want = cmdlines.get(r.PID as number);
    if (!want || after.get(r.PID as number)?.comm !== before.get(r.PID as number)?.comm) continue;
    expect(r.ARGS, `${what}: psaux ARGS of ${String(r.PID)}`).toBe(want);
    args++;
  }
  expect(args, `${what}: command lines compared`).toBeGreaterThan(10);
}

/** Host bytes the guest's RAM files take (allocated blocks, not their size). */
async function allocatedBytes(guest: LabGuest): Promise<number> {
  let n = 0;
  for (const f of Object.values(guest.ramFiles ?? {})) n += (await lstat(f)).blocks * 512;
  return n;
}

interface Case {
  what: string;
  opts: LabUpOptions;
  /** RAM blocks and the guest-physical start of each range vmi must learn. */
  want: Pick<RamRange, 'gpa' | 'block'>[];
}

const CASES: Case[] = [
  {
    what: 'q35 3 GiB',
    opts: { name: 't-mem-q35-3g', memMiB: 3072 },
    want: [
      { gpa: 0, block: 'm' },
      { gpa: 4 * GiB, block: 'm' },
    ],
  },
  {
    what: 'q35 4 GiB, 2 vCPUs',
    opts: { name: 't-mem-q35-4g', memMiB: 4096, cpus: 2 },
    want: [
      { gpa: 0, block: 'm' },
      { gpa: 4 * GiB, block: 'm' },
    ],
  },
  {
    what: 'q35 4 GiB, two NUMA nodes',
    opts: { name: 't-mem-numa', memMiB: 4096, cpus: 2, numaNodes: 2 },
    want: [
      { gpa: 0, block: 'm0' },
      { gpa: 4 * GiB, block: 'm1' },
    ],
  },
  {
    what: 'i440fx 4 GiB',
    opts: { name: 't-mem-pc-4g', memMiB: 4096, machine: 'pc' },
    want: [
      { gpa: 0, block: 'm' },
      { gpa: 4 * GiB, block: 'm' },
    ],
  },
];

describe('guests of every memory size and layout', () => {
  afterAll(() => console.log('memory layouts:', report));

  for (const c of CASES) {
    it(c.what, { timeout: 600_000 }, async () => {
      const name = c.opts.name!;
      await labDown(name);
      try {
        const t0 = performance.now();
        const guest = await labUp(c.opts);
        report[`${c.what} boot`] = `${((performance.now() - t0) / 1000).toFixed(1)} s`;
        const ranges = guest.ram ?? [];
        expect(
          ranges.map((r) => ({ gpa: r.gpa, block: r.block })),
          c.what,
        ).toEqual(c.want);
        expectLayoutMatchesIomem(ranges, await iomemSystemRam(guest), c.opts.memMiB! * 1024 * 1024, c.what);
        if (c.opts.numaNodes)
          expect(
            (await guestSh(guest, 'cat /sys/devices/system/node/online')).trim(),
            'nodes the guest sees',
          ).toBe('0-1');
        await expectPluginsMatchConsole(guest, c.what);
      } finally {
        await labDown(name);
      }
    });
  }

  it(
    'q35 8 GiB: plugins, a capture that replays, an ELF export whose PT_LOADs are the System RAM',
    { timeout: 900_000 },
    async () => {
      const name = 't-mem-q35-8g';
      await labDown(name);
      const work = await mkdtemp(join(tmpdir(), 'vmi-mem8-'));
      try {
        const guest = await labUp({ name, memMiB: 8192 });
        const iomem = await iomemSystemRam(guest);
        expectLayoutMatchesIomem(guest.ram ?? [], iomem, 8 * GiB, '8 GiB');
        await expectPluginsMatchConsole(guest, 'q35 8 GiB');
        // Sparse: the host holds what the guest touched, far from 8 GiB.
        const held = await allocatedBytes(guest);
        report['8 GiB RAM file allocated'] = `${(held / 2 ** 20).toFixed(0)} MiB`;
        expect(held).toBeLessThan(2 * GiB);

        const before = await guestProcs(guest);
        const cap = await createCapture({
          qmpSocket: guest.qmpSocket,
          output: join(work, 'big.vmicap'),
          guestName: name,
        });
        const after = await guestProcs(guest);
        report['8 GiB capture'] =
          `${(cap.totalMs / 1000).toFixed(1)} s, paused ${cap.pauseMs.toFixed(0)} ms, ${(cap.bytes / 2 ** 20).toFixed(0)} MiB listed`;
        expect(cap.manifest.ram.map((r) => r.gpa)).toEqual([0, 4 * GiB]);
        expect((await lstat(join(cap.path, 'ram.raw'))).blocks * 512).toBeLessThan(2 * GiB);

        const replayed = await withReplay(cap.path, async (r) => {
          const run = await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }]);
          return { table: run.tables[0], shadowPid: run.session.shadowPid };
        });
        expectMatchesConsole(replayed.table, before, after, replayed.shadowPid, '8 GiB replay pslist');

        const elf = join(work, 'big.elf');
        await exportCapture(cap.path, 'elf', elf);
        const head = Buffer.alloc(4096);
        const fh = await open(elf, 'r');
        try {
          await fh.read(head, 0, head.length, 0);
        } finally {
          await fh.close();
        }
        const load = parseElfCore(head).phdrs.filter((p) => p.type === PT_LOAD);
        const segments = load.map((p) => ({ gpa: Number(p.paddr), size: Number(p.filesz) }));
        expectLayoutMatchesIomem(segments, iomem, 8 * GiB, '8 GiB ELF export');
        expect((await stat(elf)).blocks * 512, 'ELF export is sparse').toBeLessThan(2 * GiB);
      } finally {
        await labDown(name);
        await rm(work, { recursive: true, force: true });
      }
    },
  );
});
