/**
 * Fetching a Debian kernel for the lab guest: `apt-get download` + `dpkg-deb -x` into a
 * private cache (never the host's /boot), then the uncompressed vmlinux is extracted from
 * the bzImage once and cached, with a few dependency-free modules for the workload.
 */
import { closeSync, openSync } from 'node:fs';
import { access, copyFile, mkdir, open, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decompressorFor, findKernelPayload, isElf } from './bzimage.js';
import { randomTag } from '../util/run-dir.js';
import { cacheRoot, LabError, mustRun, removeQuietly, runTool } from './host.js';
import { moduleDepends } from './modinfo.js';

export interface LabKernel {
  /** LAB_MODULE_SET the modules were extracted for (absent: set 1). */
  moduleSet?: number;
  /** Debian package name, e.g. linux-image-6.1.0-56-amd64. */
  package: string;
  /** Debian package version, e.g. 6.1.192-2. */
  version: string;
  /** Kernel release (uname -r), from the package's /lib/modules/<release> directory. */
  release: string;
  /** Cache directory holding everything below. */
  dir: string;
  /** Uncompressed kernel ELF (boots through its PVH entry with `qemu -kernel`). */
  vmlinux: string;
  /** The original compressed bzImage. */
  vmlinuz: string;
  /** Only when the package has a real one (Debian's is a stub pointing to the -dbg package). */
  systemMap?: string;
  config?: string;
  /**
   * Loadable modules, uncompressed: module name → .ko path, in load order (a module's
   * dependencies before it).
   */
  modules: Record<string, string>;
}

/** Small modules with no dependencies, harmless to load (the workload's dummy netdev, nls). */
const BASE_LAB_MODULES = ['kernel/drivers/net/dummy.ko', 'kernel/fs/nls/nls_utf8.ko'];

/** The sock_diag modules, inet_diag first: sockxview's netlink view (sock-diag.ts). */
const DIAG_LAB_MODULES = [
  'kernel/net/ipv4/inet_diag.ko',
  'kernel/net/ipv4/tcp_diag.ko',
  'kernel/net/ipv4/udp_diag.ko',
  'kernel/net/unix/unix_diag.ko',
];

/**
 * Netfilter for the netfilter plugin (issue 17): nf_tables with its dependencies, and
 * legacy iptables' filter table, in load order.
 */
export const NETFILTER_LAB_MODULES = [
  'kernel/crypto/crc32c_generic.ko',
  'kernel/lib/libcrc32c.ko',
  'kernel/net/netfilter/nfnetlink.ko',
  'kernel/net/netfilter/nf_tables.ko',
  'kernel/net/netfilter/x_tables.ko',
  'kernel/net/ipv4/netfilter/ip_tables.ko',
  'kernel/net/ipv4/netfilter/iptable_filter.ko',
];

/**
 * Modules copied into the cache and loaded at boot, in this order. A module is kept only
 * when everything it depends on was kept before it (a kernel that builds one in needs no
 * .ko for it).
 */
export const LAB_MODULE_CANDIDATES = [...BASE_LAB_MODULES, ...DIAG_LAB_MODULES, ...NETFILTER_LAB_MODULES];

/** Bumped with LAB_MODULE_CANDIDATES: a cached kernel of an older set gets the new modules added. */
const LAB_MODULE_SET = 3;

/**
 * Which candidate modules to keep, in order, given each one's dependencies (pure): a module
 * whose dependencies are not all kept before it is dropped.
 */
export function selectLabModules(
  deps: ReadonlyArray<{ name: string; depends: readonly string[] }>,
): string[] {
  const kept: string[] = [];
  for (const m of deps) if (m.depends.every((d) => kept.includes(d))) kept.push(m.name);
  return kept;
}

const KERNEL_PKG_RE = /^linux-image-[a-z0-9][a-z0-9.+~-]*$/;
const DEFAULT_SEARCH = '^linux-image-6\\.1\\.0-[0-9]+-amd64$';

