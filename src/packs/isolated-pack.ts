/**
 * Plugin packs run out of process: vmi's side. The pack is imported only in a child
 * process (src/packs/isolated-child.ts) confined as src/packs/pack-sandbox.ts plans, once
 * to describe its plugins (name, columns, options, needs: data) and once per plugin run.
 * The only link between the two is Node's IPC channel; during a run the child sends
 * syscall batches and vmi sends back the results.
 *
 * vmi does not trust anything the child says or counts: each batch goes through the same
 * executor chain as an in-process plugin's (SDK policy, then the engine's policy gate),
 * and the run's limits are enforced here again: bytes asked of the guest (`--max-read`),
 * rows (counted as they arrive), wall time (`--plugin-timeout`; the child is killed). A
 * child that breaks the protocol, exits early or goes over a limit is killed and costs
 * that plugin only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { realpathSync, statSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COLUMN_TYPES, type RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import { LimitExceededError } from '../sdk/errors.js';
import { batchCost, DEFAULT_RUN_LIMITS, limitSize, type RunLimits } from '../sdk/limits.js';
import {
  apiVersion,
  checkApiVersion,
  definePlugin,
  PluginApiVersionError,
  type PluginDefinition,
  type PluginRun,
  type PluginRunner,
  type RunPluginOptions,
} from '../sdk/plugin.js';
import { snapshotCalls } from '../sdk/policy.js';
import {
  checkChildMessage,
  cleanText,
  decodeRow,
  PackProtocolError,
  type ChildMessage,
  type InitMessage,
  type PluginDescription,
} from './isolation-protocol.js';
import { PackLoadError, reasonOf, type LoadedPack, type PackManifest } from './pack-exports.js';
import { probeSandboxHost, sandboxPlan, type SandboxHost, type SandboxPlan } from './pack-sandbox.js';

/** A pack to run isolated: its package name, real root directory and manifest. */
export interface IsolatedPackSource {
  name: string;
  root: string;
  manifest: PackManifest;
}

/** How long describing a pack may take (a Node start and the pack's import), ms. */
export const DESCRIBE_TIMEOUT_MS = 30_000;

/** dist/ (or src/ under the tests) and profiles/ (the syscall table): what the child may read of vmi besides the pack. */
const VMI_CODE_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
const VMI_PROFILES_DIR = resolvePath(VMI_CODE_DIR, '../profiles');
const CHILD_SCRIPT = resolvePath(VMI_CODE_DIR, 'packs/isolated-child.js');

let hostCache: SandboxHost | undefined;

/** The command that starts a child for this pack (probing the host once per process). */
export function planFor(source: IsolatedPackSource, host?: SandboxHost): SandboxPlan {
  hostCache ??= host ?? probeSandboxHost();
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  return sandboxPlan(hostCache, CHILD_SCRIPT, [
    ...new Set([real(source.root), real(VMI_CODE_DIR), real(VMI_PROFILES_DIR)]),
  ]);
}

/** A started child: its process and the plan it runs under. */
interface PackChild {
  proc: ChildProcess;
  plan: SandboxPlan;
}

function startChild(
  source: IsolatedPackSource,
  init: Omit<InitMessage, 't' | 'pack' | 'root' | 'entry' | 'drop'>,
): PackChild {
  const plan = planFor(source);
  const proc = spawn(plan.file, plan.args, {
    // The pack's console output goes to vmi's stderr: stdout carries vmi's tables.
    stdio: ['ignore', 2, 2, 'ipc'],
    serialization: 'advanced',
    // Nothing of vmi's environment (NODE_OPTIONS, credentials in variables) reaches the pack.
    env: {},
    cwd: '/',
  });
  const first: InitMessage = {
    t: 'init',
    pack: source.name,
    root: source.root,
    entry: source.manifest.plugins,
    ...(source.manifest.apiVersion === undefined ? {} : { apiVersion: source.manifest.apiVersion }),
    drop: plan.drop,
    ...init,
  };
  proc.send(first, (err) => {
    if (err) proc.kill('SIGKILL');
  });
  return { proc, plan };
}

/** Ends the child (no-op once it has exited). */
function kill(child: PackChild): void {
  if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
}

/** A plugin definition rebuilt in vmi from the child's description; its run() is never called in vmi. */
function definitionOf(pack: string, d: PluginDescription): PluginDefinition {
  if (typeof d !== 'object' || d === null)
    throw new PackLoadError(pack, 'a plugin description that is not an object');
  if (!Array.isArray(d.columns) || d.columns.some((c) => !COLUMN_TYPES.includes(c?.type))) {
    throw new PackLoadError(pack, `plugin '${cleanText(d.name)}' has a column of an unknown type`);
  }
  checkApiVersion({ name: String(d.name), apiVersion: d.apiVersion }, pack);
  const def = definePlugin({
    name: String(d.name),
    description: cleanText(d.description),
    version: cleanText(d.version),
    columns: d.columns.map((c) => ({
      name: String(c.name),
      type: c.type,
      ...(c.description === undefined ? {} : { description: cleanText(c.description) }),
    })),
    options: d.options,
    ...(d.needs ? { needs: d.needs } : {}),
    run() {
      throw new Error(`plugin '${String(d.name)}' of pack ${pack} runs in its own process, not in vmi's`);
    },
  });
  return def as unknown as PluginDefinition;
}

