/**
 * What a pack's entry module must export, checked the same way wherever the pack is
 * imported: in vmi's process (a trusted pack) or in an isolated pack's child process.
 */
import {
  apiVersion,
  checkApiVersion,
  PluginApiVersionError,
  type PluginDefinition,
  type PluginRunner,
} from '../sdk/plugin.js';

/** The `vmi` key of a pack's package.json. */
export interface PackManifest {
  /** Entry module exporting the pack's PluginDefinitions, relative to the package root. */
  plugins: string;
  /** Plugin API major version the pack was built for (optional; checked before import). */
  apiVersion?: number;
}

/** A pack that could not be loaded (bad manifest, import threw, bad exports). */
export class PackLoadError extends Error {
  override name = 'PackLoadError';
  constructor(
    readonly pack: string,
    reason: string,
  ) {
    super(`plugin pack ${pack} failed to load: ${reason}`);
  }
}

/** A loaded pack: its usable plugins and the ones refused for their API version. */
export interface LoadedPack {
  name: string;
  plugins: PluginDefinition[];
  rejected: PluginApiVersionError[];
  /** How its plugins run when they do not run in vmi's process (an isolated pack). */
  runner?: PluginRunner;
  /** The confinement of an isolated pack's processes (pack-sandbox.ts layers). */
  isolation?: string[];
}

export const PLUGIN_NAME_RE = /^[a-z][a-z0-9._-]*$/;

/** An error's message on one line. */
export function reasonOf(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.replace(/\s*\n\s*/g, ' ');
}

/** True when `x` has the shape of a PluginDefinition (what definePlugin returns). */
function isPluginDefinition(x: unknown): x is PluginDefinition {
  if (typeof x !== 'object' || x === null) return false;
  const d = x as Record<string, unknown>;
  return (
    typeof d.name === 'string' &&
    PLUGIN_NAME_RE.test(d.name) &&
    typeof d.description === 'string' &&
    typeof d.version === 'string' &&
    Array.isArray(d.columns) &&
    d.columns.length > 0 &&
    typeof d.options === 'object' &&
    d.options !== null &&
    typeof d.run === 'function' &&
    'apiVersion' in d
  );
}

/** The `vmi` manifest of a package.json's `vmi` value; undefined when the package is not a pack. */
export function packManifest(pack: string, vmi: unknown): PackManifest | undefined {
  if (vmi === undefined) return undefined;
  if (typeof vmi !== 'object' || vmi === null || typeof (vmi as PackManifest).plugins !== 'string') {
    throw new PackLoadError(pack, 'package.json "vmi.plugins" must name the entry module');
  }
  return vmi as PackManifest;
}

/** Refuses a manifest whose declared apiVersion is not this vmi's (before anything is imported). */
export function checkManifestApi(pack: string, manifest: PackManifest): void {
  if (manifest.apiVersion === undefined) return;
  try {
    checkApiVersion({ name: '*', apiVersion: manifest.apiVersion });
  } catch {
    throw new PackLoadError(
      pack,
      `it was built for vmi plugin API ${String(manifest.apiVersion)}, but this vmi provides plugin API ${apiVersion}`,
    );
  }
}

/**
 * The plugins an imported entry module exports (`export const plugins = [...]` or the
 * default export), split into usable ones and ones refused for their API version.
 * Throws PackLoadError for anything else.
 */
export function pluginsOfModule(pack: string, entry: string, mod: Record<string, unknown>): LoadedPack {
  const list = mod.plugins ?? mod.default;
  if (!Array.isArray(list)) {
    throw new PackLoadError(pack, `${entry} exports no plugin list (export const plugins = [...])`);
  }
  const plugins: PluginDefinition[] = [];
  const rejected: PluginApiVersionError[] = [];
  list.forEach((d, i) => {
    if (!isPluginDefinition(d)) {
      throw new PackLoadError(pack, `plugins[${i}] is not a plugin definition (use definePlugin)`);
    }
    try {
      checkApiVersion(d, pack);
      plugins.push(d);
    } catch (err) {
      if (err instanceof PluginApiVersionError) rejected.push(err);
      else throw err;
    }
  });
  return { name: pack, plugins, rejected };
}
