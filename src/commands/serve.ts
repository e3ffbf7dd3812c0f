import { Flags } from '@oclif/core';
import { VmiCommand } from '../cli/base-command.js';
import PluginsRun from './plugins/run.js';
import { serveGuest, type ServingGuest } from '../server/host.js';
import { TRANSPORT_CHOICES } from '../shadow/transport.js';

export default class Serve extends VmiCommand {
  static override summary =
    'Serve a guest to other vmi processes: its shadow stays resident, plugin runs go through one socket';

  static override description = `Opens the guest, makes its shadow resident and listens on a Unix socket in the guest's private runtime directory (serve.sock, mode 0600). While it runs, \`vmi plugins run\` on that guest (and the API's openGuest) sends its work there instead of attaching: no attach, no bootstrap, the same output byte for byte. Runs from several clients take turns, one at a time. The protocol is documented in docs/serve.md.

With --qmp the server is the QMP socket's one client, and further vmi commands on that QEMU go through it.

SIGINT or SIGTERM stops the server: the run in flight finishes, the socket is removed, and the shadow exits (--keep-shadow leaves it for the next vmi). A server killed with SIGKILL leaves its socket behind: the next vmi ignores it, and the next \`vmi serve\` replaces it. When its lab guest stops running (\`vmi lab down\`), the server says so and exits with status 1.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> &',
    '<%= config.bin %> <%= command.id %> --guest lab2',
    '<%= config.bin %> <%= command.id %> --qmp /run/my-vm/qmp.sock',
  ];

  static override flags = {
    guest: Flags.string({
      char: 'g',
      description: 'lab guest to serve (default: lab, booted if needed)',
      exclusive: ['qmp'],
    }),
    qmp: Flags.string({ description: 'QMP socket of a QEMU that vmi did not start' }),
    transport: Flags.option({
      description: 'how batches reach the shadow: doorbell (shared RAM) or trap (VM stopped)',
      options: TRANSPORT_CHOICES,
      default: 'auto' as const,
    })(),
    'keep-shadow': Flags.boolean({
      description: 'leave the resident shadow in the guest when the server stops (the next vmi reuses it)',
    }),
    verbose: Flags.boolean({ char: 'v', description: 'one line on stderr per request served' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    let serving: ServingGuest | undefined;
    try {
      const progress = (m: string): void => this.progress(m);
      serving = await serveGuest(flags.qmp ? { qmp: flags.qmp } : { lab: flags.guest ?? 'lab' }, {
        planner: (argv) => new PluginsRun(argv, this.config).plan(),
        kind: 'serve',
        guestOptions: { transport: flags.transport, keepShadow: flags['keep-shadow'], progress },
        warm: true,
        ...(flags.verbose ? { log: progress } : {}),
      });
      const s = serving.server.status();
      this.log(
        `serving ${s.guest} at ${serving.server.socketPath} (pid ${s.pid}, shadow pid ${serving.shadowPid ?? '?'})`,
      );
      const gone = await new Promise<string | undefined>((resolve) => {
        let stopping = false;
        const onSignal = (name: string) => () => {
          if (stopping) process.exit(130);
          stopping = true;
          this.progress(`${name}: stopping the server`);
          resolve(undefined);
        };
        process.once('SIGINT', onSignal('SIGINT'));
        process.once('SIGTERM', onSignal('SIGTERM'));
        // A guest stopped under the server (vmi lab down) ends it: nothing left to serve.
        void serving!.whenGone().then(resolve);
      });
      if (gone !== undefined) throw new Error(`stopped serving ${s.guest}: ${gone}`);
    } catch (err) {
      if (serving) await serving.close().catch(() => undefined);
      this.fail(err);
    }
    await serving?.close();
  }
}
