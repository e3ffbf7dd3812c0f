/**
 * Bounds on what a guest can make one plugin run hold or do: bytes read from the guest
 * (all batches together), rows, and time. A fake guest of 200 processes with a 20 MiB
 * environment each (4000 MiB in all) makes envars fail with a read-limit error naming the
 * limit, instead of the host reading it all; the other plugins of the run are unaffected.
 */
import { describe, expect, it } from 'vitest';
import { envars } from '../../src/plugins/envars.js';
import { pslist } from '../../src/plugins/pslist.js';
import { runPluginsOnGuest, type AttachedSession } from '../../src/runner/run-plugins.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import { definePlugin, LimitExceededError, runPlugin } from '../../src/sdk/index.js';
import { DEFAULT_RUN_LIMITS } from '../../src/sdk/limits.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

const MiB = 1 << 20;
const GUEST: InspectedGuest = { name: 'fake', qmpSocket: '/nonexistent', ramSize: 0, runDir: '/nonexistent' };

/** 200 processes, each with the same 20 MiB environment (one buffer: the fake stays small). */
function hugeEnvGuest(): FakeGuest {
  const g = fakeProcGuest(200);
  const env = new Uint8Array(20 * MiB).fill(0x41);
  for (let i = 0; i < env.length; i += 64) env.set(new TextEncoder().encode('\0K=V'), i);
  for (let pid = 1; pid <= 200; pid++) g.addFile(`/proc/${pid}/environ`, env);
  return g;
}

function session(g: FakeGuest): AttachedSession {
  return {
    stats: { transport: 'trap', victimPid: 1 } as SessionStats,
    run: (c) => g.run(c),
    async detach() {},
  };
}

/** Output-buffer bytes the fake guest was asked for in all its runs. */
function askedBytes(g: FakeGuest): number {
  let n = 0;
  for (const run of g.runs) for (const c of run) for (const a of c.args) if (a.kind === 'out') n += a.size;
  return n;
}

describe('run limits', () => {
  it('200 processes with 20 MiB environments: envars fails with the read limit, pslist still runs', async () => {
    expect(DEFAULT_RUN_LIMITS.maxReadBytes).toBe(256 * MiB);
    const g = hugeEnvGuest();
    const rss0 = process.memoryUsage().rss;
    const r = await runPluginsOnGuest(
      GUEST,
      [
        { plugin: envars, options: {} },
        { plugin: pslist, options: {} },
      ],
      { attach: async () => session(g) },
    );
    expect(r.failures.map((f) => f.plugin)).toEqual(['envars']);
    const err = r.failures[0].error;
    expect(err).toBeInstanceOf(LimitExceededError);
    expect((err as LimitExceededError).limit).toBe('read');
    expect(r.failures[0].message).toMatch(
      /^read limit: this plugin run would read more than 256 MiB from the guest \(.* read so far, the next batch asks .*; raise it with --max-read MiB\)$/,
    );
    // pslist, after it, completed: 200 processes.
    expect(r.tables.map((t) => t.plugin)).toEqual(['pslist']);
    expect(r.tables[0].rows).toHaveLength(200);
    // The guest was never asked for more than the limit (plus pslist's own few KiB).
    expect(askedBytes(g)).toBeLessThanOrEqual(256 * MiB + 4 * MiB);
    // Far less than the 4000 MiB the guest offered stayed in this process.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(1024 * MiB);
  }, 120_000);

  it('a smaller --max-read fails sooner, naming its own size', async () => {
    const g = hugeEnvGuest();
    await expect(runPlugin(envars, { executor: g, runLimits: { maxReadBytes: 8 * MiB } })).rejects.toThrow(
      /^read limit: this plugin run would read more than 8 MiB from the guest/,
    );
    expect(askedBytes(g)).toBeLessThanOrEqual(8 * MiB);
    // A limit under 1 MiB (the API takes bytes) is named in KiB or bytes, not "0.0 MiB".
    await expect(
      runPlugin(envars, { executor: hugeEnvGuest(), runLimits: { maxReadBytes: 1000 } }),
    ).rejects.toThrow(
      /^read limit: this plugin run would read more than 1000 B from the guest \(0 MiB read so far, the next batch asks [\d.]+ (KiB|MiB)/,
    );
  });

  it('rows beyond the row limit and a plugin past its time limit fail with the limit named', async () => {
    const many = definePlugin({
      name: 'many',
      description: 'endless rows',
      version: '1.0.0',
      columns: [{ name: 'N', type: 'int32' }] as const,
      async *run() {
        for (let n = 0; ; n++) yield { N: n };
      },
    });
    await expect(
      runPlugin(many, { executor: fakeProcGuest(1), runLimits: { maxRows: 1000 } }),
    ).rejects.toThrow("row limit: plugin 'many' returned more than 1000 rows");
    const slow = definePlugin({
      name: 'slow',
      description: 'waits in host code, then calls the guest',
      version: '1.0.0',
      columns: [{ name: 'N', type: 'int32' }] as const,
      async run(ctx) {
        await new Promise((r) => setTimeout(r, 10_000));
        await ctx.sys.uname();
        return [];
      },
    });
    const t0 = Date.now();
    const err = await runPlugin(slow, { executor: fakeProcGuest(1), runLimits: { timeoutMs: 200 } }).catch(
      (e: unknown) => e,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err).toBeInstanceOf(LimitExceededError);
    expect((err as Error).message).toBe(
      "time limit: plugin 'slow' ran longer than 0.2 s (raise it with --plugin-timeout SECONDS)",
    );
  });
});
