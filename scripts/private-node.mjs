// vmi's private Node (bin/node-runtime.js) from the shell; runs on the system's Node, however old.
//   node scripts/private-node.mjs install [--if-old] [VERSION|lts|all ...]
//       installs each (default: lts) into vmi's cache unless it is there; prints its bin directory
//   node scripts/private-node.mjs bin [--if-old] [VERSION|lts]
//       prints the bin directory of an installed one; fails, saying how to install it, if it is not
// --if-old: do nothing (print nothing) when the Node running this is one vmi supports.
import { dirname } from 'node:path';
import { installNode, installedNode, isTooOld, nodeDir, pins } from '../bin/node-runtime.js';

const [cmd, ...rest] = process.argv.slice(2);
const ifOld = rest.includes('--if-old');
const names = rest.filter((a) => a !== '--if-old');
const p = pins();
const versions = (names.length ? names : ['lts']).flatMap((v) =>
  v === 'lts' ? [p.lts] : v === 'all' ? Object.keys(p.integrity) : [v],
);
const log = (m) => process.stderr.write(`vmi: ${m}\n`);

try {
  if (ifOld && !isTooOld(process.version)) process.exit(0);
  for (const v of versions) {
    if (cmd === 'install') {
      console.log(dirname(installNode(v, { log })));
    } else if (cmd === 'bin') {
      const node = installedNode(v);
      if (!node) {
        throw new Error(
          `Node ${process.version} is older than vmi supports, and vmi's private Node ${v} is not in ` +
            `${nodeDir(v)}: run \`npm run setup\``,
        );
      }
      console.log(dirname(node));
    } else {
      throw new Error(`usage: private-node.mjs install|bin [--if-old] [VERSION|lts|all ...]`);
    }
  }
} catch (err) {
  process.stderr.write(`vmi: error: ${err.message}\n`);
  process.exit(1);
}
