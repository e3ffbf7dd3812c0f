import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { findLabGuest } from '../../lab/lab.js';

export default class LabStatus extends VmiCommand {
  static override description = 'Show one lab guest; exits with status 1 when it is not running';

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
  ];

  static override flags = {
    name: Flags.string({ description: 'guest name', default: 'lab' }),
    json: Flags.boolean({ description: 'print the guest description as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(LabStatus);
    let guest;
    try {
      guest = await findLabGuest(flags.name);
    } catch (e) {
      this.fail(e, 2);
    }
    if (!guest) this.fail(`${flags.name} is not running`, 1);
    if (flags.json) {
      this.log(JSON.stringify(guest, null, 2));
      return;
    }
    const fields: Array<[string, string]> = [
      ['name', guest.name],
      ['pid', String(guest.pid)],
      ['kernel', `${guest.kernelRelease} (${guest.kernelPackage})`],
      ['cpus', `${guest.cpus} x ${guest.cpuModel}`],
      ['memory', `${guest.memMiB} MiB`],
      ['started', guest.startedAt],
      ['qmp', guest.qmpSocket],
      ['gdb', guest.gdbSocket ?? '-'],
      ['ram file', guest.ramFile ?? '-'],
      ['serial', guest.serialSocket],
      ['console log', guest.consoleLog],
      ['run dir', guest.runDir],
    ];
    for (const [k, v] of fields) this.log(`${(k + ':').padEnd(13)}${v}`);
  }
}
