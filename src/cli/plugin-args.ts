import type { PluginDefinition } from '../sdk/plugin.js';
import type { PluginRequest } from '../runner/run-plugins.js';

export class PluginArgsError extends Error {}

/**
 * Splits Volatility-style arguments into plugin requests: each plugin name is followed by
 * its own options (`pslist --pid 1 --pid 2 psaux`). Boolean options take no value;
 * `--opt=value` and `--opt value` both work; repeated options collect into a list.
 */
export function parsePluginArgs(
  argv: readonly string[],
  find: (name: string) => PluginDefinition | undefined,
): PluginRequest[] {
  const requests: PluginRequest[] = [];
  let current: PluginRequest | undefined;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (!token.startsWith('-')) {
      const plugin = find(token);
      if (!plugin) {
        throw new PluginArgsError(`unknown plugin '${token}': see \`vmi plugins:run --list\``);
      }
      current = { plugin, options: {} };
      requests.push(current);
      continue;
    }
    if (!current) throw new PluginArgsError(`option ${token} comes before any plugin name`);
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(token);
    if (!m)
      throw new PluginArgsError(
        `${current.plugin.name}: cannot read option '${token}' (use --name or --name=value)`,
      );
    const [, name, inline] = m;
    const spec = current.plugin.options[name];
    if (!spec) {
      const known = Object.keys(current.plugin.options).map((o) => `--${o}`);
      throw new PluginArgsError(
        `${current.plugin.name} has no option --${name}${known.length ? ` (it takes ${known.join(', ')})` : ' (it takes none)'}`,
      );
    }
    let value: unknown;
    if (spec.type === 'boolean') {
      value = inline ?? true;
    } else if (inline !== undefined) {
      value = inline;
    } else {
      if (i + 1 >= argv.length) throw new PluginArgsError(`${current.plugin.name}: --${name} needs a value`);
      value = argv[++i];
    }
    const previous = current.options[name];
    if (spec.multiple) current.options[name] = [...((previous as unknown[] | undefined) ?? []), value];
    else if (previous !== undefined)
      throw new PluginArgsError(`${current.plugin.name}: --${name} given more than once`);
    else current.options[name] = value;
  }
  return requests;
}
