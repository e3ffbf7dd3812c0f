/**
 * The tail of `vmi plugins run`: what it prints once the tables are there. One function for
 * the command (src/commands/plugins/run.ts) and for the fast client of a vmi server
 * (src/serve/fast-cli.ts), so that both paths write the same bytes. No oclif here: the fast
 * client must not load it.
 */
import type { Writable } from 'node:stream';
import { writeOutput } from '../output/write.js';
import type { ResultTable } from '../output/table.js';

export interface RunOutput {
  tables: readonly ResultTable[];
  /** Lines for `vmi: error: …` (failed plugins or guests), before the output. */
  problems: readonly string[];
  /** Lines for `vmi: …` (timings, the trap fall-back), after the output. */
  notes: readonly string[];
  /** Renderer name, -o path, file mode. */
  format: string;
  output?: string;
  mode: number;
}

/**
 * Where a run is printed: the process's own stdout and stderr unless given (the vmi server
 * renders a native client's run into bytes this way: src/server/render-cli.ts).
 */
export interface RunIo {
  /** The stream the tables go to when there is no -o (its `isTTY` decides binary refusals). */
  stdout?: Writable;
  /** Writes one stderr line (with its newline). */
  stderr?: (text: string) => void;
}

const processStderr = (text: string): void => void process.stderr.write(text);

/**
 * Prints a run: problems, the rendered tables (stdout or -o), each table's row-costing
 * errors, the notes. Rejects (nothing more printed) when the output cannot be written.
 */
export async function emitRunOutput(out: RunOutput, io: RunIo = {}): Promise<void> {
  const err = io.stderr ?? processStderr;
  for (const line of out.problems) err(`vmi: error: ${line}\n`);
  await writeOutput(out.tables, {
    format: out.format,
    output: out.output,
    mode: out.mode,
    stdout: io.stdout,
  });
  for (const t of out.tables) {
    for (const e of t.errors) err(`vmi: ${t.plugin}: ${e}\n`);
  }
  for (const line of out.notes) err(`vmi: ${line}\n`);
}

/** A command's error as the CLI prints it (VmiCommand.fail): one line, the stack with VMI_DEBUG. */
export function printCommandError(err: unknown): void {
  if (process.env.VMI_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.stderr.write(commandErrorLine(err));
}

/** `vmi: error: MESSAGE\n`, the message on one line (what printCommandError prints without VMI_DEBUG). */
export function commandErrorLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return `vmi: error: ${message.replace(/\s*\n\s*/g, ' ')}\n`;
}
