/** Host-side helpers for the lab: running tools, cache and runtime directories. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { runRoot } from '../util/run-dir.js';

export class LabError extends Error {
  override name = 'LabError';
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
  code: number;
}

export interface RunOptions {
  cwd?: string;
  input?: Buffer;
  env?: NodeJS.ProcessEnv;
  /** Write stdout to this file descriptor instead of collecting it. */
  stdoutFd?: number;
  timeoutMs?: number;
}

/** Runs a host program without a shell; never throws for a non-zero exit (check .code). */
export function runTool(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input ? 'pipe' : 'ignore', opts.stdoutFd ?? 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      reject(e.code === 'ENOENT' ? new LabError(`${cmd} not found on the host`) : e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? (signal ? 128 : 1),
      });
    });
    if (opts.input && child.stdin) {
      child.stdin.on('error', () => undefined); // the tool may exit before reading everything
      child.stdin.end(opts.input);
    }
  });
}

/** Runs a tool and throws a one-line LabError when it fails. */
export async function mustRun(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const r = await runTool(cmd, args, opts);
  if (r.code !== 0) {
    const why = r.stderr.trim().split('\n').filter(Boolean).slice(-1)[0] ?? `exit code ${r.code}`;
    throw new LabError(`${cmd} ${args.slice(0, 2).join(' ')} failed: ${why}`);
  }
  return r;
}

/** Cache root: $VMI_CACHE, else $XDG_CACHE_HOME/vmi, else ~/.cache/vmi. */
export function cacheRoot(): string {
  if (process.env.VMI_CACHE) return process.env.VMI_CACHE;
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, 'vmi');
  return join(homedir(), '.cache', 'vmi');
}

export function guestsRoot(): string {
  return join(runRoot(), 'guests');
}

export function sha256(...parts: Array<string | Buffer>): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? Buffer.from(p, 'utf8') : p);
    h.update('\0');
  }
  return h.digest('hex');
}

export async function removeQuietly(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true }).catch(() => undefined);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
