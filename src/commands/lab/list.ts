import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { listLabGuests, type LabGuest } from '../../lab/lab.js';

function formatGuestTable(guests: readonly LabGuest[]): string {
  const rows = [
    ['NAME', 'PID', 'KERNEL', 'CPUS', 'MEM', 'STARTED'],
    ...guests.map((g) => [
      g.name,
      String(g.pid),
      g.kernelRelease,
      String(g.cpus),
      `${g.memMiB}M`,
      g.startedAt,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

export default class LabList extends VmiCommand {
  static override description = 'List running lab guests';

  static override examples = ['<%= config.bin %> <%= command.id %>'];

  static override flags = {
    json: Flags.boolean({ description: 'print the guests as JSON' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(LabList);
    try {
      // A guest whose guest.json cannot be parsed is named (and left running); the others are listed.
      const problems: Error[] = [];
      const guests = await listLabGuests((e) => problems.push(e));
      if (flags.json) this.log(JSON.stringify(guests, null, 2));
      else this.log(formatGuestTable(guests));
      for (const p of problems) process.stderr.write(`vmi: error: ${p.message}\n`);
      if (problems.length > 0) this.exit(1);
    } catch (e) {
      this.fail(e, 1);
    }
  }
}
