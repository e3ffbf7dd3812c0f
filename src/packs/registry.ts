/**
 * The plugin registry: built-in plugins plus the plugins of installed plugin packs.
 *
 * A pack is an oclif plugin (installed with `vmi plugins install`, or linked with
 * `vmi plugins link DIR`) whose package.json also has a `vmi` key:
 *
 *     "oclif": {},
 *     "vmi": { "plugins": "./dist/index.js", "apiVersion": 1 }
 *
 * `plugins` is the pack's entry module, relative to the package root; it exports its
 * PluginDefinitions as `export const plugins = [...]` (or as the default export).
 * `apiVersion` (optional) lets vmi refuse a pack for another plugin API without
 * importing it; each definition is checked too (definePlugin stamps it).
 *
 * A pack is isolated unless trusted (LoadRegistryOptions.trusted; VMI_TRUST_PACKS,
 * `--trust-pack`): it is never imported here but described by a confined child process
 * (isolated-pack.ts), and its plugins carry a runner that runs them in children of their
 * own. A trusted pack is imported into vmi's process (loadPack): host code with vmi's
 * privileges.
 *
 * Rules: a built-in always wins a name clash, and so does the pack loaded first when two
 * packs clash; every clash is one warning line naming both sides. A pack that fails to
 * load costs one warning line and nothing else.
 */
