import type { PluginDefinition } from '../sdk/plugin.js';

/**
 * Human listing of plugins: name, description, columns and options. `packOf` names the
 * plugin pack a plugin comes from (undefined for a built-in).
 */
export function describePlugins(
  plugins: readonly PluginDefinition[],
  packOf: (name: string) => string | undefined = () => undefined,
): string {
  const lines: string[] = [];
  for (const p of [...plugins].sort((a, b) => a.name.localeCompare(b.name))) {
    const pack = packOf(p.name);
    const vol = p.volatilityName ? `, Volatility ${p.volatilityName}` : '';
    lines.push(`${p.name}  (v${p.version}${vol}${pack ? `, pack ${pack}` : ''})`);
    lines.push(`  ${p.description}`);
    lines.push(`  columns: ${p.columns.map((c) => `${c.name} [${c.type}]`).join(', ')}`);
    const opts = Object.entries(p.options);
    if (opts.length) {
      lines.push('  options:');
      for (const [name, o] of opts) {
        lines.push(
          `    --${name}${o.type === 'boolean' ? '' : ` <${o.type}>`}${o.multiple ? ' (repeatable)' : ''}  ${o.description}`,
        );
      }
    }
    lines.push('');
  }
  return lines.join('\n').trimEnd();
}

/** One plugin as `vmi plugins available --json` prints it. */
export interface PluginCatalogEntry {
  name: string;
  /** Volatility 3's dotted module name for the same plugin, when it has one. */
  volatilityName?: string;
  version: string;
  description: string;
  /** The plugin pack it comes from; absent for a built-in. */
  pack?: string;
  apiVersion: number;
  columns: { name: string; type: string; description?: string }[];
  options: ({ name: string } & PluginDefinition['options'][string])[];
  /** Extra calls beyond the read-only policy (runs only with --allow-write); absent for most. */
  needs?: PluginDefinition['needs'];
}

/** Machine-readable listing of plugins (same order as describePlugins: by name). */
export function pluginCatalog(
  plugins: readonly PluginDefinition[],
  packOf: (name: string) => string | undefined = () => undefined,
): PluginCatalogEntry[] {
  return [...plugins]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((p) => {
      const pack = packOf(p.name);
      return {
        name: p.name,
        ...(p.volatilityName ? { volatilityName: p.volatilityName } : {}),
        version: p.version,
        description: p.description,
        ...(pack ? { pack } : {}),
        apiVersion: p.apiVersion,
        columns: p.columns.map((c) => ({
          name: c.name,
          type: c.type,
          ...(c.description ? { description: c.description } : {}),
        })),
        options: Object.entries(p.options).map(([name, o]) => ({ name, ...o })),
        ...(p.needs ? { needs: p.needs } : {}),
      };
    });
}
