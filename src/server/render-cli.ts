/**
 * A served `vmi plugins run` rendered into bytes by the server, for the native client
 * (src/server/fast-client/vmi-client.c, docs/serve.md): the client has no renderers, so the
 * server does exactly what the command's tail (emitRunOutput, src/cli/emit-run.ts) does,
 * into a list of writes instead of the process's stdout and stderr. The client writes them
 * in order and exits with the code, so the bytes (and their interleaving on a terminal)
 * are those of the command without a server.
 *
 * `-o FILE` / `-o DIR/`: the server writes the files itself, atomically, as writeOutput
 * does (the path was resolved against the client's working directory by cli-request.ts).
 * The socket is 0600, so the server runs as the client's user and the files have the owner
 * and mode they would have had; a directory that -o creates gets the server's umask.
 */
import { Writable } from 'node:stream';
import { commandErrorLine, emitRunOutput } from '../cli/emit-run.js';
import type { CliOutcome } from '../serve/protocol.js';

/** How the client's stdout looks: the only thing renderers ask of it (binary formats refuse a terminal). */
export interface RenderTerminal {
  stdoutIsTTY: boolean;
}

/** The bytes of a run in the order the command writes them: `[fd, bytes]`, fd 1 or 2. */
export interface RenderedRun {
  writes: [1 | 2, Uint8Array][];
  exitCode: number;
}

/** Collects writes into `[fd, bytes]` chunks, merging consecutive ones to the same fd. */
class Recorder {
  readonly writes: [1 | 2, Uint8Array][] = [];
  private parts: Buffer[] = [];
  private fd: 1 | 2 = 1;

  add(fd: 1 | 2, bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (fd !== this.fd) this.cut();
    this.fd = fd;
    this.parts.push(bytes);
  }

  cut(): void {
    if (this.parts.length > 0) this.writes.push([this.fd, Buffer.concat(this.parts)]);
    this.parts = [];
  }
}

/** A Writable that records into fd 1, with the client's isTTY (writeOutput checks it). */
class RecordingStdout extends Writable {
  readonly isTTY: boolean;
  constructor(
    private readonly rec: Recorder,
    isTTY: boolean,
  ) {
    super({ decodeStrings: true });
    this.isTTY = isTTY;
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    this.rec.add(1, chunk);
    done();
  }
}

/**
 * What `vmi plugins run` prints for an outcome, and its exit code: emitRunOutput's bytes;
 * an output that cannot be written is the command's one-line error and exit code 1.
 */
export async function renderCliOutcome(out: CliOutcome, term: RenderTerminal): Promise<RenderedRun> {
  const rec = new Recorder();
  const stdout = new RecordingStdout(rec, term.stdoutIsTTY);
  const stderr = (text: string): void => rec.add(2, Buffer.from(text, 'utf8'));
  let exitCode = out.exitCode;
  try {
    await emitRunOutput(out, { stdout, stderr });
  } catch (e) {
    stderr(commandErrorLine(e));
    exitCode = 1;
  }
  rec.cut();
  return { writes: rec.writes, exitCode };
}