import { existsSync, realpathSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { PluginApiVersionError, PluginDefinition, PluginRunner } from '../sdk/plugin.js';
import { builtinPlugins } from '../plugins/index.js';
import { describeIsolatedPack } from './isolated-pack.js';
import {
  checkManifestApi,
  packManifest,
  PackLoadError,
  pluginsOfModule,
  reasonOf,
  type LoadedPack,
} from './pack-exports.js';

export { PackLoadError, type LoadedPack, type PackManifest } from './pack-exports.js';

/** The part of an oclif plugin (Config.plugins values) the registry reads. */
export interface PackSource {
  /** npm package name: the pack's name in messages. */
  name: string;
  /** Package root directory. */
  root: string;
  /** Its package.json. */
  pjson: { vmi?: unknown; [key: string]: unknown };
  /** The CLI's own package (skipped). */
  isRoot?: boolean;
}

/** The part of an oclif Config the registry reads. */
export interface PackConfig {
  plugins: ReadonlyMap<string, PackSource> | Iterable<PackSource>;
}

/** One registered plugin and where it comes from. */
export interface RegistryEntry {
  plugin: PluginDefinition;
  /** The pack's package name; undefined for a built-in. */
  pack?: string;
  /** How it runs when not in vmi's process (a plugin of an isolated pack). */
  runner?: PluginRunner;
}

let sdkAliased = false;

/**
 * Makes `import ... from 'vmi/sdk'` (and `'vmi'`) in a pack resolve to the SDK of the
 * running CLI, whatever the pack has (or lacks) in its own node_modules: one SDK instance
 * in the process, so `instanceof SyscallError` (isVanished) and apiVersion mean the same
 * thing in the pack as in vmi. A Node resolve hook, registered once, only when running
 * from the built package (dist) and only when a pack is about to be imported.
 */
function aliasSdkForPacks(): void {
  if (sdkAliased) return;
  sdkAliased = true;
  const sdk = new URL('../sdk/index.js', import.meta.url);
  const main = new URL('../index.js', import.meta.url);
  const register = (nodeModule as { register?: (url: string) => void }).register;
  if (typeof register !== 'function' || sdk.protocol !== 'file:' || !existsSync(fileURLToPath(sdk))) return;
  const hook =
    `const m = { 'vmi/sdk': ${JSON.stringify(sdk.href)}, vmi: ${JSON.stringify(main.href)} };\n` +
    'export async function resolve(s, c, next) {\n' +
    '  return Object.hasOwn(m, s) ? { url: m[s], shortCircuit: true, format: "module" } : next(s, c);\n' +
    '}\n';
  register(`data:text/javascript,${encodeURIComponent(hook)}`);
}

/**
 * Imports one pack into vmi's own process (a trusted pack: its code runs with vmi's
 * privileges) and checks its exports. Throws PackLoadError.
 */
export async function loadPack(source: PackSource): Promise<LoadedPack> {
  const manifest = packManifest(source.name, source.pjson.vmi);
  if (!manifest) throw new PackLoadError(source.name, 'package.json has no "vmi" key');
  checkManifestApi(source.name, manifest);
  let mod: Record<string, unknown>;
  aliasSdkForPacks();
  try {
    mod = (await import(pathToFileURL(resolve(source.root, manifest.plugins)).href)) as Record<
      string,
      unknown
    >;
  } catch (err) {
    throw new PackLoadError(source.name, reasonOf(err));
  }
  return pluginsOfModule(source.name, manifest.plugins, mod);
}

/**
 * Describes one pack from a confined child process (src/packs/isolated-pack.ts): nothing
 * of the pack runs in vmi's process; its plugins run in children of their own.
 * Throws PackLoadError.
 */
export async function loadIsolatedPack(source: PackSource): Promise<LoadedPack> {
  const manifest = packManifest(source.name, source.pjson.vmi);
  if (!manifest) throw new PackLoadError(source.name, 'package.json has no "vmi" key');
  checkManifestApi(source.name, manifest);
  let root: string;
  try {
    root = realpathSync(source.root);
  } catch (err) {
    throw new PackLoadError(source.name, reasonOf(err));
  }
  return describeIsolatedPack({ name: source.name, root, manifest });
}

/** Built-ins and pack plugins, merged. */
export class PluginRegistry {
  private readonly byName = new Map<string, RegistryEntry>();
  private readonly refused = new Map<string, PluginApiVersionError>();
  /** Volatility's dotted names (`linux.malware.malfind`) → vmi's plugin name. */
  private readonly aliases = new Map<string, string>();
  /** One line each (without the `vmi: warning:` prefix): load failures and clashes. */
  readonly warnings: string[] = [];

  constructor(builtins: readonly PluginDefinition[], packs: readonly LoadedPack[] = []) {
    for (const plugin of builtins) {
      this.byName.set(plugin.name, { plugin });
      if (plugin.volatilityName) this.aliases.set(plugin.volatilityName, plugin.name);
    }
    for (const pack of packs) {
      for (const plugin of pack.plugins) {
        const existing = this.byName.get(plugin.name);
        if (existing) {
          this.warnings.push(
            existing.pack === undefined
              ? `plugin '${plugin.name}' of pack ${pack.name} clashes with the built-in ${plugin.name}: using the built-in`
              : existing.pack === pack.name
                ? `pack ${pack.name} defines plugin '${plugin.name}' twice: using the first`
                : `plugin '${plugin.name}' of pack ${pack.name} clashes with the one of pack ${existing.pack}: using ${existing.pack}'s`,
          );
          continue;
        }
        this.byName.set(plugin.name, {
          plugin,
          pack: pack.name,
          ...(pack.runner ? { runner: pack.runner } : {}),
        });
      }
      for (const err of pack.rejected) {
        this.warnings.push(err.message);
        if (!this.byName.has(err.plugin)) this.refused.set(err.plugin, err);
      }
    }
  }

  /** Every usable plugin with its origin, built-ins first. */
  get entries(): RegistryEntry[] {
    return [...this.byName.values()];
  }

  /** Every usable plugin. */
  get plugins(): PluginDefinition[] {
    return this.entries.map((e) => e.plugin);
  }

  /**
   * The plugin of that name (case-insensitive), or undefined. A pack plugin refused for
   * its API version throws its PluginApiVersionError (naming the pack and both versions).
   */
  find(name: string): PluginDefinition | undefined {
    const n = this.canonical(name);
    const hit = this.byName.get(n);
    if (hit) return hit.plugin;
    const refused = this.refused.get(n);
    if (refused) throw refused;
    return undefined;
  }

  /** How the named plugin runs outside vmi's process; undefined: runPlugin, in process. */
  runnerOf(name: string): PluginRunner | undefined {
    return this.byName.get(this.canonical(name))?.runner;
  }

  /** The pack a plugin comes from; undefined for a built-in or an unknown name. */
  packOf(name: string): string | undefined {
    return this.byName.get(this.canonical(name))?.pack;
  }

  /** vmi's name for `name`: lowercased, a built-in's Volatility dotted name mapped to it. */
  private canonical(name: string): string {
    const n = name.toLowerCase();
    return this.aliases.get(n) ?? n;
  }
}

function sourcesOf(config: PackConfig): PackSource[] {
  const p = config.plugins;
  return [
    ...('values' in p && typeof p.values === 'function'
      ? (p as ReadonlyMap<string, PackSource>).values()
      : (p as Iterable<PackSource>)),
  ];
}

/** Options of {@link loadPluginRegistry}. */
export interface LoadRegistryOptions {
  /** Built-in plugins (default: the CLI's). */
  builtins?: readonly PluginDefinition[];
  /** Called with each warning line; default: `vmi: warning: LINE` on stderr. */
  onWarning?: (line: string) => void;
  /**
   * Packs to import into vmi's own process (trusted: host code with vmi's privileges).
   * Every other pack is isolated: described and run in confined child processes.
   * Default: the names in VMI_TRUST_PACKS (comma-separated; `*` trusts every pack).
   */
  trusted?: (pack: string) => boolean;
}

/** The packs VMI_TRUST_PACKS names (comma-separated package names; `*`: all). */
export function trustedFromEnv(value = process.env.VMI_TRUST_PACKS): (pack: string) => boolean {
  const names = new Set(
    (value ?? '')
      .split(',')
      .map((n) => n.trim())
      .filter((n) => n !== ''),
  );
  return (pack) => names.has('*') || names.has(pack);
}

/**
 * Loads every pack among the oclif plugins of `config` (`this.config` in a command) and
 * merges them with the built-ins. Never throws for a broken pack: it becomes a warning,
 * reported through `onWarning` (stderr by default) and kept in `registry.warnings`.
 */
export async function loadPluginRegistry(
  config: PackConfig,
  opts: LoadRegistryOptions = {},
): Promise<PluginRegistry> {
  const trusted = opts.trusted ?? trustedFromEnv();
  const sources = sourcesOf(config).filter((s) => !s.isRoot && s.pjson?.vmi !== undefined);
  // Isolated packs are described concurrently (a Node start each); order is kept.
  const settled = await Promise.allSettled(
    sources.map((s) => (trusted(s.name) ? loadPack(s) : loadIsolatedPack(s))),
  );
  const packs: LoadedPack[] = [];
  const failures: string[] = [];
  settled.forEach((r, i) => {
    if (r.status === 'fulfilled') packs.push(r.value);
    else
      failures.push(
        r.reason instanceof PackLoadError
          ? r.reason.message
          : `plugin pack ${sources[i].name} failed to load: ${reasonOf(r.reason)}`,
      );
  });
  const registry = new PluginRegistry(opts.builtins ?? builtinPlugins, packs);
  registry.warnings.unshift(...failures);
  const warn = opts.onWarning ?? ((line: string) => process.stderr.write(`vmi: warning: ${line}\n`));
  for (const w of registry.warnings) warn(w);
  return registry;
}
