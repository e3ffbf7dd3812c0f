/**
 * The engine's own policy check. Every plugin already talks to the guest through a
 * PolicyExecutor (src/sdk/policy.ts); this gate checks again, on every batch that goes
 * from the runner to the session, against the declared needs of the plugin that is
 * running now. It is a closure, not an object with fields: nothing reachable from a
 * plugin leads to the session, and the runner alone says whose batch it is.
 */
import {
  assertCallsAllowed,
  frozenPolicyOptions,
  snapshotUnlessFresh,
  type PluginNeeds,
  type PolicyOptions,
} from '../sdk/policy.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';

export interface PolicyGate {
  /** Runs a batch after checking it against the current plugin's policy. */
  readonly executor: SyscallExecutor;
  /** From now on batches belong to `plugin`, with `grant` (its needs when --allow-write was given). */
  enter(plugin: string, grant?: PluginNeeds): void;
}

/** The name batches are checked under outside any plugin (the run's own uname). */
export const RUNNER_POLICY_NAME = 'vmi';

/** A gate in front of `session`; until enter() batches are checked as the runner's own (read-only). */
export function createPolicyGate(session: SyscallExecutor): PolicyGate {
  let current: PolicyOptions = Object.freeze({ plugin: RUNNER_POLICY_NAME });
  const executor: SyscallExecutor = Object.freeze({
    run(calls: readonly Call[]): Promise<CallResult[]> {
      try {
        // A PolicyExecutor's copy is not copied again (see snapshotUnlessFresh); it is
        // checked again, against the plugin that is running now.
        const copy = snapshotUnlessFresh(calls);
        assertCallsAllowed(copy, current);
        return session.run(copy);
      } catch (e) {
        return Promise.reject(e);
      }
    },
  });
  return Object.freeze({
    executor,
    enter(plugin: string, grant?: PluginNeeds) {
      current = frozenPolicyOptions({ plugin, grant });
    },
  });
}

/** An executor that works until revoke(): a plugin's lane to the guest closes when its run ends. */
export function revocable(
  inner: SyscallExecutor,
  plugin: string,
): { readonly executor: SyscallExecutor; revoke(): void } {
  let open = true;
  return Object.freeze({
    executor: Object.freeze({
      run(calls: readonly Call[]): Promise<CallResult[]> {
        if (!open) return Promise.reject(new Error(`plugin '${plugin}' made a call after its run ended`));
        return inner.run(calls);
      },
    }),
    revoke() {
      open = false;
    },
  });
}
