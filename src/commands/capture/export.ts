import { Args, Flags } from '@oclif/core';
import { VmiCommand } from '../../cli/base-command.js';
import { exportCapture, type ExportFormat } from '../../capture/export.js';
import { parseFileMode } from '../../output/sink.js';

export default class CaptureExport extends VmiCommand {
  static override summary = "Export a capture's RAM as a raw image or an ELF core (after verifying it)";

  static override description = `raw: file offset = guest-physical address, each RAM range at its address and the holes between them (e.g. the PCI hole below 4 GiB) zero-filled, as Volatility and LiME's padded format expect; written sparse (a compressed capture's ram.raw.gz is decompressed on the fly). elf: an ELF64 core (ET_CORE, EM_X86_64) with one PT_LOAD per RAM range (p_paddr = p_vaddr = guest-physical address) and one NT_PRSTATUS note per vCPU, as memory-forensics tools read.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> lab.vmicap --format elf -o lab.elf',
    '<%= config.bin %> <%= command.id %> lab.vmicap --format raw -o lab.raw',
  ];

  static override args = {
    file: Args.string({ description: 'capture directory', required: true }),
  };

  static override flags = {
    format: Flags.string({ description: 'output format', options: ['raw', 'elf'], default: 'elf' }),
    output: Flags.string({ char: 'o', description: 'file to write (must not exist)', required: true }),
    'output-mode': Flags.string({
      description: 'permissions of the file written, octal (default 0600: it is guest memory)',
      default: '0600',
    }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CaptureExport);
    try {
      const mode = parseFileMode(flags['output-mode']);
      const r = await exportCapture(args.file, flags.format as ExportFormat, flags.output, mode);
      this.log(
        `${flags.output}: ${flags.format}, ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.ms.toFixed(0)} ms`,
      );
    } catch (e) {
      this.fail(e);
    }
  }
}
