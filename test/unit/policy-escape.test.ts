/**
 * A hostile plugin (test/fixtures/packs/vmi-pack-escape/escapes.js) tries every route
 * around the read-only policy that we know of: the TypeScript-private fields the issue
 * found (ctx.sys.executor.inner), everything reachable from its context by reflection,
 * raw syscall numbers, changing a recorded call before and after the check, replacing
 * ctx.sys, patching the SDK's and the engine's classes, and built-ins made to lie. Each
 * must fail with a policy error (or be unreachable), and the fake guest must never see
 * a kill, a write open or a destructive syslog.
 */
import { describe, expect, it } from 'vitest';
import { runPluginsOnGuest, type AttachedSession } from '../../src/runner/run-plugins.js';
import { createPolicyGate, revocable } from '../../src/runner/policy-gate.js';
import type { InspectedGuest } from '../../src/qemu/guest-endpoints.js';
import { definePlugin, PolicyExecutor, PolicyViolationError, runPlugin } from '../../src/sdk/index.js';
import type { Call } from '../../src/sdk/syscall-types.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';
import { escaped, tryEscapes, type EscapeAttempt } from '../fixtures/packs/vmi-pack-escape/escapes.js';

const KILL = 62;
const OPENAT = 257;
const SYSLOG = 103;
const GUEST: InspectedGuest = { name: 'fake', qmpSocket: '/nonexistent', ramSize: 0, runDir: '/nonexistent' };

/** vmi's modules as a pack would import them, from src/ here. */
const MODULES: Record<string, () => Promise<Record<string, unknown>>> = {
  'shadow/session.js': () => import('../../src/shadow/session.js'),
  'shadow/transport.js': () => import('../../src/shadow/transport.js'),
  'runner/piggyback.js': () => import('../../src/runner/piggyback.js'),
  'sdk/policy.js': () => import('../../src/sdk/policy.js'),
  'sdk/syscall-api.js': () => import('../../src/sdk/syscall-api.js'),
  'sdk/batch.js': () => import('../../src/sdk/batch.js'),
};
const load = async (rel: string) => {
  const m = MODULES[rel];
  if (!m) throw new Error(`no loader for ${rel}`);
  return m();
};

function escapePlugin(out: EscapeAttempt[]) {
  return definePlugin({
    name: 'escape',
    description: 'tries every route around the policy',
    version: '1.0.0',
    columns: [{ name: 'X', type: 'int32' }] as const,
    async run(ctx) {
      out.push(...(await tryEscapes(ctx, { pid: 7777, load })));
      if (process.env.VMI_SHOW_ESCAPES) console.log(out);
      return [];
    },
  });
}

/** Calls the fake guest saw that the read-only policy forbids. */
function forbiddenSeen(g: FakeGuest): Call[] {
  return g.runs.flat().filter((c) => {
    if (c.nr === KILL) return true;
    if (c.nr === SYSLOG) return true;
    const flags = c.args[2];
    return c.nr === OPENAT && flags?.kind === 'int' && (flags.value & 0o1103n) !== 0n;
  });
}

function expectAllRefused(attempts: EscapeAttempt[]) {
  const routes = attempts.map((a) => a.route);
  // The routes that must have been tried (the list is longer; these are the named ones).
  for (const r of [
    'ctx.sys.executor.inner.run(kill)',
    'batch.call(62) by number',
    'recorded call changed after submit() started',
    'ctx.sys replaced',
    'RedirectSession.prototype.run patched (import of shadow/session.js)',
    'Set.has / Map.get / Array.includes / BigInt.asUintN patched, then kill',
  ])
    expect(routes).toContain(r);
  const worked = attempts.filter((a) => escaped(a.outcome));
  expect(worked, JSON.stringify(worked, null, 1)).toEqual([]);
  for (const a of attempts)
    expect(a.outcome, a.route).toMatch(/^(refused: (PolicyViolationError|TypeError)|unreachable|no effect)/);
  // The direct kill is refused by the policy itself, naming the plugin and the call.
  expect(attempts.find((a) => a.route === 'batch.call("kill")')?.outcome).toMatch(
    /^refused: PolicyViolationError: plugin 'escape' is not allowed to call kill/,
  );
}

