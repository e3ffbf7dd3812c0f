/**
 * Entry of an isolated pack's child process (started by src/packs/isolated-pack.ts under
 * the confinement of src/packs/pack-sandbox.ts). It waits for the parent's `init`, drops
 * to the sandbox user when told to (before any pack code runs), makes `vmi/sdk` resolve to
 * this vmi's SDK, imports the pack, and then either describes its plugins or runs one of
 * them. The plugin's syscall batches go to the parent as messages; the parent checks them
 * against the policy and the run's limits and answers with the results. This process has
 * no other way to the guest: it holds no socket, no session and no file of vmi's.
 */
import * as nodeModule from 'node:module';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runPlugin } from '../sdk/plugin.js';
import type { Call, CallResult, SyscallExecutor } from '../sdk/syscall-types.js';
import { checkManifestApi, pluginsOfModule, reasonOf } from './pack-exports.js';
import {
  encodeCell,
  ROWS_PER_MESSAGE,
  type BatchReply,
  type ChildMessage,
  type InitMessage,
  type PluginDescription,
} from './isolation-protocol.js';

/** Sends one message; resolves when it has been handed to the channel (backpressure for rows). */
function send(m: ChildMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send) return reject(new Error('not started with an IPC channel'));
    process.send(m, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}

/** `vmi/sdk` and `vmi` → the SDK and package entry beside this file: one SDK in the process. */
function aliasSdk(): void {
  const map: Record<string, string> = {
    'vmi/sdk': new URL('../sdk/index.js', import.meta.url).href,
    // An isolated pack gets the SDK under either name, never the API (it would reach guests).
    vmi: new URL('../sdk/index.js', import.meta.url).href,
  };
  const hooks = nodeModule as {
    registerHooks?: (h: {
      resolve: (s: string, c: unknown, next: (s: string, c: unknown) => unknown) => unknown;
    }) => void;
  };
  if (typeof hooks.registerHooks !== 'function') return;
  hooks.registerHooks({
    resolve: (s, c, next) =>
      Object.hasOwn(map, s) ? { url: map[s], shortCircuit: true, format: 'module' } : next(s, c),
  });
}

/** Switches to the sandbox user for good (groups, then gid, then uid: the order setuid needs). */
function dropPrivileges(drop: { uid: number; gid: number }): void {
  process.setgroups?.([]);
  process.setgid?.(drop.gid);
  process.setuid?.(drop.uid);
  if (process.getuid?.() !== drop.uid || process.geteuid?.() !== drop.uid) {
    throw new Error(`could not switch to uid ${drop.uid}`);
  }
}

const pending = new Map<number, { resolve: (r: CallResult[]) => void; reject: (e: Error) => void }>();
let nextId = 1;

/** The plugin's executor: every batch is a message to the parent, which alone reaches the guest. */
const channelExecutor: SyscallExecutor = {
  run(calls: readonly Call[]): Promise<CallResult[]> {
    const id = nextId++;
    return new Promise<CallResult[]>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      send({ t: 'batch', id, calls: [...calls] }).catch((e: unknown) => {
        pending.delete(id);
        reject(e instanceof Error ? e : new Error(String(e)));
      });
    });
  },
};

function onReply(m: BatchReply): void {
  const p = pending.get(m.id);
  if (!p) return;
  pending.delete(m.id);
  if (m.t === 'result') p.resolve(m.results);
  else p.reject(Object.assign(new Error(m.message), { name: m.name }));
}

async function importPack(init: InitMessage): Promise<Record<string, unknown>> {
  checkManifestApi(init.pack, { plugins: init.entry, apiVersion: init.apiVersion });
  return (await import(pathToFileURL(resolvePath(init.root, init.entry)).href)) as Record<string, unknown>;
}

async function describe(init: InitMessage): Promise<void> {
  const loaded = pluginsOfModule(init.pack, init.entry, await importPack(init));
  const plugins: PluginDescription[] = loaded.plugins.map((d) => ({
    name: d.name,
    description: d.description,
    version: d.version,
    apiVersion: d.apiVersion,
    columns: d.columns.map((c) => ({
      name: c.name,
      type: c.type,
      ...(c.description === undefined ? {} : { description: c.description }),
    })),
    options: JSON.parse(JSON.stringify(d.options)) as PluginDescription['options'],
    ...(d.needs ? { needs: JSON.parse(JSON.stringify(d.needs)) as PluginDescription['needs'] } : {}),
  }));
  const rejected = loaded.rejected.map((e) => ({ plugin: e.plugin, apiVersion: e.pluginApi }));
  await send({ t: 'described', plugins, rejected });
}

async function run(init: InitMessage): Promise<void> {
  const loaded = pluginsOfModule(init.pack, init.entry, await importPack(init));
  const def = loaded.plugins.find((p) => p.name === init.plugin);
  if (!def) throw new Error(`pack ${init.pack} has no plugin '${String(init.plugin)}'`);
  const { table, runs, calls } = await runPlugin(def, {
    executor: channelExecutor,
    options: init.options,
    runLimits: init.runLimits,
    progress: (message) => void send({ t: 'progress', message: String(message) }).catch(() => {}),
  });
  for (let i = 0; i < table.rows.length; i += ROWS_PER_MESSAGE) {
    await send({
      t: 'rows',
      rows: table.rows.slice(i, i + ROWS_PER_MESSAGE).map((r) => r.map(encodeCell)),
      ...(table.depths ? { depths: table.depths.slice(i, i + ROWS_PER_MESSAGE) } : {}),
    });
  }
  await send({ t: 'done', errors: table.errors, runs, calls });
}

async function main(init: InitMessage): Promise<void> {
  try {
    aliasSdk();
    if (init.drop) dropPrivileges(init.drop);
  } catch (e) {
    // Never import the pack with more than was asked for.
    await send({ t: 'load-failed', message: `the sandbox could not be set up: ${reasonOf(e)}` });
    process.exit(1);
  }
  try {
    if (init.mode === 'describe') await describe(init);
    else await run(init);
  } catch (e) {
    const loadFailure = init.mode === 'describe' || (e instanceof Error && e.name === 'PackLoadError');
    await send(
      loadFailure
        ? { t: 'load-failed', message: reasonOf(e) }
        : { t: 'failed', name: e instanceof Error ? e.name : 'Error', message: reasonOf(e) },
    ).catch(() => {});
  }
  process.disconnect?.();
}

// The parent's going away (vmi killed or done) ends this process too.
process.on('disconnect', () => process.exit(0));
let started = false;
process.on('message', (raw: InitMessage | BatchReply) => {
  if (raw.t === 'init') {
    if (started) return;
    started = true;
    void main(raw);
  } else if (raw.t === 'result' || raw.t === 'refused') onReply(raw);
});
