/**
 * The fast path of `vmi plugins run` (bin/run.js loads this before oclif): when a vmi
 * server serves the guest the command line names, the command is sent there and its
 * outcome printed with the command's own tail (src/cli/emit-run.ts). This module and what
 * it imports (the client, the protocol, the text renderers) are all that loads: no oclif,
 * no plugin registry, no guest engine. It runs on whatever Node started bin/run.js (the
 * system's Node 20 included: it uses nothing newer), so it skips the re-exec under vmi's
 * private Node too.
 *
 * The `vmi` command itself (bin/vmi) serves these command lines without any Node: its
 * native client (src/server/fast-client/vmi-client.c) asks the server to render, since a
 * Node start alone (100-145 ms here) is more than the whole target of 0.15 s. This path
 * remains for `node bin/run.js` and for hosts built without a C compiler.
 *
 * Returns the exit code when the server handled the command, undefined when the command
 * must run the ordinary way (no server, a stale socket, a command line the server does
 * not serve, a server that went away before answering).
 */
// Everything else is imported only once the command line names a served guest: a
// `plugins run --help` or `--list` must load nothing but this file before oclif
// (test/integration/cli-startup.test.ts).

/** Flags that the server never serves (the command runs the ordinary way). */
const NOT_SERVED = new Set(['--help', '-h', '--list', '--capture', '--all-guests', '--version']);

/**
 * Which guest a `plugins run` command line names, from a plain scan of its arguments:
 * `{ lab }`, `{ qmp }`, or undefined when it cannot be served (several guests, --capture,
 * --help …). The server parses the command line again with the command's own parser and
 * falls back when the scan was wrong, so a wrong guess costs time, never a wrong output.
 */
export function servedTarget(args: readonly string[]): { lab: string } | { qmp: string } | undefined {
  const guests: string[] = [];
  const qmps: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] =
      a.startsWith('--') && a.includes('=')
        ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
        : [a, undefined];
    if (NOT_SERVED.has(flag)) return undefined;
    if (flag === '--guest' || flag === '-g') {
      const v = inline ?? args[++i];
      if (v === undefined) return undefined;
      guests.push(v);
    } else if (flag === '--qmp') {
      const v = inline ?? args[++i];
      if (v === undefined) return undefined;
      qmps.push(v);
    } else if (/^-g./.test(a)) {
      guests.push(a.slice(2));
    }
  }
  if (guests.length + qmps.length > 1) return undefined;
  if (qmps.length === 1) return { qmp: qmps[0] };
  return { lab: guests[0] ?? 'lab' };
}

/** Runs `vmi plugins run ARGS` through the guest's server; undefined: not served. */
export async function serveCli(argv: readonly string[]): Promise<number | undefined> {
  if (process.env.VMI_SERVER === 'off' || process.env.VMI_TRUST_PACKS) return undefined;
  const args =
    argv[0] === 'plugins:run'
      ? argv.slice(1)
      : argv[0] === 'plugins' && argv[1] === 'run'
        ? argv.slice(2)
        : undefined;
  if (!args) return undefined;
  const target = servedTarget(args);
  if (!target) return undefined;
  const timing = args.includes('--timing');
  const { ServerConnection, ServerGoneError, ServerRequestError, serverSocketPath } =
    await import('../serve/client.js');
  const conn = await ServerConnection.connect(serverSocketPath(target)).catch(() => undefined);
  if (!conn) return undefined;
  const { emitRunOutput, printCommandError } = await import('../cli/emit-run.js');
  const { decodeCli, STATUS_TIMEOUT_MS } = await import('../serve/protocol.js');
  try {
    let reply;
    try {
      // A status request rides along: a server that accepts but does not answer it in
      // time (stopped, stuck) closes the connection, and the command runs the ordinary way.
      void conn.request({ op: 'status' }, undefined, STATUS_TIMEOUT_MS).catch(() => undefined);
      reply = await conn.request({ op: 'cli', argv: [...args], cwd: process.cwd() }, (line) =>
        process.stderr.write(`vmi: ${line}\n`),
      );
    } catch (e) {
      if (e instanceof ServerGoneError) return undefined;
      if (e instanceof ServerRequestError) {
        printCommandError(new Error(e.message));
        return 1;
      }
      throw e;
    }
    if (typeof reply.fallback === 'string') {
      if (timing)
        process.stderr.write(`vmi: not through the vmi server at ${conn.path}: ${reply.fallback}\n`);
      return undefined;
    }
    const out = decodeCli(reply.cli);
    if (timing) {
      const pid = typeof reply.serverPid === 'number' ? ` pid ${reply.serverPid}` : '';
      process.stderr.write(`vmi: through the vmi server${pid} at ${conn.path}\n`);
    }
    try {
      await emitRunOutput(out);
    } catch (e) {
      printCommandError(e);
      return 1;
    }
    return out.exitCode;
  } finally {
    conn.close();
  }
}
