/**
 * Containers as the guest's cgroup tree names them. A Linux "container" is no kernel
 * object: it is a set of processes that a runtime put into namespaces and into one
 * cgroup, and every runtime names that cgroup after the container in its own way. The
 * path of a process's cgroup (/proc/PID/cgroup) is therefore the one place where the
 * guest kernel says which container a process belongs to. The conventions recognised
 * (the runtime's cgroupfs driver, then its systemd driver):
 *
 *   docker      /docker/<64 hex>                 /system.slice/docker-<64 hex>.scope
 *   k8s         /kubepods[/burstable|/besteffort]/pod<uid>/<64 hex>
 *               /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/
 *                 cri-containerd-<64 hex>.scope   (also crio-… and docker-… scopes)
 *   podman      /libpod_parent/libpod-<64 hex>   …/libpod-<64 hex>.scope (not libpod-conmon-…)
 *   nspawn      /machine.slice/machine-<name>.scope   (name systemd-escaped: \x2d is '-')
 *   lxc         /lxc/<name>                      /lxc.payload.<name>   (not lxc.monitor.…)
 *
 * A path deeper than the container's own cgroup (a container that made sub-cgroups, seen
 * through its cgroup namespace from outside) belongs to the same container. Anything else
 * is no container: a process in a cgroup a runtime did not name is not guessed at.
 */
import { parsePidCgroup } from '../abi/linux/proc/index.js';
import type { OptionSpec, PluginContext } from './plugin.js';
import { isVanished } from './errors.js';

/** Runtimes whose cgroup naming {@link containerOf} knows. */
export type ContainerRuntime = 'docker' | 'k8s' | 'podman' | 'nspawn' | 'lxc';

/** A container as its cgroup path names it. */
export interface ContainerRef {
  runtime: ContainerRuntime;
  /** Container id (64 hex digits) or, for nspawn and LXC, the machine or container name. */
  id: string;
  /** Kubernetes pod UID (dashed form), for `k8s`. */
  pod?: string;
}

const HEX64 = '([0-9a-f]{64})';
const END = '(?:/|$)';
const CONVENTIONS: { runtime: ContainerRuntime; re: RegExp; pod?: boolean }[] = [
  // Kubernetes first: its systemd scopes are named like docker's (docker-<id>.scope).
  {
    runtime: 'k8s',
    re: new RegExp(`(?:^|/)kubepods(?:/burstable|/besteffort)?/pod([0-9a-fA-F-]{1,64})/${HEX64}${END}`),
    pod: true,
  },
  {
    runtime: 'k8s',
    re: new RegExp(
      `(?:^|/)kubepods(?:-burstable|-besteffort)?-pod([0-9a-fA-F_]{1,64})\\.slice/(?:cri-containerd|crio|docker)-${HEX64}\\.scope${END}`,
    ),
    pod: true,
  },
  { runtime: 'podman', re: new RegExp(`(?:^|/)libpod-${HEX64}(?:\\.scope)?${END}`) },
  { runtime: 'docker', re: new RegExp(`(?:^|/)docker/${HEX64}${END}`) },
  { runtime: 'docker', re: new RegExp(`(?:^|/)docker-${HEX64}\\.scope${END}`) },
  { runtime: 'nspawn', re: new RegExp(`(?:^|/)machine\\.slice/machine-([^/]+)\\.scope${END}`) },
  { runtime: 'lxc', re: new RegExp(`(?:^|/)lxc\\.payload\\.([^/]+)${END}`) },
  { runtime: 'lxc', re: new RegExp(`(?:^|/)lxc/([^/]+)${END}`) },
];

