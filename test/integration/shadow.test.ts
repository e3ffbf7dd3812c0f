/**
 * The shadow engine's batches, integrity checks and resident shadow, on a real lab guest,
 * checked against what the guest itself reports.
 */
import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestProcs, guestSh, lasting } from './helpers/guest-shell.js';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { RamFileMemory, RamLayout } from '../../src/memory/physical.js';
import { residentShadowStatus, startResidentShadow, stopResidentShadow } from '../../src/shadow/resident.js';
import type { Call } from '../../src/sdk/syscall-types.js';
import { JournalStore } from '../../src/shadow/journal.js';
import { RedirectSession } from '../../src/shadow/session.js';
import { ShadowHandle } from '../../src/shadow/shadow.js';

const NAME = 't-shadow';
const enc = (s: string) => new TextEncoder().encode(`${s}\0`);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const AT_FDCWD = { kind: 'int', value: -100n } as const;
const int = (v: number | bigint) => ({ kind: 'int', value: BigInt(v) }) as const;

/** Shadows and zombies still there after a while (busybox init reaps once a second), as "pid comm state". */
async function noShadowLeft(guest: LabGuest): Promise<string[]> {
  const left = await lasting(guest, (p) => p.comm.startsWith('vmi-shadow') || p.state === 'Z');
  return left.map((p) => `${p.pid} ${p.comm} ${p.state}`);
}

