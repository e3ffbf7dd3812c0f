#!/usr/bin/env node
// V8's compiled code for vmi's and oclif's modules, kept on disk between runs (Node's
// module compile cache, in $TMPDIR/node-compile-cache unless NODE_COMPILE_CACHE says
// otherwise; NODE_DISABLE_COMPILE_CACHE=1 turns it off; Node 22.1 and newer). Enabled
// before anything else loads, hence the dynamic imports.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();

// `vmi plugins run` on a guest that a vmi server serves (vmi serve, vmi watch): sent
// there by a small client that loads no oclif (dist/server/fast-cli.js, docs/serve.md).
// It runs on any Node from 20 on, so it also skips the re-exec below. Undefined: not
// served, and the command runs the ordinary way.
let served;
const argv = process.argv.slice(2);
// Set by the native client (dist/vmi-client, via bin/vmi) when it hands a command line
// over: it already asked the server, or knows there is none. Not passed on to children.
const handedOver = process.env.VMI_CLIENT_FALLBACK === '1';
delete process.env.VMI_CLIENT_FALLBACK;
if (
  !handedOver &&
  !process.env.VMI_NODE_REEXEC &&
  (argv[0] === 'plugins:run' || (argv[0] === 'plugins' && argv[1] === 'run'))
) {
  try {
    const { serveCli } = await import('../dist/server/fast-cli.js');
    served = await serveCli(argv);
  } catch (err) {
    // Only failures before anything was printed reach here (a missing dist/, say).
    if (process.env.VMI_DEBUG) process.stderr.write(`vmi: fast path unavailable: ${err?.stack ?? err}\n`);
  }
}

if (served !== undefined) {
  process.exitCode = served;
} else {
  // vmi supports Node 22.12 and newer (package.json "engines"). On an older Node (Debian
  // 12 ships 20) the command runs again under vmi's private LTS Node, which `npm run
  // setup` keeps in vmi's cache; on a supported Node this check is the only cost.
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 12)) {
    const { runUnderPrivateNode } = await import('./node-runtime.js');
    await runUnderPrivateNode(import.meta.url);
  }
  const { execute } = await import('@oclif/core');
  await execute({ dir: import.meta.url });
}
