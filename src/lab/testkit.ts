/**
 * The lab's test rootkit (src/lab/guest-modules/vmi_testkit.c): built on demand against
 * Debian's headers of the lab kernel and cached. The headers (linux-headers-<release>,
 * its -common package and linux-kbuild-<series>) are fetched with `apt-get download` and
 * unpacked with `dpkg-deb -x` into vmi's cache, like the kernel itself: nothing is
 * installed on the host. The module is a test fixture: only tests load it, into lab
 * guests, with insmod from the guest's console.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomTag } from '../util/run-dir.js';
import { LabError, mustRun, removeQuietly, runTool, sha256 } from './host.js';
import type { LabKernel } from './kernel.js';

/** The module's name (as /proc/modules would show it, were it not hidden). */
export const TESTKIT_MODULE = 'vmi_testkit';

/** The Debian header packages a kernel release needs to build a module (pure). */
export function headerPackages(release: string, version: string): string[] {
  const m = /^(\d+\.\d+)(?:\.\d+)?(?:\+deb\d+)?-(?:(\d+)-)?([a-z0-9-]+)$/.exec(release);
  if (!m) throw new LabError(`cannot tell the header packages of kernel release ${release}`);
  const series = m[1]!;
  const flavour = m[3]!;
  // 6.1.0-57-amd64 → -common is linux-headers-6.1.0-57-common; 6.12.57+deb12-amd64 →
  // linux-headers-6.12.57+deb12-common. The -rt flavours have their own -common-rt.
  const base = release.slice(0, release.length - flavour.length - 1);
  const common = flavour.startsWith('rt')
    ? `linux-headers-${base}-common-rt`
    : `linux-headers-${base}-common`;
  // 6.1's kbuild package is per series (pinned to the kernel's version); 6.12's per release.
  const kbuild = base.includes('+deb') ? `linux-kbuild-${base}` : `linux-kbuild-${series}=${version}`;
  return [`linux-headers-${release}`, common, kbuild];
}

/** The directory of the module's C source, from src/ or from dist/. */
export function guestModulesDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [
    join(here, 'guest-modules'),
    join(here, '..', '..', 'src', 'lab', 'guest-modules'),
  ]) {
    if (existsSync(join(candidate, `${TESTKIT_MODULE}.c`))) return candidate;
  }
  throw new LabError(`cannot find src/lab/guest-modules (${TESTKIT_MODULE}.c)`);
}

/**
 * Downloads and unpacks the kernel's header packages into the cache; returns the build
 * directory (…/usr/src/linux-headers-<release>) whose Makefile now includes the unpacked
 * -common tree instead of /usr/src. Idempotent; concurrent callers each unpack into their
 * own temporary directory and the first rename wins.
 */
