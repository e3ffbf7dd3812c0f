/**
 * Building the lab guest's initramfs: static busybox (with a symlink per applet), the
 * generated /init and /etc files, the statically linked workload programs compiled from
 * src/lab/guest-programs, and the kernel's dependency-free modules. The archive is
 * cached under a hash of all of its inputs.
 */
import { existsSync } from 'node:fs';
import { access, chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCpio, type CpioEntry } from './cpio.js';
import { randomTag } from '../util/run-dir.js';
import { cacheRoot, LabError, mustRun, removeQuietly, sha256 } from './host.js';
import { ensureDebianFile, type LabKernel } from './kernel.js';
import { INITTAB, initScript, LAB_WORKLOAD, PROFILE } from './workload.js';

/** Bump when the layout changes in a way the input hash does not capture. */
const LAYOUT_VERSION = '1';

export interface LabInitramfs {
  path: string;
  hash: string;
}

/** Where the busybox-static binary lives ($VMI_BUSYBOX overrides). */
export function busyboxPath(): string {
  return process.env.VMI_BUSYBOX ?? '/bin/busybox';
}

/** The directory with the guest programs' C sources, from src/ or from dist/. */
export function guestProgramsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [
    join(here, 'guest-programs'),
    join(here, '..', '..', 'src', 'lab', 'guest-programs'),
  ]) {
    if (existsSync(join(candidate, 'labd.c'))) return candidate;
  }
  throw new LabError('cannot find src/lab/guest-programs (labd.c)');
}

async function atomicWrite(path: string, data: Buffer, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomTag()}`;
  await writeFile(tmp, data, { mode });
  await rename(tmp, path);
}

/**
 * Compiles a guest program statically (or, with `dynamic`, against the host's glibc, whose
 * loader and libraries then go into the initramfs: see hostLibraries), cached by its
 * source, the linking and the compiler version.
 */
export async function buildGuestProgram(
  name: string,
  onProgress?: (m: string) => void,
  opts: { dynamic?: boolean } = {},
): Promise<string> {
  const source = join(guestProgramsDir(), `${name}.c`);
  const src = await readFile(source);
  const cc = process.env.CC ?? 'gcc';
  const ccVersion = (await mustRun(cc, ['--version'])).stdout.toString('utf8');
  const link = opts.dynamic ? 'dynamic' : 'static';
  const dir = join(
    cacheRoot(),
    'programs',
    sha256(name, src, ccVersion, ...(opts.dynamic ? [link] : [])).slice(0, 16),
  );
  const out = join(dir, name);
  if (existsSync(out)) return out;
  onProgress?.(`compiling ${name}.c (static)`);
  await mkdir(dir, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}-${randomTag()}`;
  try {
    await mustRun(cc, [...(opts.dynamic ? [] : ['-static']), '-O2', '-Wall', '-o', tmp, source]);
    await chmod(tmp, 0o755);
    await rename(tmp, out);
  } finally {
    await removeQuietly(tmp);
  }
  return out;
}

/** Applet paths (e.g. "usr/sbin/httpd") from `busybox --list-full`. */
export function parseBusyboxList(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim().replace(/^\/+/, ''))
    .filter((l) => l.includes('/') && !l.endsWith('/busybox') && !l.includes('..'));
}

// ---- Memory plugins (issue 17): a dynamically linked program and Debian's bash-static.

/**
 * The shared objects a dynamically linked host binary loads (its ELF interpreter and
 * DT_NEEDED libraries, as the host's `ldd` resolves them): guest path (without the
 * leading /) → the file's bytes, to put into the initramfs at the same paths.
 */
export async function hostLibraries(binary: string): Promise<Record<string, Buffer>> {
  const out = (await mustRun('ldd', [binary])).stdout.toString('utf8');
  const paths = parseLdd(out);
  if (paths.length === 0) throw new LabError(`ldd ${binary} named no libraries`);
  const libs: Record<string, Buffer> = {};
  for (const p of paths) libs[p.replace(/^\/+/, '')] = await readFile(p);
  return libs;
}

