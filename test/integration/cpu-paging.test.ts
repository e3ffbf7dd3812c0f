/**
 * The engine on different vCPU counts and paging modes: 2 vCPUs (one gdb thread each),
 * 4-level paging (a CPU model without la57), 5-level paging (la57 on and the bzImage
 * boot: the PVH vmlinux entry always sets up 4-level tables) and KPTI forced on. Each
 * mode is checked from inside the guest and through the gdbstub (CR4), then pslist must
 * list the processes the guest itself sees.
 */
import { describe, expect, it } from 'vitest';
import { GuestConsole } from '../../src/lab/console.js';
import { labDown, labUp, type LabGuest, type LabUpOptions } from '../../src/lab/lab.js';
import { CR4_LA57 } from '../../src/memory/page-walk.js';
import { pslist } from '../../src/plugins/pslist.js';
import { GdbClient } from '../../src/qemu/gdb.js';
import { decodeX86Regs } from '../../src/qemu/x86-regs.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';

/** Every PID in the guest's /proc, as its own shell sees it. */
async function procPids(con: GuestConsole): Promise<Set<number>> {
  const out = (await con.run('cd /proc && echo [0-9]*', 10_000)).output;
  return new Set(
    out
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter((n) => n > 0),
  );
}

/** CR4 of the first vCPU, read through the gdbstub (the VM stops for a moment). */
async function readCr4(guest: LabGuest): Promise<bigint> {
  const gdb = await GdbClient.connect(guest.gdbSocket!, { timeoutMs: 5000 });
  try {
    await gdb.queryHaltReason();
    return decodeX86Regs(await gdb.readRegisters()).cr4;
  } finally {
    await gdb.detach().catch(() => gdb.close());
  }
}

interface Case {
  title: string;
  skip?: string;
  opts: LabUpOptions;
  /** Checks inside the guest (console) and through the gdbstub before the pslist. */
  check: (con: GuestConsole, guest: LabGuest) => Promise<void>;
}

const cases: Case[] = [
  {
    // Once broke the guest: a borrowed task that migrated between stops got the
    // KERNEL_GS_BASE of the vCPU it was caught on (Victim now writes task registers only).
    title: '2 vCPUs (two attaches)',
    opts: { cpus: 2 },
    check: async (con) => {
      expect((await con.run('grep -c ^processor /proc/cpuinfo')).output.trim()).toBe('2');
    },
  },
  {
    title: '4-level paging (Skylake-Client, no la57)',
    opts: { cpuModel: 'Skylake-Client' },
    check: async (con, guest) => {
      expect((await con.run('grep -c -w la57 /proc/cpuinfo')).output.trim()).toBe('0');
      expect((await readCr4(guest)) & CR4_LA57).toBe(0n);
    },
  },
  {
    title: '5-level paging (max,la57=on, bzImage boot)',
    opts: { cpuModel: 'max,la57=on', bootImage: 'bzImage' },
    check: async (con, guest) => {
      expect((await con.run('grep -c -w la57 /proc/cpuinfo')).output.trim()).not.toBe('0');
      expect((await readCr4(guest)) & CR4_LA57).toBe(CR4_LA57);
    },
  },
  {
    title: 'KPTI on (pti=on)',
    opts: { cpuModel: 'Skylake-Client', appendCmdline: 'pti=on' },
    check: async (con) => {
      expect((await con.run('cat /sys/devices/system/cpu/vulnerabilities/meltdown')).output.trim()).toBe(
        'Mitigation: PTI',
      );
      expect((await con.run('dmesg')).output).toMatch(/Kernel\/User page tables isolation: enabled/);
    },
  },
];

describe('vCPUs and paging modes', () => {
  cases.forEach((c, i) => {
    const name = `t-cpu-${i}`;
    it.skipIf(c.skip !== undefined)(
      c.skip ? `${c.title}: ${c.skip}` : c.title,
      { timeout: 300_000 },
      async () => {
        await labDown(name);
        try {
          const guest = await labUp({ name, memMiB: 256, ...c.opts });
          const con = await GuestConsole.connect(guest.serialSocket);
          try {
            await c.check(con, guest);
            // A second attach reuses the cached syscall entry: a different path from the first.
            await runPluginsOnGuest(guest, [{ plugin: pslist, options: {} }]);
            const before = await procPids(con);
            const run = await runPluginsOnGuest(guest, [{ plugin: pslist, options: {} }]);
            const after = await procPids(con);
            const [table] = run.tables;
            expect(table.errors).toEqual([]);
            const pidCol = table.columns.findIndex((col) => col.name === 'PID');
            const listed = new Set(table.rows.map((r) => Number(r[pidCol])));
            // Everything alive before and after was listed; everything listed existed at
            // some point (the shadow and the console's own short-lived shells aside).
            for (const pid of before) if (after.has(pid)) expect(listed, `pid ${pid}`).toContain(pid);
            for (const pid of listed) {
              if (pid === run.session.shadowPid) continue;
              expect(before.has(pid) || after.has(pid) || pid > Math.max(...before), `pid ${pid}`).toBe(true);
            }
            console.log(
              `${c.title}: ${listed.size} processes, attach ${run.session.attachMs.toFixed(0)} ms ` +
                `(${run.session.transport}), pslist ${run.pluginMs.pslist.toFixed(0)} ms`,
            );
          } finally {
            con.close();
          }
        } finally {
          await labDown(name);
        }
      },
    );
  });
});
