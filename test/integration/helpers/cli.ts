import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The checkout's root, and the CLI as `npm run build` leaves it. */
export const ROOT = new URL('../../..', import.meta.url).pathname;
export const VMI_BIN = join(ROOT, 'bin/run.js');

/** A wide terminal and no colour, so that lines are neither wrapped nor escaped. */
export const PLAIN_TERMINAL: NodeJS.ProcessEnv = { COLUMNS: '200', NO_COLOR: '1', VMI_DEBUG: '' };

export interface Ran {
  /** Exit status; 1 when the process has none (killed at the timeout, say). */
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time from start to exit. */
  ms: number;
}

export interface RunOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a program to its end; never rejects: a failure is its exit status and output. */
export function runProcess(file: string, args: readonly string[], opts: RunOptions = {}): Promise<Ran> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: opts.cwd ?? ROOT,
        env: { ...process.env, ...opts.env },
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 64 << 20,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr, ms: performance.now() - t0 });
      },
    );
  });
}

/** Runs the built CLI (`node [nodeArgs] bin/run.js ARGS`) to its end. */
export function runVmi(
  args: readonly string[],
  opts: RunOptions & { nodeArgs?: readonly string[] } = {},
): Promise<Ran> {
  return runProcess(process.execPath, [...(opts.nodeArgs ?? []), VMI_BIN, ...args], opts);
}

/**
 * Fails (never skips) when the CLI is not built: a test of the CLI that silently passes
 * on a checkout without dist/ has checked nothing. `files` are paths under the root that
 * the test needs (the command files it runs).
 */
export function requireBuilt(...files: string[]): void {
  for (const f of ['oclif.manifest.json', ...files]) {
    if (!existsSync(join(ROOT, f)))
      throw new Error(`the CLI is not built (${f} is missing): run npm run build`);
  }
}
