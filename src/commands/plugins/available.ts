import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { loadPluginRegistry } from '../../packs/registry.js';
import { describePlugins, pluginCatalog } from '../../cli/plugin-list.js';

export default class PluginsAvailable extends VmiCommand {
  static override summary = 'List the introspection plugins: built-ins and those of installed plugin packs';

  static override description = `The same listing as \`vmi plugins run --list\`: each plugin's name, version, description, output columns with their types, and the options it takes after its name on the command line. With --json: an array of plugins with their columns and option specs, for scripts.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
    `<%= config.bin %> <%= command.id %> --json | jq -r '.[].name'`,
  ];

  static override flags = {
    json: Flags.boolean({ description: 'print the plugins as JSON (name, columns, options, pack)' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(PluginsAvailable);
    try {
      const registry = await loadPluginRegistry(this.config);
      const packOf = (n: string): string | undefined => registry.packOf(n);
      if (flags.json) this.log(JSON.stringify(pluginCatalog(registry.plugins, packOf), null, 2));
      else this.log(describePlugins(registry.plugins, packOf));
    } catch (err) {
      this.fail(err);
    }
  }
}
