import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { stopResidentShadow } from '../../shadow/resident.js';
import { requireLabGuest } from '../../targets/lab.js';

export default class ShadowStop extends VmiCommand {
  static override summary = 'Stop the resident shadow: it exits and leaves nothing behind';

  static override examples = ['<%= config.bin %> <%= command.id %>'];

  static override flags = {
    guest: Flags.string({ char: 'g', description: 'lab guest', default: 'lab' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ShadowStop);
    try {
      const guest = await requireLabGuest(flags.guest);
      const pid = await stopResidentShadow(guest, { progress: (m) => this.progress(m) });
      this.log(
        pid === undefined ? `no resident shadow on ${guest.name}` : `resident shadow pid ${pid} stopped`,
      );
    } catch (err) {
      this.fail(err);
    }
  }
}
