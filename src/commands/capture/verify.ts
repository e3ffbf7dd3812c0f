import { Args } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { verifyCapture } from '../../capture/artifact.js';

export default class CaptureVerify extends VmiCommand {
  static override summary = 'Recompute every part of a capture against its manifest (sizes and sha256)';

  static override examples = ['<%= config.bin %> <%= command.id %> lab.vmicap'];

  static override args = {
    file: Args.string({ description: 'capture directory', required: true }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(CaptureVerify);
    try {
      const r = await verifyCapture(args.file);
      const n = Object.keys(r.manifest.parts).length;
      this.log(
        `${args.file}: OK (capture ${r.manifest.id}, ${n} parts, ${(r.bytes / 2 ** 20).toFixed(1)} MiB hashed in ${r.totalMs.toFixed(0)} ms)`,
      );
    } catch (e) {
      this.fail(e);
    }
  }
}
