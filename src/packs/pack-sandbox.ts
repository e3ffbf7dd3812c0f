/**
 * How an isolated pack's child process is started: the command line and the layers of
 * confinement it gets. Pure planning (sandboxPlan) apart from probing the host once
 * (probeSandboxHost), so that the unit tests can check every combination.
 *
 * Layers, each closing what the one before cannot:
 * - Node's permission model (`--permission`): no file writes, no child processes, no
 *   worker threads, no native addons, no WASI, no inspector; file reads only below the
 *   pack's root and vmi's own dist/; network denied too where the Node has a network
 *   permission (`--allow-net`, Node 25+; Node 24 has none). Node documents this model as a
 *   seat belt for trusted code, not a sandbox against malicious code, so when vmi runs as
 *   root two operating-system layers follow.
 * - A fresh network namespace (`unshare --net`, util-linux): no interface but a loopback
 *   that is down, so no TCP/UDP anywhere and no abstract unix socket of the host.
 * - An unprivileged user (VMI_PACK_USER, vmi-pack, or nobody): the child switches to it before it
 *   imports the pack, so the kernel itself refuses what the permission model might miss
 *   (vmi's 0700 run directories with the guests' QMP and gdbstub sockets, root's files,
 *   signals to vmi), and `setpriv --no-new-privs` keeps set-uid programs from giving
 *   privileges back.
 * As a non-root user only the first layer applies (documented in the README).
 */
import { existsSync } from 'node:fs';
import { passwdUser } from '../util/passwd.js';

export { passwdUser } from '../util/passwd.js';

/** Facts about the host that decide the plan. */
export interface SandboxHost {
  /** The Node binary to run (vmi's own: process.execPath). */
  node: string;
  /** vmi runs with uid 0. */
  root: boolean;
  /** Path of util-linux `unshare`, when present. */
  unshare?: string;
  /** Path of util-linux `setpriv`, when present. */
  setpriv?: string;
  /** The Node's name for the permission flag: `--permission` (22.13+) or `--experimental-permission`. */
  permissionFlag: string;
  /** The Node knows `--allow-net` (25+): network is then denied unless granted. */
  netPermission: boolean;
  /** The unprivileged user the child becomes when vmi runs as root. */
  user: { name: string; uid: number; gid: number };
}

/** The command that starts the child, and what confines it. */
export interface SandboxPlan {
  file: string;
  args: string[];
  /** uid/gid the child switches to before importing the pack (root only), else null. */
  drop: { uid: number; gid: number } | null;
  /** The layers in force, for messages and table metadata: `node-permission`, `netns`, `uid nobody`, `no-new-privs`. */
  layers: string[];
}

/** Heap limit of the child, MiB: a pack cannot make the child hold more than this. */
export const CHILD_HEAP_MIB = 2048;

/** Isolation as root needs unshare: without it vmi refuses rather than run the pack with less. */
export class SandboxUnavailableError extends Error {
  override name = 'SandboxUnavailableError';
}

/**
 * The command line of an isolated pack's child: `script` run by `host.node` under the
 * permission model with reads allowed below `readPaths` (absolute, real paths), wrapped in
 * unshare/setpriv when vmi runs as root. Throws SandboxUnavailableError when root lacks
 * unshare.
 */
export function sandboxPlan(host: SandboxHost, script: string, readPaths: readonly string[]): SandboxPlan {
  const nodeArgs = [
    host.permissionFlag,
    ...readPaths.map((p) => `--allow-fs-read=${p}`),
    `--max-old-space-size=${CHILD_HEAP_MIB}`,
    // Node 22 warns that the permission model is experimental: not the pack's output.
    '--disable-warning=ExperimentalWarning',
    script,
  ];
  const layers = [
    host.netPermission
      ? 'node-permission (fs, child processes, workers, addons, network)'
      : 'node-permission (fs, child processes, workers, addons)',
  ];
  if (!host.root) return { file: host.node, args: nodeArgs, drop: null, layers };
  if (!host.unshare) {
    throw new SandboxUnavailableError(
      'isolating plugin packs as root needs unshare (util-linux) for a private network namespace: install util-linux, or trust the pack with --trust-pack NAME',
    );
  }
  const args = ['--net', '--'];
  layers.push('netns (no network)');
  if (host.setpriv) {
    args.push(host.setpriv, '--no-new-privs', '--');
    layers.push('no-new-privs');
  }
  args.push(host.node, ...nodeArgs);
  layers.push(`uid ${host.user.name} (${host.user.uid})`);
  return { file: host.unshare, args, drop: { uid: host.user.uid, gid: host.user.gid }, layers };
}

/** The first of `names` found in the usual system directories. */
function findTool(name: string): string | undefined {
  return ['/usr/bin', '/bin', '/usr/sbin', '/sbin'].map((d) => `${d}/${name}`).find((p) => existsSync(p));
}

/**
 * The host as it is: vmi's Node, uid, util-linux tools, the Node's permission flags, and the
 * sandbox user (VMI_PACK_USER, else `vmi-pack` when the host has that user, else nobody;
 * 65534 when /etc/passwd has no nobody). A user of its own keeps pack children apart from
 * other processes running as nobody (replay clones among them).
 * Throws SandboxUnavailableError for a VMI_PACK_USER that does not exist or is root.
 */
export function probeSandboxHost(env: NodeJS.ProcessEnv = process.env): SandboxHost {
  const flags = process.allowedNodeEnvironmentFlags;
  const wanted = env.VMI_PACK_USER;
  const user = wanted
    ? passwdUser(wanted)
    : (passwdUser('vmi-pack') ?? passwdUser('nobody') ?? { name: 'nobody', uid: 65534, gid: 65534 });
  if (!user) throw new SandboxUnavailableError(`VMI_PACK_USER=${wanted}: no such user in /etc/passwd`);
  if (user.uid === 0)
    throw new SandboxUnavailableError(`VMI_PACK_USER=${wanted} is root: name an unprivileged user`);
  return {
    node: process.execPath,
    root: process.getuid?.() === 0,
    unshare: findTool('unshare'),
    setpriv: findTool('setpriv'),
    permissionFlag: flags.has('--permission') ? '--permission' : '--experimental-permission',
    netPermission: flags.has('--allow-net'),
    user,
  };
}