/** Picks the highest ABI number from `apt-cache search` lines of linux-image-6.1.0-N-amd64. */
export function pickNewestKernel(aptSearchOutput: string): string | undefined {
  let best: { name: string; abi: number } | undefined;
  for (const line of aptSearchOutput.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = /^linux-image-6\.1\.0-(\d+)-amd64$/.exec(name);
    if (!m) continue;
    const abi = Number(m[1]);
    if (!best || abi > best.abi) best = { name, abi };
  }
  return best?.name;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function aptListsPresent(): Promise<boolean> {
  const entries = await readdir('/var/lib/apt/lists').catch(() => [] as string[]);
  return entries.some((e) => e.includes('_Packages'));
}

async function aptUpdate(onProgress?: (m: string) => void): Promise<void> {
  onProgress?.('running apt-get update');
  await mustRun('apt-get', ['update', '-qq'], { timeoutMs: 300_000 });
}

/** Kernel series and configurations that short aliases (`6.12-rt`) name. */
export const KERNEL_SERIES = ['6.1', '6.12'] as const;
export const KERNEL_FLAVOURS = ['amd64', 'cloud-amd64', 'rt-amd64'] as const;
export type KernelSeries = (typeof KERNEL_SERIES)[number];
export type KernelFlavour = (typeof KERNEL_FLAVOURS)[number];

/**
 * Reads a short kernel alias: `6.1`, `6.12`, `6.1-rt`, `6.12-cloud`, `6.1-amd64`,
 * `6.12-rt-amd64`... (series, then optional flavour; default flavour amd64). Undefined
 * for anything else (a full package name, say).
 */
export function parseKernelAlias(
  alias: string,
): { series: KernelSeries; flavour: KernelFlavour } | undefined {
  const m = /^(6\.1|6\.12)(?:-(amd64|cloud|cloud-amd64|rt|rt-amd64))?$/.exec(alias.trim());
  if (!m) return undefined;
  const f = m[2] ?? 'amd64';
  const flavour = (f.endsWith('amd64') ? f : `${f}-amd64`) as KernelFlavour;
  return { series: m[1] as KernelSeries, flavour };
}

/** The apt-cache search pattern for a series and flavour. */
function aliasPattern(series: KernelSeries, flavour: KernelFlavour): RegExp {
  return series === '6.1'
    ? new RegExp(`^linux-image-6\\.1\\.0-(\\d+)-${flavour}$`)
    : new RegExp(`^linux-image-6\\.12\\.(\\d+)\\+deb12-${flavour}-unsigned$`);
}

/** The newest package of that series and flavour in `apt-cache search` output (pure). */
export function pickNewestOf(
  aptSearchOutput: string,
  series: KernelSeries,
  flavour: KernelFlavour,
): string | undefined {
  const re = aliasPattern(series, flavour);
  let best: { name: string; n: number } | undefined;
  for (const line of aptSearchOutput.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = re.exec(name);
    if (!m) continue;
    const n = Number(m[1]);
    if (!best || n > best.n) best = { name, n };
  }
  return best?.name;
}

/** A package name as given, or the newest package a short alias (`6.12-rt`) names. */
export async function resolveKernelPackage(spec: string, onProgress?: (m: string) => void): Promise<string> {
  const alias = parseKernelAlias(spec);
  if (!alias) return spec;
  if (!(await aptListsPresent())) await aptUpdate(onProgress);
  const pattern =
    alias.series === '6.1'
      ? `^linux-image-6\\.1\\.0-[0-9]+-${alias.flavour}$`
      : `^linux-image-6\\.12\\.[0-9]+\\+deb12-${alias.flavour}-unsigned$`;
  const r = await mustRun('apt-cache', ['search', '--names-only', pattern]);
  const pkg = pickNewestOf(r.stdout.toString('utf8'), alias.series, alias.flavour);
  if (!pkg) throw new LabError(`no kernel package for ${spec} known to apt (check the Debian sources)`);
  return pkg;
}

/** Config symbols of the lab modules: built in (=y) they need no .ko. */
const LAB_MODULE_CONFIG: Record<string, string> = { dummy: 'CONFIG_DUMMY', nls_utf8: 'CONFIG_NLS_UTF8' };

/** Modules of LAB_MODULE_CANDIDATES that a kernel config builds in (pure). */
export function builtinLabModules(config: string): string[] {
  return Object.entries(LAB_MODULE_CONFIG)
    .filter(([, sym]) => new RegExp(`^${sym}=y$`, 'm').test(config))
    .map(([name]) => name);
}

/** The default lab kernel: the newest linux-image-6.1.0-N-amd64 apt knows about. */
export async function defaultKernelPackage(onProgress?: (m: string) => void): Promise<string> {
  if (!(await aptListsPresent())) await aptUpdate(onProgress);
  const r = await mustRun('apt-cache', ['search', '--names-only', DEFAULT_SEARCH]);
  const pkg = pickNewestKernel(r.stdout.toString('utf8'));
  if (!pkg)
    throw new LabError('no linux-image-6.1.0-N-amd64 package known to apt (check the Debian sources)');
  return pkg;
}

function kernelDir(pkg: string): string {
  return join(cacheRoot(), 'kernels', pkg);
}

/** Returns the cached kernel if its extraction completed, without touching apt. */
export async function cachedKernel(pkg: string): Promise<LabKernel | undefined> {
  const dir = kernelDir(pkg);
  try {
    const k = JSON.parse(await readFile(join(dir, 'kernel.json'), 'utf8')) as LabKernel;
    if (!(await exists(k.vmlinux))) return undefined;
    return k;
  } catch {
    return undefined;
  }
}

/** `apt-get download` of one package into `cwd` (apt lists refreshed once if stale); the .deb's path. */
export async function downloadDeb(
  pkg: string,
  cwd: string,
  onProgress?: (m: string) => void,
): Promise<string> {
  if (!(await aptListsPresent())) await aptUpdate(onProgress);
  onProgress?.(`downloading ${pkg}`);
  const args = ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg];
  let r = await runTool('apt-get', args, { cwd, timeoutMs: 600_000 });
  if (r.code !== 0 && /Unable to locate|has no installation candidate|Can't select/i.test(r.stderr)) {
    await aptUpdate(onProgress);
    r = await runTool('apt-get', args, { cwd, timeoutMs: 600_000 });
  }
  if (r.code !== 0) {
    const why =
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('E:'))[0] ?? r.stderr.trim().split('\n').pop();
    throw new LabError(`apt-get download ${pkg} failed: ${why ?? `exit code ${r.code}`}`);
  }
  const deb = (await readdir(cwd)).find((f) => f.endsWith('.deb'));
  if (!deb) throw new LabError(`apt-get download ${pkg} produced no .deb`);
  return join(cwd, deb);
}