/** systemd's unit-name escaping (`\x2d` for '-'), undone. */
function systemdUnescape(s: string): string {
  return s.replace(/\\x([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The container a cgroup path names (see the conventions above), or undefined. */
export function containerOf(cgroupPath: string): ContainerRef | undefined {
  for (const c of CONVENTIONS) {
    const m = c.re.exec(cgroupPath);
    if (!m) continue;
    if (c.pod) return { runtime: c.runtime, pod: m[1].replace(/_/g, '-').toLowerCase(), id: m[2] };
    return { runtime: c.runtime, id: c.runtime === 'nspawn' ? systemdUnescape(m[1]) : m[1] };
  }
  return undefined;
}

/** The CONTAINER cell: `docker:<id>`, `k8s:<pod uid>/<id>`, `podman:<id>`, `nspawn:<name>`, `lxc:<name>`. */
export function containerLabel(c: ContainerRef): string {
  return c.pod ? `${c.runtime}:${c.pod}/${c.id}` : `${c.runtime}:${c.id}`;
}

/**
 * The `--container` filter (repeatable). A value selects the processes whose container
 * label ({@link containerLabel}) starts with it when it holds a ':' (`docker:3f4e`,
 * `docker:` for every docker container), whose id, name or pod UID starts with it
 * otherwise (`3f4e5a6b7c8d`, `web`), and every process in any container for `*`.
 */
export const CONTAINER_OPTION = {
  type: 'string',
  multiple: true,
  description:
    "Only processes of these containers (repeatable): a CONTAINER value or its prefix ('docker:3f4e', 'k8s:'), an id, name or pod UID prefix, or '*' for any container",
} as const satisfies OptionSpec;

/** Whether a container matches any of the `--container` values (see {@link CONTAINER_OPTION}). */
export function containerMatches(c: ContainerRef | undefined, filters: readonly string[]): boolean {
  if (!c) return false;
  const label = containerLabel(c);
  return filters.some((f) => {
    if (f === '*') return true;
    if (f.length === 0) return false;
    if (f.includes(':')) return label.startsWith(f);
    return c.id.startsWith(f) || (c.pod !== undefined && c.pod.startsWith(f));
  });
}

/** A process's cgroup path and the container it names. */
export interface ProcessCgroup {
  /** The unified (v2) hierarchy's path; on a v1-only guest the name=systemd one, else the first. */
  path: string;
  container?: ContainerRef;
}

/**
 * The cgroup path a /proc/PID/cgroup content stands for (see {@link ProcessCgroup.path}),
 * with its container. Throws ProcParseError on content that is not a cgroup file.
 */
export function processCgroup(data: Uint8Array, file: string): ProcessCgroup {
  const cg = parsePidCgroup(data, file);
  const path = cg.unified ?? cg.lines.find((l) => l.controllers === 'name=systemd')?.path ?? cg.lines[0].path;
  const container = containerOf(path);
  return container ? { path, container } : { path };
}

/**
 * The processes of `pids` that belong to a container named by `filters` (all of `pids`,
 * without a guest entry, when `filters` is empty): one batch reading /proc/PID/cgroup.
 * Processes that exited meanwhile are left out; an unreadable cgroup warns and leaves the
 * process out (it cannot be shown to match).
 */
export async function pidsInContainers(
  ctx: PluginContext,
  pids: readonly number[],
  filters: readonly string[],
): Promise<number[]> {
  if (filters.length === 0) return [...pids];
  const files = await ctx.proc.readProcFiles(pids, 'cgroup');
  const out: number[] = [];
  for (const pid of pids) {
    const f = files.get(pid)!;
    if (isVanished(f.error)) continue;
    try {
      if (f.error) throw f.error;
      if (containerMatches(processCgroup(f.data!, f.path).container, filters)) out.push(pid);
    } catch (e) {
      ctx.warn(`pid ${pid}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * The processes a `--pid` and a `--container` filter select together, ascending: every
 * process (1 batch) or the named ones, then (1 more batch, only with `containers`) those
 * in the named containers. An empty result means that nothing matched.
 */
export async function selectPids(
  ctx: PluginContext,
  pids: readonly number[],
  containers: readonly string[],
): Promise<number[]> {
  return pidsInContainers(ctx, await ctx.proc.selectPids(pids), containers);
}