/**
 * Imports the pack in a confined child and returns its plugins as definitions built in
 * vmi from what the child described (their run() throws: use {@link isolatedRunner}).
 * Throws PackLoadError for any failure (the pack's import, its exports, the sandbox).
 */
export async function describeIsolatedPack(source: IsolatedPackSource): Promise<LoadedPack> {
  const drop = planFor(source).drop;
  const closed = drop ? closedTo(source.root, drop) : undefined;
  if (closed) {
    throw new PackLoadError(
      source.name,
      `isolated packs run as uid ${drop!.uid}, who cannot read ${closed}: install or link the pack in a directory others can read (755), or trust it with --trust-pack ${source.name}`,
    );
  }
  let child: PackChild;
  try {
    child = startChild(source, { mode: 'describe' });
  } catch (e) {
    throw new PackLoadError(source.name, reasonOf(e));
  }
  const reply = await new Promise<ChildMessage>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill(child);
      reject(
        new PackLoadError(
          source.name,
          `its process did not describe its plugins within ${DESCRIBE_TIMEOUT_MS / 1000} s`,
        ),
      );
    }, DESCRIBE_TIMEOUT_MS);
    child.proc.on('message', (raw) => {
      clearTimeout(timer);
      try {
        resolve(checkChildMessage(raw));
      } catch (e) {
        reject(new PackLoadError(source.name, reasonOf(e)));
      }
      kill(child);
    });
    child.proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new PackLoadError(source.name, `its process could not start: ${reasonOf(e)}`));
    });
    // 'close', not 'exit': it comes after the channel's last message.
    child.proc.on('close', (code, signal) => {
      clearTimeout(timer);
      reject(
        new PackLoadError(
          source.name,
          `its process ended (${signal ?? `exit ${code}`}) before describing its plugins`,
        ),
      );
    });
  });
  if (reply.t === 'load-failed')
    throw new PackLoadError(source.name, hint(cleanText(reply.message), child.plan));
  if (reply.t !== 'described')
    throw new PackLoadError(source.name, `its process sent '${reply.t}' instead of its plugins`);
  const plugins = reply.plugins.map((d) => definitionOf(source.name, d));
  const rejected = reply.rejected.map(
    (r) => new PluginApiVersionError(cleanText(r?.plugin), r?.apiVersion, source.name),
  );
  return {
    name: source.name,
    plugins,
    rejected,
    runner: isolatedRunner(source),
    isolation: child.plan.layers,
  };
}

/**
 * The first of `dir` and its ancestors that `who` cannot search (or, for `dir`, read),
 * by the owner/group/other bits; undefined when the path is open to it.
 */
export function closedTo(dir: string, who: { uid: number; gid: number }): string | undefined {
  const parts = dir.split('/').filter((p) => p !== '');
  for (let i = 0; i <= parts.length; i++) {
    const path = `/${parts.slice(0, i).join('/')}`;
    let st;
    try {
      st = statSync(path);
    } catch {
      return path;
    }
    const shift = st.uid === who.uid ? 6 : st.gid === who.gid ? 3 : 0;
    const need = i === parts.length ? 0o5 : 0o1;
    if (((st.mode >> shift) & need) !== need) return `${path} (mode ${(st.mode & 0o777).toString(8)})`;
  }
  return undefined;
}

/** A load failure that the sandbox user cannot read its files gets told what to do. */
function hint(message: string, plan: SandboxPlan): string {
  if (plan.drop && /EACCES|permission denied/i.test(message)) {
    return `${message} (isolated packs run as ${plan.layers.find((l) => l.startsWith('uid')) ?? 'an unprivileged user'}: make the pack's directory world-readable, or trust it with --trust-pack)`;
  }
  return message;
}

/**
 * Runs one plugin of the pack in a fresh confined child: the same contract as runPlugin.
 * `opts.executor` is the policy-checked executor the runner gives every plugin.
 */
export function isolatedRunner(source: IsolatedPackSource): PluginRunner {
  return (def: PluginDefinition, opts: RunPluginOptions): Promise<PluginRun> =>
    runIsolated(source, def, opts);
}

