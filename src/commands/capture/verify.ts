import { Args, Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { verifyCapture } from '../../capture/artifact.js';
import { checkCaptureSignature, loadTrustedKey } from '../../capture/signature.js';

export default class CaptureVerify extends VmiCommand {
  static override summary = 'Recompute every part of a capture against its manifest (sizes and sha256)';

  static override description = `With --trust PUB.pem (repeatable) the capture must also carry a signature (manifest.sig, from capture create --sign-key) by one of those Ed25519 public keys over manifest.sha256, which covers the manifest and through it every part: an unsigned capture, a changed byte or another key is refused with a non-zero exit.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> lab.vmicap',
    '<%= config.bin %> <%= command.id %> lab.vmicap --trust ~/.vmi/capture.pub.pem',
  ];

  static override args = {
    file: Args.string({ description: 'capture directory', required: true }),
  };

  static override flags = {
    trust: Flags.string({
      description: 'require a signature by this Ed25519 public key (PEM; repeatable: any of them)',
      multiple: true,
    }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CaptureVerify);
    try {
      const trusted = await Promise.all((flags.trust ?? []).map((p) => loadTrustedKey(p)));
      // The signature first (cheap), then the chain it covers: manifest, then every part.
      const signed = trusted.length > 0 ? await checkCaptureSignature(args.file, trusted) : undefined;
      const r = await verifyCapture(args.file);
      const n = Object.keys(r.manifest.parts).length;
      this.log(
        `${args.file}: OK (capture ${r.manifest.id}, ${n} parts, ${(r.bytes / 2 ** 20).toFixed(1)} MiB hashed in ${r.totalMs.toFixed(0)} ms` +
          (signed ? `; signed by ${signed.key}` : '') +
          ')',
      );
    } catch (e) {
      this.fail(e);
    }
  }
}