describe('a plugin that tries to reach around the policy', () => {
  it('through the SDK alone (PolicyExecutor over a fake guest): every route fails, the guest sees nothing', async () => {
    const g = fakeProcGuest(3);
    const attempts: EscapeAttempt[] = [];
    await runPlugin(escapePlugin(attempts), { executor: new PolicyExecutor(g, { plugin: 'escape' }) });
    expectAllRefused(attempts);
    expect(forbiddenSeen(g)).toEqual([]);
    // The getpid batches did reach the guest: the fake is not simply unreachable.
    expect(g.runs.length).toBeGreaterThan(0);
  });

  it('through the runner (policy executor, carrier, engine gate): every route fails, the guest sees nothing', async () => {
    const g = fakeProcGuest(3);
    const attempts: EscapeAttempt[] = [];
    const session: AttachedSession = {
      stats: { transport: 'trap', victimPid: 1 } as SessionStats,
      run: (calls) => g.run(calls),
      async detach() {},
    };
    const r = await runPluginsOnGuest(GUEST, [{ plugin: escapePlugin(attempts), options: {} }], {
      attach: async () => session,
    });
    expect(r.failures).toEqual([]);
    expectAllRefused(attempts);
    expect(forbiddenSeen(g)).toEqual([]);
  });
});

describe('the engine gate', () => {
  it('refuses a batch outside the current plugin policy before it reaches the session, allows declared needs', async () => {
    const seen: Call[][] = [];
    const gate = createPolicyGate({
      run: async (calls) => (seen.push([...calls]), calls.map(() => ({ ret: 0n, out: [] }))),
    });
    const kill: Call = {
      nr: KILL,
      args: [
        { kind: 'int', value: 1n },
        { kind: 'int', value: 9n },
      ],
    };
    gate.enter('p');
    await expect(gate.executor.run([kill])).rejects.toBeInstanceOf(PolicyViolationError);
    expect(seen).toEqual([]);
    gate.enter('q', { syscalls: ['kill'] });
    await expect(gate.executor.run([kill])).resolves.toHaveLength(1);
    gate.enter('r');
    await expect(gate.executor.run([kill])).rejects.toThrow(/plugin 'r' is not allowed to call kill/);
    expect(seen).toHaveLength(1);
    // What reached the session is a frozen copy, not the caller's object.
    expect(seen[0][0]).not.toBe(kill);
    expect(Object.isFrozen(seen[0][0])).toBe(true);
  });

  it("takes a PolicyExecutor's copy as it is, re-checked; copies anything else, even a frozen array", async () => {
    const seen: (readonly Call[])[] = [];
    const gate = createPolicyGate({
      run: async (calls) => (seen.push(calls), calls.map(() => ({ ret: 0n, out: [] }))),
    });
    const path = new TextEncoder().encode('/proc/1/stat\0');
    const open: Call = {
      nr: OPENAT,
      args: [
        { kind: 'int', value: -100n },
        { kind: 'in', data: path },
        { kind: 'int', value: 0n },
        { kind: 'int', value: 0n },
      ],
    };
    gate.enter('p');
    // What the plugin's own PolicyExecutor hands on reaches the session as it is.
    const handed: (readonly Call[])[] = [];
    const pe = new PolicyExecutor(
      { run: (calls) => (handed.push(calls), gate.executor.run(calls)) },
      { plugin: 'p' },
    );
    await pe.run([open]);
    expect(seen[0]).toBe(handed[0]);
    expect(seen[0][0]).not.toBe(open);
    // Still checked against the plugin running now: a kill granted to one PolicyExecutor
    // does not pass the gate of a plugin without the grant.
    const kill: Call = {
      nr: KILL,
      args: [
        { kind: 'int', value: 1n },
        { kind: 'int', value: 9n },
      ],
    };
    const granted = new PolicyExecutor(gate.executor, { plugin: 'p', grant: { syscalls: ['kill'] } });
    await expect(granted.run([kill])).rejects.toThrow(/plugin 'p' is not allowed to call kill/);
    // A frozen array made elsewhere is copied: its byte arrays may have other holders.
    const frozen = Object.freeze([
      Object.freeze({ ...open, args: Object.freeze([...open.args]) as Call['args'] }),
    ]);
    await gate.executor.run(frozen);
    const last = seen[seen.length - 1];
    expect(last).not.toBe(frozen);
    expect((last[0].args[1] as { data: Uint8Array }).data).not.toBe(path);
    expect(seen).toHaveLength(2);
  });

  it('a plugin lane refuses calls once the plugin run has ended', async () => {
    const lane = revocable({ run: async (calls) => calls.map(() => ({ ret: 0n, out: [] })) }, 'late');
    await expect(lane.executor.run([])).resolves.toEqual([]);
    lane.revoke();
    await expect(lane.executor.run([])).rejects.toThrow(/plugin 'late' made a call after its run ended/);
  });
});
