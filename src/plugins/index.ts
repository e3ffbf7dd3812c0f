/** The registry of built-in plugins. */
import type { PluginDefinition } from '../sdk/index.js';
import { pslist } from './pslist.js';

export const builtinPlugins: readonly PluginDefinition[] = [pslist];

/** The built-in plugin of that name (case-insensitive), or undefined. */
export function findPlugin(name: string): PluginDefinition | undefined {
  const n = name.toLowerCase();
  return builtinPlugins.find((p) => p.name === n);
}
