import { Command, Errors } from '@oclif/core';

/**
 * The base of vmi's commands: errors become one line on stderr and an exit status,
 * never a stack trace or a message wrapped to the terminal width (VMI_DEBUG=1 shows
 * the stack).
 */
export abstract class VmiCommand extends Command {
  protected fail(err: unknown, exit = 1): never {
    // this.exit() inside a try lands here too: let it through untouched.
    if (err instanceof Errors.ExitError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    if (process.env.VMI_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.stderr.write(`vmi: error: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
    this.exit(exit);
  }

  /** Progress for long work: stderr, so stdout stays data only. */
  protected progress(message: string): void {
    process.stderr.write(`vmi: ${message}\n`);
  }
}
