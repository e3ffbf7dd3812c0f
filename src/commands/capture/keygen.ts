import { Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { writeKeyPair } from '../../capture/signature.js';

export default class CaptureKeygen extends VmiCommand {
  static override summary = 'Make an Ed25519 key pair for signing captures';

  static override description = `Writes PREFIX.pem (the private key, PKCS#8, mode 0600: keep it to whoever makes captures) and PREFIX.pub.pem (the public key, SPKI: give it to whoever checks them), and prints the public key's fingerprint. Existing files are never overwritten. The same keys can be made with \`openssl genpkey -algorithm ed25519\`.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> -o ~/.vmi/capture',
    '<%= config.bin %> capture create --sign-key ~/.vmi/capture.pem -o lab.vmicap',
    '<%= config.bin %> capture verify lab.vmicap --trust ~/.vmi/capture.pub.pem',
  ];

  static override flags = {
    output: Flags.string({
      char: 'o',
      description: 'path prefix of the key files (PREFIX.pem and PREFIX.pub.pem)',
      required: true,
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(CaptureKeygen);
    try {
      const k = await writeKeyPair(flags.output);
      this.log(`${k.privatePath}: private key (keep it secret)`);
      this.log(`${k.publicPath}: public key ${k.fingerprint}`);
    } catch (e) {
      this.fail(e);
    }
  }
}