/** Absolute library paths in `ldd` output (`libc.so.6 => /lib/… (0x…)`, `/lib64/ld-linux… (0x…)`). Pure. */
export function parseLdd(output: string): string[] {
  const paths: string[] = [];
  for (const line of output.split('\n')) {
    const m = /=>\s*(\/\S+)\s+\(0x/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m && !m[1].includes('..')) paths.push(m[1]);
  }
  return paths;
}

/** Where Debian's bash-static is: $VMI_BASH_STATIC, the host's /bin/bash-static, else downloaded into the cache. */
export async function bashStaticPath(onProgress?: (m: string) => void): Promise<string> {
  if (process.env.VMI_BASH_STATIC) return process.env.VMI_BASH_STATIC;
  if (existsSync('/bin/bash-static')) return '/bin/bash-static';
  return ensureDebianFile('bash-static', 'bin/bash-static', onProgress);
}

export interface InitramfsInputs {
  busybox: Buffer;
  applets: string[];
  programs: Record<string, Buffer>;
  /** Module name → uncompressed .ko bytes. */
  modules: Record<string, Buffer>;
  kernelRelease: string;
  /** Memory plugins (issue 17): Debian's bash-static (installed as /usr/bin/bash) and the shared objects of labmem. */
  memoryLab?: { bash: Buffer; libraries: Record<string, Buffer> };
  /** Modules put in the image but not loaded at boot (the test rootkit): name → .ko bytes. */
  unloaded?: Record<string, Buffer>;
}

/** The archive's entries, parents before children (pure). */
export function initramfsEntries(inp: InitramfsInputs): CpioEntry[] {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const dir = (path: string, mode = 0o755): void => {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (dirs.has(p)) continue;
      dirs.add(p);
      entries.push({ type: 'dir', path: p, mode: i === parts.length ? mode : 0o755 });
    }
  };
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'mnt',
    'run',
    'var/log',
    'var/www',
  ])
    dir(d);
  dir('root', 0o700);
  dir('tmp', 0o1777);
  for (const mnt of Object.keys(LAB_WORKLOAD.tmpfs)) dir(mnt);
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ type: 'char', path: 'dev/ttyS0', major: 4, minor: 64, mode: 0o600 });

  entries.push({ type: 'file', path: 'bin/busybox', data: inp.busybox, mode: 0o755 });
  for (const applet of inp.applets) {
    const parent = applet.split('/').slice(0, -1).join('/');
    if (parent) dir(parent);
    entries.push({ type: 'symlink', path: applet, target: '/bin/busybox' });
  }
  for (const [name, data] of Object.entries(inp.programs)) {
    entries.push({ type: 'file', path: `usr/sbin/${name}`, data, mode: 0o755 });
  }
  // Memory plugins (issue 17): bash and the glibc loader and libraries of labmem.
  if (inp.memoryLab) {
    entries.push({ type: 'file', path: 'usr/bin/bash', data: inp.memoryLab.bash, mode: 0o755 });
    for (const [path, data] of Object.entries(inp.memoryLab.libraries)) {
      const parent = path.split('/').slice(0, -1).join('/');
      if (parent) dir(parent);
      entries.push({ type: 'file', path, data, mode: 0o755 });
    }
  }
  const modDir = `lib/modules/${inp.kernelRelease}`;
  dir(modDir);
  const guestModules: string[] = [];
  for (const [name, data] of Object.entries(inp.modules)) {
    entries.push({ type: 'file', path: `${modDir}/${name}.ko`, data, mode: 0o644 });
    guestModules.push(`/${modDir}/${name}.ko`);
  }

  if (inp.unloaded && Object.keys(inp.unloaded).length > 0) {
    dir(`${modDir}/extra`);
    for (const [name, data] of Object.entries(inp.unloaded))
      entries.push({ type: 'file', path: `${modDir}/extra/${name}.ko`, data, mode: 0o644 });
  }

  entries.push({ type: 'file', path: 'init', data: initScript(guestModules), mode: 0o755 });
  entries.push({ type: 'file', path: 'etc/inittab', data: INITTAB });
  entries.push({ type: 'file', path: 'etc/profile', data: PROFILE });
  entries.push({ type: 'file', path: 'etc/hostname', data: `${LAB_WORKLOAD.hostname}\n` });
  entries.push({
    type: 'file',
    path: 'etc/passwd',
    data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
  });
  entries.push({ type: 'file', path: 'etc/group', data: 'root:x:0:\nnogroup:x:65534:\n' });
  entries.push({
    type: 'file',
    path: 'var/www/index.html',
    data: '<!doctype html><title>vmi lab</title><p>vmi lab guest: busybox httpd</p>\n',
  });
  return entries;
}

