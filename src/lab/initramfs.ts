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
import type { LabKernel } from './kernel.js';
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

/** Compiles a guest program statically, cached by its source and the compiler version. */
export async function buildGuestProgram(name: string, onProgress?: (m: string) => void): Promise<string> {
  const source = join(guestProgramsDir(), `${name}.c`);
  const src = await readFile(source);
  const cc = process.env.CC ?? 'gcc';
  const ccVersion = (await mustRun(cc, ['--version'])).stdout.toString('utf8');
  const dir = join(cacheRoot(), 'programs', sha256(name, src, ccVersion).slice(0, 16));
  const out = join(dir, name);
  if (existsSync(out)) return out;
  onProgress?.(`compiling ${name}.c (static)`);
  await mkdir(dir, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}-${randomTag()}`;
  try {
    await mustRun(cc, ['-static', '-O2', '-Wall', '-o', tmp, source]);
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

export interface InitramfsInputs {
  busybox: Buffer;
  applets: string[];
  programs: Record<string, Buffer>;
  /** Module name → uncompressed .ko bytes. */
  modules: Record<string, Buffer>;
  kernelRelease: string;
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
  const modDir = `lib/modules/${inp.kernelRelease}`;
  dir(modDir);
  const guestModules: string[] = [];
  for (const [name, data] of Object.entries(inp.modules)) {
    entries.push({ type: 'file', path: `${modDir}/${name}.ko`, data, mode: 0o644 });
    guestModules.push(`/${modDir}/${name}.ko`);
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
  const modules: Record<string, Buffer> = {};
  for (const [name, path] of Object.entries(kernel.modules)) modules[name] = await readFile(path);
  // Insertion order is load order (module names are never integer-like keys).
  for (const { name, path } of extraModules) modules[name] ??= await readFile(path);

  const inputs: InitramfsInputs = {
    busybox,
    applets,
    programs: { labd, psnative, labsandbox },
    modules,
    kernelRelease: kernel.release,
  };
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
