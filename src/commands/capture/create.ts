import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { createCapture } from '../../capture/create.js';
import { keyFingerprint, loadSigningKey } from '../../capture/signature.js';
import { DEFAULT_LAB_NAME } from '../../lab/lab.js';
import { requireLabGuest } from '../../targets/lab.js';

export default class CaptureCreate extends VmiCommand {
  static override summary = 'Capture a live guest (device + vCPU state and raw RAM) into a capture directory';

  static override description = `The guest is paused for the capture and always resumed (the pause time is reported). A guest whose RAM is a shared memory-backend-file (lab guests) takes the fast path: device and vCPU state through a migration with x-ignore-shared, then a copy of the RAM file. Any other QEMU reachable over QMP (--qmp) has its RAM read inside the QEMU process (/proc/PID/mem) while the guest is paused, the device state coming from a migration whose RAM pages vmi drops; without ptrace rights over QEMU (or with --full) the RAM comes from a full migration stream taken while the guest is paused. One stderr line and the manifest's ramSource say which. The capture is written beside FILE as .FILE.partial-<pid> and renamed into place last. With --compress the RAM is stored gzip-compressed (ram.raw.gz, level 1), compressed after the guest is resumed: the pause does not grow, the capture takes longer.

With --sign-key KEY.pem (an Ed25519 private key: vmi capture keygen) the capture also gets manifest.sig, a signature of manifest.sha256 (which covers every part): \`vmi capture verify --trust KEY.pub.pem\` and \`vmi plugins run --capture … --trust KEY.pub.pem\` then refuse a capture that is unsigned, changed, or signed by another key.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> -o lab.vmicap',
    '<%= config.bin %> <%= command.id %> --guest lab2 -o lab2.vmicap',
    '<%= config.bin %> <%= command.id %> --compress -o lab.vmicap',
    '<%= config.bin %> <%= command.id %> --qmp /run/myvm/qmp.sock -o myvm.vmicap',
    '<%= config.bin %> <%= command.id %> --sign-key ~/.vmi/capture.pem -o lab.vmicap',
  ];

  static override flags = {
    guest: Flags.string({
      char: 'g',
      description: 'lab guest to capture (default: lab)',
      exclusive: ['qmp'],
    }),
    qmp: Flags.string({ description: 'QMP unix socket of any QEMU to capture' }),
    output: Flags.string({ char: 'o', description: 'capture directory to create', required: true }),
    full: Flags.boolean({
      description: "use a full migration stream even when RAM is shared or readable in QEMU's memory",
    }),
    compress: Flags.boolean({ description: 'store the RAM gzip-compressed (ram.raw.gz)', default: false }),
    'with-disks': Flags.boolean({
      description:
        'also copy every disk as it was at the pause (QEMU backup job; the guest resumes while it copies): replays read these copies, not the live images',
      default: false,
    }),
    json: Flags.boolean({ description: 'print the result as JSON' }),
    'sign-key': Flags.string({
      description: 'sign the capture with this Ed25519 private key (PEM; vmi capture keygen makes one)',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(CaptureCreate);
    try {
      // Before the guest is touched: a bad key costs nothing.
      const signKey = flags['sign-key'] ? await loadSigningKey(flags['sign-key']) : undefined;
      let qmpSocket = flags.qmp;
      let guestName: string | undefined;
      let kernelRelease: string | undefined;
      if (!qmpSocket) {
        const name = flags.guest ?? DEFAULT_LAB_NAME;
        const g = await requireLabGuest(name);
        qmpSocket = g.qmpSocket;
        guestName = g.name;
        kernelRelease = g.kernelRelease;
      }
      const r = await createCapture({
        qmpSocket,
        output: flags.output,
        guestName,
        kernelRelease,
        full: flags.full,
        compress: flags.compress,
        withDisks: flags['with-disks'],
        signKey,
        progress: (m) => this.progress(m),
      });
      const t = r.manifest.timing;
      if (flags.json) {
        this.log(
          JSON.stringify({
            path: r.path,
            id: r.manifest.id,
            mode: r.manifest.mode,
            ramSource: r.manifest.ramSource,
            bytes: r.bytes,
            ...(signKey ? { signedBy: keyFingerprint(signKey) } : {}),
            ...(r.compressMs !== undefined ? { compression: 'gzip' } : {}),
            timing: {
              ...t,
              totalMs: r.totalMs,
              ...(r.compressMs !== undefined ? { compressMs: r.compressMs } : {}),
            },
          }),
        );
      } else {
        this.log(
          `${r.path}: capture ${r.manifest.id} (${r.manifest.mode}), ${(r.bytes / 2 ** 20).toFixed(1)} MiB; ` +
            `guest paused ${t.pauseMs.toFixed(1)} ms (migrate ${t.migrateMs.toFixed(1)} ms, RAM copy ${t.copyMs.toFixed(1)} ms)` +
            (r.compressMs !== undefined ? `; RAM gzip ${r.compressMs.toFixed(0)} ms` : '') +
            (signKey ? `; signed by ${keyFingerprint(signKey)}` : '') +
            `; total ${r.totalMs.toFixed(0)} ms`,
        );
      }
    } catch (e) {
      this.fail(e);
    }
  }
}
