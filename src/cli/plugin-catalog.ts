/**
 * The plugins of a registry (built-ins and installed packs) as the tables `vmi query` and
 * `vmi collect` know: names, declared options, columns, and a runnable request for each.
 */
import type { ColumnSpec } from '../output/columns.js';
import type { PluginRegistry } from '../packs/registry.js';
import type { PluginRequest } from '../runner/run-plugins.js';
import type { OptionSpecs } from '../sdk/plugin.js';

export interface PluginCatalogView {
  names: string[];
  optionsOf(name: string): OptionSpecs | undefined;
  columnsOf(name: string): readonly ColumnSpec[];
  request(name: string, options: Record<string, unknown>): PluginRequest;
}

export function registryCatalog(registry: PluginRegistry): PluginCatalogView {
  const find = (name: string) => {
    const p = registry.find(name);
    if (!p) throw new Error(`unknown plugin '${name}': see \`vmi plugins available\``);
    return p;
  };
  return {
    names: registry.plugins.map((p) => p.name.toLowerCase()),
    optionsOf: (name) => registry.find(name)?.options,
    columnsOf: (name) => find(name).columns,
    request: (name, options) => {
      const plugin = find(name);
      const runner = registry.runnerOf(plugin.name);
      return { plugin, options, ...(runner ? { runner } : {}) };
    },
  };
}
