import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { startResidentShadow } from '../../shadow/resident.js';
import { resolveLiveTarget } from '../../targets/lab.js';
import { TRANSPORT_CHOICES } from '../../shadow/transport.js';

export default class ShadowStart extends VmiCommand {
  static override summary = 'Start a resident shadow, so later plugin runs skip the bootstrap';

  static override description = `The shadow stays in the guest between invocations, asleep on its wake-up line (or napping when the guest has none). \`vmi plugins run\` reuses it after checking it is still itself; \`vmi shadow stop\` removes it.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --guest lab2',
  ];

  static override flags = {
    guest: Flags.string({ char: 'g', description: 'lab guest (default: lab, booted if needed)' }),
    transport: Flags.option({
      options: TRANSPORT_CHOICES,
      default: 'auto' as const,
      description: 'transport',
    })(),
    'victim-pid': Flags.integer({
      description:
        'borrow this task first to fork the shadow (its PID as it sees itself); another task is used if it refuses',
      min: 2,
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ShadowStart);
    try {
      const guest = await resolveLiveTarget({ guest: flags.guest, progress: (m) => this.progress(m) });
      const stats = await startResidentShadow(guest, {
        transport: flags.transport,
        progress: (m) => this.progress(m),
        preferVictimPid: flags['victim-pid'],
      });
      this.log(
        `resident shadow pid ${stats.shadowPid} on ${guest.name} (${stats.reused ? 'already running' : `started in ${stats.attachMs.toFixed(0)} ms`}, wake-up line ${stats.wakeLine ? 'on' : 'off'})`,
      );
    } catch (err) {
      this.fail(err);
    }
  }
}