export async function ensureKernelHeaders(
  kernel: LabKernel,
  onProgress?: (m: string) => void,
): Promise<string> {
  const finalDir = join(kernel.dir, 'headers');
  const buildDir = join(finalDir, 'usr', 'src', `linux-headers-${kernel.release}`);
  if (existsSync(join(finalDir, '.complete'))) return buildDir;
  const tmp = join(kernel.dir, `.tmp-headers-${process.pid}-${randomTag()}`);
  await mkdir(tmp, { recursive: true });
  try {
    const pkgs = headerPackages(kernel.release, kernel.version);
    onProgress?.(`downloading ${pkgs.join(', ')}`);
    const r = await runTool('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', ...pkgs], {
      cwd: tmp,
      timeoutMs: 600_000,
    });
    if (r.code !== 0) {
      const why = r.stderr.trim().split('\n').filter(Boolean).pop() ?? `exit code ${r.code}`;
      throw new LabError(`apt-get download of the kernel headers failed: ${why}`);
    }
    const debs = (await readdir(tmp)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== pkgs.length)
      throw new LabError(`expected ${pkgs.length} header packages, got ${debs.length}`);
    const root = join(tmp, 'root');
    for (const deb of debs) await mustRun('dpkg-deb', ['-x', join(tmp, deb), root], { timeoutMs: 300_000 });
    // The flavour's Makefile includes /usr/src/linux-headers-<base>-common/Makefile: point
    // it at the unpacked copy (its scripts/tools symlinks are relative and stay inside).
    const tmpBuild = join(root, 'usr', 'src', `linux-headers-${kernel.release}`);
    const makefile = await readFile(join(tmpBuild, 'Makefile'), 'utf8');
    const fixed = makefile.replace(/^include \/usr\/src\//m, `include ${join(finalDir, 'usr', 'src')}/`);
    if (fixed === makefile) throw new LabError(`unexpected headers Makefile in ${tmpBuild}`);
    await writeFile(join(tmpBuild, 'Makefile'), fixed);
    await writeFile(join(root, '.complete'), pkgs.join('\n') + '\n');
    try {
      await rename(root, finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      if (!existsSync(join(finalDir, '.complete'))) {
        await removeQuietly(finalDir);
        await rename(root, finalDir);
      }
    }
    return buildDir;
  } finally {
    await removeQuietly(tmp);
  }
}

/**
 * Builds vmi_testkit.ko for the kernel (make -C <headers> M=<dir> modules), cached under
 * a hash of the source and the compiler; returns the .ko path.
 * @throws LabError with the compiler's last line when the build fails
 */
export async function buildTestkit(kernel: LabKernel, onProgress?: (m: string) => void): Promise<string> {
  const source = await readFile(join(guestModulesDir(), `${TESTKIT_MODULE}.c`));
  const cc = (await mustRun('gcc', ['--version'])).stdout.toString('utf8');
  const dir = join(kernel.dir, 'testkit', sha256(source, cc, kernel.release).slice(0, 16));
  const ko = join(dir, `${TESTKIT_MODULE}.ko`);
  if (existsSync(ko)) return ko;
  const headers = await ensureKernelHeaders(kernel, onProgress);
  onProgress?.(`building ${TESTKIT_MODULE}.ko for ${kernel.release}`);
  const work = join(kernel.dir, `.tmp-testkit-${process.pid}-${randomTag()}`);
  await mkdir(work, { recursive: true });
  try {
    await writeFile(join(work, `${TESTKIT_MODULE}.c`), source);
    await writeFile(
      join(work, 'Kbuild'),
      `obj-m := ${TESTKIT_MODULE}.o\n# The ftrace thunk tells the wrappers' calls by their return address: no tail calls.\nccflags-y := -fno-optimize-sibling-calls\n`,
    );
    // No BTF for a test fixture: 6.12's headers enable CONFIG_DEBUG_INFO_BTF_MODULES, whose
    // step needs pahole (dwarves) on the host; overriding the option on make's command line
    // skips it (scripts/Makefile.modfinal), and the module loads the same without .BTF.
    const r = await runTool(
      'make',
      ['-C', headers, `M=${work}`, 'CONFIG_DEBUG_INFO_BTF_MODULES=', 'modules'],
      {
        timeoutMs: 600_000,
      },
    );
    if (r.code !== 0 || !existsSync(join(work, `${TESTKIT_MODULE}.ko`))) {
      const out = (r.stdout.toString('utf8') + '\n' + r.stderr).trim().split('\n');
      const why = out.filter((l) => /error/i.test(l))[0] ?? out.pop() ?? `exit code ${r.code}`;
      throw new LabError(`building ${TESTKIT_MODULE}.ko failed: ${why}`);
    }
    await mkdir(dir, { recursive: true });
    const tmpKo = `${ko}.tmp-${process.pid}`;
    await copyFile(join(work, `${TESTKIT_MODULE}.ko`), tmpKo);
    await rename(tmpKo, ko);
    return ko;
  } finally {
    await removeQuietly(work);
  }
}