/**
 * One file of a Debian package, downloaded (`apt-get download`) and unpacked into the
 * cache once (`<cache>/debs/PKG/FILE`); returns its path. The lab's bash-static comes
 * from here when the host has no /bin/bash-static.
 */
export async function ensureDebianFile(
  pkg: string,
  file: string,
  onProgress?: (m: string) => void,
): Promise<string> {
  const finalDir = join(cacheRoot(), 'debs', pkg);
  const target = join(finalDir, file);
  if (await exists(target)) return target;
  const parent = join(cacheRoot(), 'debs');
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.tmp-${pkg}-${process.pid}-${randomTag()}`);
  await mkdir(tmp);
  try {
    const deb = await downloadDeb(pkg, tmp, onProgress);
    onProgress?.(`unpacking ${pkg}`);
    await mustRun('dpkg-deb', ['-x', deb, join(tmp, 'root')], { timeoutMs: 300_000 });
    if (!(await exists(join(tmp, 'root', file)))) throw new LabError(`${pkg} has no /${file}`);
    await removeQuietly(deb);
    try {
      await rename(join(tmp, 'root'), finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    }
    return target;
  } finally {
    await removeQuietly(tmp);
  }
}

/** Decompresses a bzImage's payload into `outPath` and checks the result is an ELF. */
export async function extractVmlinux(vmlinuzPath: string, outPath: string): Promise<void> {
  const image = await readFile(vmlinuzPath);
  const payload = findKernelPayload(image);
  const [cmd, args] = decompressorFor(payload.format);
  const fd = openSync(outPath, 'w', 0o644);
  let r;
  try {
    r = await runTool(cmd, args, {
      input: image.subarray(payload.offset, payload.offset + payload.length),
      stdoutFd: fd,
      timeoutMs: 300_000,
    });
  } finally {
    closeSync(fd);
  }
  const head = Buffer.alloc(4);
  const fh = await open(outPath, 'r');
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  // Trailing bytes after the stream make some decompressors exit non-zero; the ELF
  // check is what matters.
  if (!isElf(head)) {
    throw new LabError(
      `extracting vmlinux from ${vmlinuzPath} (${payload.format} payload) failed: ${r.stderr.trim() || 'result is not an ELF'}`,
    );
  }
}

async function debVersion(deb: string): Promise<string> {
  const r = await mustRun('dpkg-deb', ['-f', deb, 'Version']);
  return r.stdout.toString('utf8').trim();
}

export async function findModulesRoot(root: string): Promise<{ release: string; dir: string }> {
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const entries = await readdir(join(root, base)).catch(() => [] as string[]);
    if (entries.length === 1) return { release: entries[0]!, dir: join(root, base, entries[0]!) };
    if (entries.length > 1)
      throw new LabError(`several kernel releases in one package: ${entries.join(', ')}`);
  }
  throw new LabError('the kernel package has no /lib/modules/<release> directory');
}

export async function copyModule(src: string, dest: string): Promise<void> {
  if (src.endsWith('.xz')) {
    await writeFile(dest, (await mustRun('xz', ['-dc', src])).stdout);
  } else if (src.endsWith('.zst')) {
    await writeFile(dest, (await mustRun('zstd', ['-dcq', src])).stdout);
  } else if (src.endsWith('.gz')) {
    await writeFile(dest, (await mustRun('gzip', ['-dc', src])).stdout);
  } else {
    await copyFile(src, dest);
  }
}

/**
 * Copies the candidate modules found under `modDir` (a /lib/modules/<release>) into
 * `destDir`, uncompressed, keeping those whose dependencies were kept before them; returns
 * name → path under `finalDir` (where destDir ends up).
 */
async function copyLabModules(
  modDir: string,
  destDir: string,
  finalDir: string,
): Promise<Record<string, string>> {
  const found: { name: string; depends: string[] }[] = [];
  for (const rel of LAB_MODULE_CANDIDATES) {
    for (const suffix of ['', '.xz', '.zst', '.gz']) {
      const src = join(modDir, rel + suffix);
      if (!(await exists(src))) continue;
      const modName = rel.split('/').pop()!.replace(/\.ko$/, '');
      const dest = join(destDir, `${modName}.ko`);
      await copyModule(src, dest);
      found.push({ name: modName, depends: moduleDepends(await readFile(dest)) });
      break;
    }
  }
  const kept = selectLabModules(found);
  const out: Record<string, string> = {};
  for (const { name } of found) {
    if (kept.includes(name)) out[name] = join(finalDir, `${name}.ko`);
    else await removeQuietly(join(destDir, `${name}.ko`));
  }
  return out;
}

/**
 * A kernel cached with an older LAB_MODULE_SET: downloads its package again and adds the
 * missing modules beside the others, then replaces kernel.json atomically (readers of the
 * shared cache see the old or the new file, never half of one).
 */
async function upgradeLabModules(k: LabKernel, onProgress?: (m: string) => void): Promise<LabKernel> {
  const tmp = join(k.dir, `.tmp-modules-${process.pid}-${randomTag()}`);
  await mkdir(tmp);
  try {
    onProgress?.(`adding the lab's modules to the cached ${k.package}`);
    const deb = await downloadDeb(k.package, tmp, onProgress);
    const root = join(tmp, 'root');
    await mustRun('dpkg-deb', ['-x', deb, root], { timeoutMs: 300_000 });
    const { dir: modDir } = await findModulesRoot(root);
    await mkdir(join(tmp, 'modules'));
    const modules = await copyLabModules(modDir, join(tmp, 'modules'), join(k.dir, 'modules'));
    await mkdir(join(k.dir, 'modules'), { recursive: true });
    for (const name of Object.keys(modules)) {
      if (!(await exists(join(k.dir, 'modules', `${name}.ko`))))
        await rename(join(tmp, 'modules', `${name}.ko`), join(k.dir, 'modules', `${name}.ko`));
    }
    const next: LabKernel = { ...k, modules, moduleSet: LAB_MODULE_SET };
    await writeFile(join(tmp, 'kernel.json'), JSON.stringify(next, null, 2) + '\n');
    await rename(join(tmp, 'kernel.json'), join(k.dir, 'kernel.json'));
    return next;
  } finally {
    await removeQuietly(tmp);
  }
}

