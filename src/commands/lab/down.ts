import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { labDown } from '../../lab/lab.js';

export default class LabDown extends VmiCommand {
  static override description = 'Stop a lab guest and remove its run directory and RAM file';

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --name lab2',
  ];

  static override flags = {
    name: Flags.string({ description: 'guest name', default: 'lab' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(LabDown);
    try {
      const stopped = await labDown(flags.name);
      this.log(stopped ? `${flags.name} stopped` : `${flags.name} was not running`);
    } catch (e) {
      this.fail(e, 1);
    }
  }
}