/** Builds (or reuses) the initramfs for a kernel; returns its cached path. */
export async function buildInitramfs(
  kernel: LabKernel,
  onProgress?: (m: string) => void,
  /** Extra modules loaded after the lab's own, in this order (e.g. ensureDeviceModules). */
  extraModules: readonly { name: string; path: string }[] = [],
  /** Modules put in the image but not loaded (the test rootkit): name → .ko path. */
  unloadedModules: Readonly<Record<string, string>> = {},
): Promise<LabInitramfs> {
  const bb = busyboxPath();
  try {
    await access(bb);
  } catch {
    throw new LabError(`${bb} not found: install the Debian package busybox-static`);
  }
  const busybox = await readFile(bb);
  const applets = parseBusyboxList((await mustRun(bb, ['--list-full'])).stdout.toString('utf8'));
  if (applets.length === 0) throw new LabError(`${bb} --list-full listed no applets`);
  const labd = await readFile(await buildGuestProgram('labd', onProgress));
  const psnative = await readFile(await buildGuestProgram('psnative', onProgress));
  const labsandbox = await readFile(await buildGuestProgram('labsandbox', onProgress));
  // Issue 17's kernel-facing workload (capabilities, ptrace, ebpf).
  const labkern = await readFile(await buildGuestProgram('labkern', onProgress));
  // Memory plugins (issue 17).
  const labmemPath = await buildGuestProgram('labmem', onProgress, { dynamic: true });
  const labmem = await readFile(labmemPath);
  const memoryLab = {
    bash: await readFile(await bashStaticPath(onProgress)),
    libraries: await hostLibraries(labmemPath),
  };
  const modules: Record<string, Buffer> = {};
  for (const [name, path] of Object.entries(kernel.modules)) modules[name] = await readFile(path);
  // Insertion order is load order (module names are never integer-like keys).
  for (const { name, path } of extraModules) modules[name] ??= await readFile(path);

  const inputs: InitramfsInputs = {
    busybox,
    applets,
    programs: { labd, psnative, labsandbox, labkern, labmem },
    modules,
    kernelRelease: kernel.release,
    memoryLab,
    unloaded: {},
  };
  for (const [name, path] of Object.entries(unloadedModules)) inputs.unloaded![name] = await readFile(path);
  const entries = initramfsEntries(inputs);
  const hash = sha256(
    LAYOUT_VERSION,
    JSON.stringify(entries.map((e) => ({ ...e, data: e.type === 'file' ? sha256(e.data) : undefined }))),
  ).slice(0, 24);
  const dir = join(cacheRoot(), 'initramfs');
  const path = join(dir, `${hash}.cpio`);
  if (existsSync(path)) return { path, hash };
  onProgress?.('building the initramfs');
  await mkdir(dir, { recursive: true });
  await atomicWrite(path, writeCpio(entries));
  return { path, hash };
}
