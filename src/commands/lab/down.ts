import { Command, Flags } from '@oclif/core';
import { labDown } from '../../lab/lab.js';

export default class LabDown extends Command {
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
      this.error((e as Error).message, { exit: 1 });
    }
  }
}
