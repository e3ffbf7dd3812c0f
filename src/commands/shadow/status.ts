import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { residentShadowStatus } from '../../shadow/resident.js';
import { requireLabGuest } from '../../targets/lab.js';

export default class ShadowStatus extends VmiCommand {
  static override summary = 'Show the resident shadow of a guest (read-only: the guest is not stopped)';

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json',
  ];

  static override flags = {
    guest: Flags.string({ char: 'g', description: 'lab guest', default: 'lab' }),
    json: Flags.boolean({ description: 'machine-readable output' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ShadowStatus);
    try {
      const guest = await requireLabGuest(flags.guest);
      const st = await residentShadowStatus(guest);
      if (flags.json) this.log(JSON.stringify(st, null, 2));
      else if (!st.resident) this.log(`no resident shadow on ${guest.name}`);
      else
        this.log(
          `resident shadow pid ${st.pid} on ${guest.name}: ${st.health}` +
            (st.health === 'alive'
              ? ` (${st.state}, ${st.batches} batches, ${st.wakes} wake-ups, heartbeat ${st.heartbeat})`
              : st.detail
                ? `: ${st.detail}`
                : ''),
        );
      if (!flags.json && st.context) {
        const c = st.context;
        this.log(
          `  context: ${c.complete ? 'root (verified)' : `partial: ${c.problems.join('; ')}`}\n` +
            `  namespaces: ${Object.values(c.namespaces).join(' ')}\n` +
            `  seccomp ${c.seccomp}, no_new_privs ${c.noNewPrivs ? 1 : 0}, CapEff ${c.capabilities.effective}, CapBnd ${c.capabilities.bounding}\n` +
            `  cgroup ${c.cgroup.join(' ')}, LSM label '${c.lsm}', nice ${c.nice}, ${c.cpus} CPUs`,
        );
      }
      if (st.resident && st.health !== 'alive') this.exit(1);
    } catch (err) {
      this.fail(err);
    }
  }
}
