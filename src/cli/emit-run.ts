/**
 * The tail of `vmi plugins run`: what it prints once the tables are there. One function for
 * the command (src/commands/plugins/run.ts) and for the fast client of a vmi server
 * (src/serve/fast-cli.ts), so that both paths write the same bytes. No oclif here: the fast
 * client must not load it.
 */
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
 * Prints a run: problems, the rendered tables (stdout or -o), each table's row-costing
 * errors, the notes. Rejects (nothing more printed) when the output cannot be written.
 */
export async function emitRunOutput(out: RunOutput): Promise<void> {
  for (const line of out.problems) process.stderr.write(`vmi: error: ${line}\n`);
  await writeOutput(out.tables, { format: out.format, output: out.output, mode: out.mode });
  for (const t of out.tables) {
    for (const e of t.errors) process.stderr.write(`vmi: ${t.plugin}: ${e}\n`);
  }
  for (const line of out.notes) process.stderr.write(`vmi: ${line}\n`);
}

/** A command's error as the CLI prints it (VmiCommand.fail): one line, the stack with VMI_DEBUG. */
export function printCommandError(err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  if (process.env.VMI_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.stderr.write(`vmi: error: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
}