/**
 * Makes sure the kernel package is downloaded and unpacked in the cache; idempotent, and
 * safe when several processes race (each works in its own temp dir, then renames it in).
 */
export async function ensureKernel(pkg?: string, onProgress?: (m: string) => void): Promise<LabKernel> {
  const name = pkg ? await resolveKernelPackage(pkg, onProgress) : await defaultKernelPackage(onProgress);
  if (!KERNEL_PKG_RE.test(name)) throw new LabError(`not a kernel image package name: ${name}`);
  const cached = await cachedKernel(name);
  if (cached)
    return (cached.moduleSet ?? 1) < LAB_MODULE_SET ? upgradeLabModules(cached, onProgress) : cached;

  const finalDir = kernelDir(name);
  const parent = join(cacheRoot(), 'kernels');
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.tmp-${name}-${process.pid}-${randomTag()}`);
  await mkdir(tmp);
  try {
    const deb = await downloadDeb(name, tmp, onProgress);
    const version = await debVersion(deb);
    onProgress?.(`unpacking ${name} ${version}`);
    const root = join(tmp, 'root');
    await mustRun('dpkg-deb', ['-x', deb, root], { timeoutMs: 300_000 });
    const { release, dir: modDir } = await findModulesRoot(root);
    const bootFiles = await readdir(join(root, 'boot')).catch(() => [] as string[]);
    const vmlinuzName = bootFiles.find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuzName) throw new LabError(`${name} has no /boot/vmlinuz-*`);

    const vmlinuz = join(finalDir, 'vmlinuz');
    const vmlinux = join(finalDir, 'vmlinux');
    await rename(join(root, 'boot', vmlinuzName), join(tmp, 'vmlinuz'));
    onProgress?.('extracting vmlinux from the bzImage');
    await extractVmlinux(join(tmp, 'vmlinuz'), join(tmp, 'vmlinux'));

    const kernel: LabKernel = {
      package: name,
      version,
      release,
      dir: finalDir,
      vmlinux,
      vmlinuz,
      modules: {},
    };
    const systemMap = bootFiles.find((f) => f.startsWith('System.map-'));
    // Debian ships a stub System.map ("The real System.map is in the -dbg package").
    if (systemMap && (await stat(join(root, 'boot', systemMap))).size > 4096) {
      await rename(join(root, 'boot', systemMap), join(tmp, 'System.map'));
      kernel.systemMap = join(finalDir, 'System.map');
    }
    const config = bootFiles.find((f) => f.startsWith('config-'));
    if (config) {
      await rename(join(root, 'boot', config), join(tmp, 'config'));
      kernel.config = join(finalDir, 'config');
    }

    await mkdir(join(tmp, 'modules'));
    kernel.modules = await copyLabModules(modDir, join(tmp, 'modules'), join(finalDir, 'modules'));
    kernel.moduleSet = LAB_MODULE_SET;
    // A module built into this configuration is as good as a loadable one (nothing to insmod).
    const builtin = kernel.config ? builtinLabModules(await readFile(join(tmp, 'config'), 'utf8')) : [];
    if (Object.keys(kernel.modules).length === 0 && builtin.length === 0) {
      throw new LabError(`${name} has none of the lab modules (${LAB_MODULE_CANDIDATES.join(', ')})`);
    }

    await removeQuietly(root);
    await removeQuietly(deb);
    await writeFile(join(tmp, 'kernel.json'), JSON.stringify(kernel, null, 2) + '\n');
    try {
      await rename(tmp, finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      // Another process finished first; a leftover incomplete dir (no kernel.json) is replaced.
      const other = await cachedKernel(name);
      if (other) return other;
      await removeQuietly(finalDir);
      await rename(tmp, finalDir);
    }
    onProgress?.(`kernel ${release} ready`);
    return kernel;
  } finally {
    await removeQuietly(tmp);
  }
}

/**
 * Modules a lab guest with devices loads (`vmi lab up --disk/--nic`): the virtio PCI
 * transport, virtio-blk, virtio-net and ext4 (with crc32c, which ext4's metadata
 * checksums ask the crypto API for). Debian's 6.1 config builds all of them as modules.
 */
export const LAB_DEVICE_MODULE_ROOTS = ['virtio_pci', 'virtio_blk', 'virtio_net', 'crc32c_generic', 'ext4'];

/**
 * Modules in load order (pure): every root after its dependencies (`deps` maps a module
 * to its modinfo `depends`). Throws LabError for a module `deps` does not know or a cycle.
 */
export function moduleLoadOrder(
  roots: readonly string[],
  deps: (name: string) => readonly string[] | undefined,
): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (m: string, from: string): void => {
    const s = state.get(m);
    if (s === 'done') return;
    if (s === 'visiting') throw new LabError(`module dependency cycle at ${m}`);
    const d = deps(m);
    if (!d) throw new LabError(`module ${m} (needed by ${from}) is not in the kernel package`);
    state.set(m, 'visiting');
    for (const x of d) visit(x, m);
    state.set(m, 'done');
    order.push(m);
  };
  for (const r of roots) visit(r, 'the lab devices');
  return order;
}

async function walkKo(dir: string, out: Map<string, string>): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walkKo(p, out);
    else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name))
      out.set(e.name.replace(/\.ko(\..*)?$/, '').replace(/-/g, '_'), p);
  }
}

/**
 * The device modules of a lab kernel, in load order: name → cached .ko path. Extracted
 * once from the kernel package (downloaded again: the kernel cache keeps only the lab's
 * small modules) into <cache>/devmodules/<package>/.
 */
export async function ensureDeviceModules(
  kernel: LabKernel,
  onProgress?: (m: string) => void,
): Promise<{ name: string; path: string }[]> {
  const finalDir = join(cacheRoot(), 'devmodules', kernel.package);
  const index = join(finalDir, 'modules.json');
  const cached = await readFile(index, 'utf8')
    .then((t) => JSON.parse(t) as { name: string; path: string }[])
    .catch(() => undefined);
  if (cached) return cached;
  await mkdir(join(cacheRoot(), 'devmodules'), { recursive: true });
  const tmp = join(cacheRoot(), 'devmodules', `.tmp-${kernel.package}-${process.pid}-${randomTag()}`);
  await mkdir(tmp);
  try {
    const deb = await downloadDeb(kernel.package, tmp, onProgress);
    onProgress?.(`unpacking the device modules of ${kernel.package}`);
    const root = join(tmp, 'root');
    await mustRun('dpkg-deb', ['-x', deb, root], { timeoutMs: 300_000 });
    const { dir: modDir } = await findModulesRoot(root);
    const files = new Map<string, string>();
    await walkKo(join(modDir, 'kernel'), files);
    await mkdir(join(tmp, 'ko'));
    const deps = new Map<string, string[]>();
    const load = async (m: string): Promise<void> => {
      if (deps.has(m) || !files.has(m)) return;
      const dest = join(tmp, 'ko', `${m}.ko`);
      await copyModule(files.get(m)!, dest);
      const d = moduleDepends(await readFile(dest)).map((x) => x.replace(/-/g, '_'));
      deps.set(m, d);
      for (const x of d) await load(x);
    };
    for (const r of LAB_DEVICE_MODULE_ROOTS) await load(r);
    // Built into this kernel (modules.builtin): nothing to load.
    const builtin = new Set(
      (await readFile(join(modDir, 'modules.builtin'), 'utf8').catch(() => ''))
        .split('\n')
        .map((l) => (l.split('/').pop() ?? '').replace(/\.ko$/, '').replace(/-/g, '_'))
        .filter(Boolean),
    );
    const order = moduleLoadOrder(LAB_DEVICE_MODULE_ROOTS, (m) => (builtin.has(m) ? [] : deps.get(m))).filter(
      (m) => !builtin.has(m),
    );
    const list = order.map((name) => ({ name, path: join(finalDir, 'ko', `${name}.ko`) }));
    await writeFile(join(tmp, 'modules.json'), JSON.stringify(list, null, 2) + '\n');
    await removeQuietly(root);
    await removeQuietly(deb);
    try {
      await rename(tmp, finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    }
    return JSON.parse(await readFile(index, 'utf8')) as { name: string; path: string }[];
  } finally {
    await removeQuietly(tmp);
  }
}