describe('shadow engine', () => {
  let guest: LabGuest;
  let workloadMaps: string;

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    workloadMaps = await guestSh(
      guest,
      'for p in $(cut -d= -f2 /run/vmi-lab/pids); do cat /proc/$p/maps; done',
    );
  });

  afterAll(async () => {
    await labDown(NAME);
  });

  it('runs a batch whose calls depend on each other', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const calls: Call[] = [
        { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc('/run/vmi-lab/pids') }, int(0)] },
        { nr: 0, args: [{ kind: 'result', index: 0 }, { kind: 'out', size: 4096, keep: 'ret' }, int(4096)] },
        { nr: 8, args: [{ kind: 'result', index: 0 }, int(0), int(0)] }, // lseek back to 0
        { nr: 0, args: [{ kind: 'result', index: 0 }, { kind: 'out', size: 8, keep: 'ret' }, int(8)] },
        { nr: 3, args: [{ kind: 'result', index: 0 }] },
      ];
      const r = await session.run(calls);
      const truth = await guestSh(guest, 'cat /run/vmi-lab/pids');
      expect(r[0].ret).toBeGreaterThanOrEqual(0n);
      expect(dec(r[1].out[0])).toBe(truth);
      expect(r[2].ret).toBe(0n);
      expect(dec(r[3].out[0])).toBe(truth.slice(0, 8));
      expect(r[4].ret).toBe(0n);
    } finally {
      await session.detach();
    }
  });

  it('runs batches started at the same time one after the other, each with its own results', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const read = (path: string): Call[] => [
        { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc(path) }, int(0)] },
        { nr: 0, args: [{ kind: 'result', index: 0 }, { kind: 'out', size: 4096, keep: 'ret' }, int(4096)] },
        { nr: 3, args: [{ kind: 'result', index: 0 }] },
      ];
      const paths = ['/run/vmi-lab/pids', '/proc/1/cmdline', '/proc/version', '/proc/cmdline'];
      // Not awaited one by one: all four are in flight together, as a plugin's
      // Promise.all over SDK reads makes them.
      const got = await Promise.all(paths.map((p) => session.run(read(p))));
      for (const [i, p] of paths.entries()) {
        const truth = await guestSh(guest, `cat ${p} | od -An -tx1 -v | tr -d ' \\n'`);
        expect(Buffer.from(got[i][1].out[0]).toString('hex'), p).toBe(truth);
      }
    } finally {
      await session.detach();
    }
  });

  it('runs a batch rung while the one before it still runs, with its own references', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const nap = Buffer.alloc(16);
      nap.writeBigInt64LE(50_000_000n, 8); // 50 ms: the second batch is rung meanwhile
      // The second batch refers to its own call 1, which in the shadow's tables sits after
      // the first batch's entries: read from the first batch's results it would be a pid,
      // not an fd (EBADF).
      const first = session.run([
        { nr: 35, args: [{ kind: 'in', data: nap }, int(0)] }, // nanosleep
        { nr: 39, args: [] }, // getpid
        { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc('/run/vmi-lab/pids') }, int(0)] },
        { nr: 0, args: [{ kind: 'result', index: 2 }, { kind: 'out', size: 4096, keep: 'ret' }, int(4096)] },
        { nr: 3, args: [{ kind: 'result', index: 2 }] },
      ]);
      const second = session.run([
        { nr: 39, args: [] }, // getpid
        { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc('/proc/cmdline') }, int(0)] },
        { nr: 0, args: [{ kind: 'result', index: 1 }, { kind: 'out', size: 4096, keep: 'ret' }, int(4096)] },
        { nr: 3, args: [{ kind: 'result', index: 1 }] },
      ]);
      const [a, b] = await Promise.all([first, second]);
      expect(dec(a[3].out[0])).toBe(await guestSh(guest, 'cat /run/vmi-lab/pids'));
      expect(b[0].ret).toBe(BigInt(session.stats.shadowPid));
      expect(b[2].ret).toBeGreaterThan(0n);
      expect(dec(b[2].out[0])).toBe(await guestSh(guest, 'cat /proc/cmdline'));
      expect([a[4].ret, b[3].ret]).toEqual([0n, 0n]);
    } finally {
      await session.detach();
    }
  });

  it('reports failing calls in the middle of a batch and goes on', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const r = await session.run([
        { nr: 39, args: [] }, // getpid
        { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc('/no/such/file') }, int(0)] },
        // X_OK on a file without execute bits: EACCES even for root.
        { nr: 269, args: [AT_FDCWD, { kind: 'in', data: enc('/run/vmi-lab/pids') }, int(1)] },
        { nr: 0, args: [{ kind: 'result', index: 1 }, { kind: 'out', size: 16, keep: 'ret' }, int(16)] },
        { nr: 63, args: [{ kind: 'out', size: 390, keep: 'all' }] }, // uname
      ]);
      expect(r[0].ret).toBe(BigInt(session.stats.shadowPid));
      expect(r[1].ret).toBe(-2n); // ENOENT
      expect(r[2].ret).toBe(-13n); // EACCES
      expect(r[3].ret).toBe(-9n); // EBADF: read from the failed open's -ENOENT
      const release = dec(r[4].out[0].subarray(65 * 2, 65 * 3)).replace(/\0.*$/s, '');
      expect(release).toBe((await guestSh(guest, 'uname -r')).trim());
    } finally {
      await session.detach();
    }
  });

  it('detects a shadow killed inside the guest between batches and replaces it', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const first = session.stats.shadowPid;
      expect((await session.run([{ nr: 39, args: [] }]))[0].ret).toBe(BigInt(first));
      // Between batches: the next batch starts only once the guest has torn it down.
      await guestSh(
        guest,
        `kill -9 ${first}; while [ -n "$(cat /proc/${first}/maps 2>/dev/null)" ]; do :; done`,
      );
      const again = await session.run([{ nr: 39, args: [] }]);
      expect(session.stats.rebootstraps).toBe(1);
      expect(session.stats.shadowPid).not.toBe(first);
      expect(again[0].ret).toBe(BigInt(session.stats.shadowPid));
    } finally {
      await session.detach();
    }
    expect(await noShadowLeft(guest)).toEqual([]);
  });

  /**
   * A batch that keeps the shadow busy for a second or more: each pread at a large offset
   * of /proc/kallsyms makes the seq_file walk every symbol before it.
   */
  const slowBatch = (extra: Call[] = [], preads = 60): Call[] => [
    { nr: 257, args: [AT_FDCWD, { kind: 'in', data: enc('/proc/kallsyms') }, int(0)] },
    ...Array.from({ length: preads }, (_, i): Call => ({
      nr: 17,
      args: [
        { kind: 'result', index: 0 },
        { kind: 'out', size: 64, keep: 'ret' },
        int(64),
        int(2_000_000 + i),
      ],
    })),
    ...extra,
    { nr: 3, args: [{ kind: 'result', index: 0 }] },
  ];

  /** Kills `pid` from inside the guest as soon as it has /proc/kallsyms open (mid-batch). */
  const killWhenBusy = (pid: number) =>
    guestSh(
      guest,
      `(i=0; while [ $i -lt 400 ] && ! ls -l /proc/${pid}/fd 2>/dev/null | grep -q kallsyms; do i=$((i+1)); done; kill -9 ${pid}) >/dev/null 2>&1 &`,
    );

  it('does not take a batch longer than the heartbeat window (3 s) for a hung shadow', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const t0 = performance.now();
      const r = await session.run(slowBatch([], 100));
      const ms = performance.now() - t0;
      console.log(`slow batch: ${r.length} calls in ${ms.toFixed(0)} ms`);
      expect(ms).toBeGreaterThan(3000); // else this test proves nothing: make the batch longer
      expect(session.stats.rebootstraps).toBe(0);
      expect(r.slice(1, -1).every((c) => c.ret === 64n)).toBe(true);
    } finally {
      await session.detach();
    }
  });

  it('runs a read-only batch again on a new shadow when the shadow is killed in the middle of it', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const first = session.stats.shadowPid;
      await killWhenBusy(first);
      const r = await session.run(slowBatch());
      expect(session.stats.rebootstraps).toBe(1);
      expect(session.stats.shadowPid).not.toBe(first);
      expect(r[0].ret).toBeGreaterThanOrEqual(0n);
      const truth = await guestSh(guest, 'tail -c +2000011 /proc/kallsyms | head -c 64');
      expect(r[11].ret).toBe(64n);
      expect(dec(r[11].out[0])).toBe(truth);
      expect(r.at(-1)!.ret).toBe(0n);
    } finally {
      await session.detach();
    }
    expect(await noShadowLeft(guest)).toEqual([]);
  });

  it('does not run a batch that changes the guest again when the shadow dies in the middle of it', async () => {
    const session = await RedirectSession.attach(guest);
    try {
      const first = session.stats.shadowPid;
      await killWhenBusy(first);
      // write(-1, ...) fails with EBADF, but the engine cannot know that in advance.
      const write: Call = { nr: 1, args: [int(-1), { kind: 'in', data: enc('x') }, int(1)] };
      await expect(session.run(slowBatch([write]))).rejects.toThrow(
        /shadow \(pid \d+\) .* in the middle of a batch that changes the guest; not run again/,
      );
      expect(session.stats.rebootstraps).toBe(0);
      // The next batch finds the shadow dead before writing it, and replaces it.
      const again = await session.run([{ nr: 39, args: [] }]);
      expect(session.stats.rebootstraps).toBe(1);
      expect(again[0].ret).toBe(BigInt(session.stats.shadowPid));
    } finally {
      await session.detach();
    }
    expect(await noShadowLeft(guest)).toEqual([]);
  });

  it('detects a tampered stub page, refuses that shadow and kills it', async () => {
    const messages: string[] = [];
    const session = await RedirectSession.attach(guest, { onProgress: (m) => messages.push(m) });
    try {
      const first = session.stats.shadowPid;
      await session.run([{ nr: 39, args: [] }]);
      // Someone in the guest rewrites one byte of the shadow's code.
      const rec = new JournalStore(guest.runDir).load()!.shadow!;
      const mem = new RamFileMemory(guest.ramFile!, RamLayout.flat(guest.ramSize));
      const h = new ShadowHandle(
        mem,
        BigInt(rec.base),
        BigInt(rec.cr3),
        BigInt(rec.cr4),
        BigInt(rec.marker),
        rec.pid,
      );
      await h.write(0x20, new Uint8Array([0xcc]));
      mem.close();
      const r = await session.run([{ nr: 39, args: [] }]);
      expect(messages.join('\n')).toMatch(/tampered with: its code differs from the stub at offset 0x20/);
      expect(messages.join('\n')).toContain(`killed the tampered shadow (pid ${first})`);
      expect(session.stats.rebootstraps).toBe(1);
      expect(r[0].ret).toBe(BigInt(session.stats.shadowPid));
    } finally {
      await session.detach();
    }
    expect(await noShadowLeft(guest)).toEqual([]);
  });

  it('keeps a resident shadow between attaches and stop removes every trace', async () => {
    const started = await startResidentShadow(guest);
    expect(started.wakeLine).toBe(true);
    const status = await residentShadowStatus(guest);
    expect(status).toMatchObject({ resident: true, health: 'alive', pid: started.shadowPid });
    expect((await guestProcs(guest)).get(started.shadowPid)?.comm).toBe('vmi-shadow');
    // Idle, it sleeps on its wake-up line: under 1% of a vCPU (ticks are 10 ms).
    const ticks = async () => {
      const f = (await guestSh(guest, `cat /proc/${started.shadowPid}/stat`)).split(') ')[1].split(' ');
      return Number(f[11]) + Number(f[12]);
    };
    await new Promise((r) => setTimeout(r, 1000)); // past its post-batch spin
    const ticks0 = await ticks();
    await new Promise((r) => setTimeout(r, 5000));
    expect((await ticks()) - ticks0).toBeLessThanOrEqual(5);

    const session = await RedirectSession.attach(guest);
    const t0 = performance.now();
    const r = await session.run([{ nr: 39, args: [] }]);
    const firstResultMs = performance.now() - t0 + session.stats.attachMs;
    await session.detach();
    expect(session.stats.reused).toBe(true);
    expect(session.stats.victimPid).toBe(0);
    expect(r[0].ret).toBe(BigInt(started.shadowPid));
    console.log(`resident shadow: attach → first result ${firstResultMs.toFixed(2)} ms`);
    expect((await residentShadowStatus(guest)).health).toBe('alive');

    // While a host is attached the shadow stays awake between batches (no wake-up per
    // batch); once it leaves, the shadow sleeps again. Reusing it rewrites no journal.
    const journal = new JournalStore(guest.runDir);
    const mtime0 = statSync(journal.path).mtimeMs;
    const held = await RedirectSession.attach(guest);
    await held.run([{ nr: 39, args: [] }]);
    const wakes0 = (await residentShadowStatus(guest)).wakes;
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 10));
      await held.run([{ nr: 39, args: [] }]);
    }
    expect((await residentShadowStatus(guest)).wakes).toBe(wakes0);
    await held.detach();
    await new Promise((r) => setTimeout(r, 200));
    expect((await residentShadowStatus(guest)).state).toBe('sleeping');
    expect(statSync(journal.path).mtimeMs).toBe(mtime0);

    expect(await stopResidentShadow(guest)).toBe(started.shadowPid);
    expect((await residentShadowStatus(guest)).resident).toBe(false);
    expect(await noShadowLeft(guest)).toEqual([]);
    // No scratch mapping left in any workload process (the borrowed one included).
    expect(
      await guestSh(guest, 'for p in $(cut -d= -f2 /run/vmi-lab/pids); do cat /proc/$p/maps; done'),
    ).toBe(workloadMaps);
  });
});