function runIsolated(
  source: IsolatedPackSource,
  def: PluginDefinition,
  opts: RunPluginOptions,
): Promise<PluginRun> {
  const limits: RunLimits = { ...DEFAULT_RUN_LIMITS, ...opts.runLimits };
  return new Promise<PluginRun>((resolve, reject) => {
    let child: PackChild;
    try {
      child = startChild(source, {
        mode: 'run',
        plugin: def.name,
        options: opts.options ?? {},
        runLimits: opts.runLimits ?? {},
      });
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const rows: RowValue[][] = [];
    const depths: number[] = [];
    let tree = false;
    let readBytes = 0;
    let settled = false;
    const finish = (err: Error | undefined, value?: PluginRun) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      kill(child);
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(
      () =>
        finish(
          new LimitExceededError(
            'time',
            `time limit: plugin '${def.name}' ran longer than ${limits.timeoutMs / 1000} s (raise it with --plugin-timeout SECONDS)`,
          ),
        ),
      limits.timeoutMs,
    );
    const onAbort = () =>
      finish(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('interrupted'));
    opts.signal?.addEventListener('abort', onAbort);
    const broke = (what: string) =>
      finish(
        new PackProtocolError(`plugin '${def.name}' of pack ${source.name} broke vmi's protocol: ${what}`),
      );

    const batch = (id: number, rawCalls: unknown[]) => {
      let calls;
      try {
        calls = snapshotCalls(rawCalls as never);
      } catch (e) {
        return broke(`a malformed batch (${reasonOf(e)})`);
      }
      // The child's SDK counts too, but vmi does not rely on it.
      const out = batchCost(calls).out;
      if (readBytes + out > limits.maxReadBytes) {
        return finish(
          new LimitExceededError(
            'read',
            `read limit: this plugin run would read more than ${limitSize(limits.maxReadBytes)} from the guest ` +
              `(${limitSize(readBytes)} read so far, the next batch asks ${limitSize(out)}; raise it with --max-read MiB)`,
          ),
        );
      }
      readBytes += out;
      opts.executor.run(calls).then(
        (results) => {
          if (!settled) child.proc.send({ t: 'result', id, results });
        },
        (e: unknown) => {
          if (settled) return;
          // The plugin sees the refusal as it would in process (and may catch it).
          const err = e instanceof Error ? e : new Error(String(e));
          child.proc.send({ t: 'refused', id, name: err.name, message: err.message });
        },
      );
    };

    child.proc.on('message', (raw) => {
      if (settled) return;
      let m: ChildMessage;
      try {
        m = checkChildMessage(raw);
      } catch (e) {
        return broke(reasonOf(e));
      }
      switch (m.t) {
        case 'batch':
          return batch(m.id, m.calls);
        case 'progress':
          return opts.progress?.(cleanText(m.message));
        case 'rows': {
          if (m.depths !== undefined && m.depths.length !== m.rows.length)
            return broke('depths do not match rows');
          for (const [i, r] of m.rows.entries()) {
            if (rows.length >= limits.maxRows) {
              return finish(
                new LimitExceededError(
                  'rows',
                  `row limit: plugin '${def.name}' returned more than ${limits.maxRows} rows`,
                ),
              );
            }
            try {
              rows.push(decodeRow(r, def.columns.length));
            } catch (e) {
              return broke(reasonOf(e));
            }
            const d = m.depths?.[i];
            if (d !== undefined) {
              if (!Number.isSafeInteger(d) || d < 0) return broke('a bad tree depth');
              tree = true;
            }
            depths.push(d ?? 0);
          }
          return;
        }
        case 'done': {
          const table: ResultTable = {
            plugin: def.name,
            columns: def.columns.map((c) => ({ ...c })),
            rows,
            ...(tree ? { depths } : {}),
            errors: m.errors.slice(0, 10_000).map(cleanText),
            metadata: {
              'plugin.version': def.version,
              'sdk.api_version': String(apiVersion),
              'pack.isolation': child.plan.layers.join('; '),
            },
          };
          return finish(undefined, { table, runs: m.runs, calls: m.calls });
        }
        case 'failed':
          return finish(Object.assign(new Error(cleanText(m.message)), { name: cleanText(m.name) }));
        case 'load-failed':
          return finish(new PackLoadError(source.name, hint(cleanText(m.message), child.plan)));
        case 'described':
          return broke("'described' during a run");
      }
    });
    child.proc.on('error', (e) =>
      finish(new Error(`pack ${source.name}: its process could not start: ${reasonOf(e)}`)),
    );
    // 'close', not 'exit': it comes after the channel's last message.
    child.proc.on('close', (code, signal) =>
      finish(
        new Error(
          `plugin '${def.name}' of pack ${source.name}: its process ended (${signal ?? `exit ${code}`}) before the plugin finished`,
        ),
      ),
    );
  });
}
