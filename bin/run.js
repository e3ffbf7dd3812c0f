#!/usr/bin/env node
// vmi supports Node 22.12 and newer (package.json "engines"). On an older Node (Debian 12
// ships 20) the command runs again under vmi's private LTS Node, which `npm run setup`
// keeps in vmi's cache; on a supported Node this check is the only cost.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  const { runUnderPrivateNode } = await import('./node-runtime.js');
  await runUnderPrivateNode(import.meta.url);
}

// V8's compiled code for vmi's and oclif's modules, kept on disk between runs (Node's
// module compile cache, in $TMPDIR/node-compile-cache unless NODE_COMPILE_CACHE says
// otherwise; NODE_DISABLE_COMPILE_CACHE=1 turns it off). Enabled before anything else
// loads, hence the dynamic import.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
