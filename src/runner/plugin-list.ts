import type { PluginDefinition } from '../sdk/plugin.js';

/** Human listing of plugins: name, description, columns and options. */
export function describePlugins(plugins: readonly PluginDefinition[]): string {
  const lines: string[] = [];
  for (const p of [...plugins].sort((a, b) => a.name.localeCompare(b.name))) {
    lines.push(`${p.name}  (v${p.version})`);
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
