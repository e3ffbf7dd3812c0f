/**
 * Isolated packs, the pure parts: the child's command line and confinement for each kind
 * of host (src/packs/pack-sandbox.ts), the readability check of a pack directory for the
 * sandbox user, the checks vmi makes of every message and cell a child sends
 * (src/packs/isolation-protocol.ts), and which packs are trusted (VMI_TRUST_PACKS). The
 * confinement itself is tested against the host in test/integration/packs-escape.test.ts.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AbsentValue } from '../../src/output/columns.js';
import { closedTo } from '../../src/packs/isolated-pack.js';
import {
  checkChildMessage,
  cleanText,
  decodeCell,
  decodeRow,
  encodeCell,
  PackProtocolError,
} from '../../src/packs/isolation-protocol.js';
import {
  passwdUser,
  sandboxPlan,
  SandboxUnavailableError,
  type SandboxHost,
} from '../../src/packs/pack-sandbox.js';
import { trustedFromEnv } from '../../src/packs/registry.js';

const host = (over: Partial<SandboxHost> = {}): SandboxHost => ({
  node: '/opt/node/bin/node',
  root: true,
  unshare: '/usr/bin/unshare',
  setpriv: '/usr/bin/setpriv',
  permissionFlag: '--permission',
  netPermission: false,
  user: { name: 'nobody', uid: 65534, gid: 65534 },
  ...over,
});

describe('the child command line', () => {
  it('as root: network namespace, no_new_privs, the permission model, reads of the pack and vmi only, nobody', () => {
    const plan = sandboxPlan(host(), '/vmi/dist/packs/isolated-child.js', ['/packs/p', '/vmi/dist']);
    expect(plan.file).toBe('/usr/bin/unshare');
    expect(plan.args).toEqual([
      '--net',
      '--',
      '/usr/bin/setpriv',
      '--no-new-privs',
      '--',
      '/opt/node/bin/node',
      '--permission',
      '--allow-fs-read=/packs/p',
      '--allow-fs-read=/vmi/dist',
      '--max-old-space-size=2048',
      '--disable-warning=ExperimentalWarning',
      '/vmi/dist/packs/isolated-child.js',
    ]);
    // Nothing that grants writes, processes, workers, addons, WASI, the inspector or network.
    expect(plan.args.filter((a) => /^--allow-(?!fs-read)/.test(a))).toEqual([]);
    expect(plan.drop).toEqual({ uid: 65534, gid: 65534 });
    expect(plan.layers.join('; ')).toMatch(/netns.*no-new-privs.*uid nobody \(65534\)/);
  });

  it('as another user: the permission model alone, no uid change', () => {
    const plan = sandboxPlan(host({ root: false }), '/c.js', ['/p']);
    expect(plan.file).toBe('/opt/node/bin/node');
    expect(plan.args[0]).toBe('--permission');
    expect(plan.drop).toBeNull();
    expect(plan.layers).toHaveLength(1);
  });

  it('as root without unshare: refused rather than run with less', () => {
    expect(() => sandboxPlan(host({ unshare: undefined }), '/c.js', ['/p'])).toThrow(SandboxUnavailableError);
    expect(() => sandboxPlan(host({ unshare: undefined }), '/c.js', ['/p'])).toThrow(/--trust-pack/);
  });

  it("an older Node's flag name, and network named where the Node can deny it", () => {
    const old = sandboxPlan(host({ root: false, permissionFlag: '--experimental-permission' }), '/c.js', []);
    expect(old.args[0]).toBe('--experimental-permission');
    expect(sandboxPlan(host({ netPermission: true }), '/c.js', []).layers[0]).toMatch(/network/);
    expect(sandboxPlan(host({ netPermission: false }), '/c.js', []).layers[0]).not.toMatch(/network/);
  });

  it('reads the sandbox user from passwd', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmi-passwd-'));
    try {
      const f = join(dir, 'passwd');
      await writeFile(f, 'root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n');
      expect(passwdUser('nobody', f)).toEqual({ name: 'nobody', uid: 65534, gid: 65534 });
      expect(passwdUser('vmi-sandbox', f)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a pack directory the sandbox user must read', () => {
  it('names the first directory closed to it', async () => {
    const base = await mkdtemp(join(tmpdir(), 'vmi-closed-'));
    try {
      const pack = join(base, 'a', 'pack');
      await mkdir(pack, { recursive: true });
      await chmod(base, 0o755);
      await chmod(join(base, 'a'), 0o755);
      await chmod(pack, 0o755);
      const nobody = { uid: 65534, gid: 65534 };
      expect(closedTo(pack, nobody)).toBeUndefined();
      await chmod(join(base, 'a'), 0o700);
      expect(closedTo(pack, nobody)).toBe(`${join(base, 'a')} (mode 700)`);
      await chmod(join(base, 'a'), 0o711);
      expect(closedTo(pack, nobody)).toBeUndefined();
      await chmod(pack, 0o711);
      expect(closedTo(pack, nobody)).toBe(`${pack} (mode 711)`);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

describe('what vmi accepts from a child', () => {
  it('messages of the protocol only', () => {
    expect(checkChildMessage({ t: 'progress', message: 'x' })).toEqual({ t: 'progress', message: 'x' });
    for (const bad of [
      null,
      'done',
      [],
      { t: 'batch', id: 1.5, calls: [] },
      { t: 'batch', id: 1 },
      { t: 'rows', rows: [1, 2] },
      { t: 'done', errors: [], runs: 'x', calls: 0 },
      { t: 'failed', name: 1, message: 'm' },
      { t: 'exec', command: 'rm -rf /' },
    ]) {
      expect(() => checkChildMessage(bad), JSON.stringify(bad)).toThrow(PackProtocolError);
    }
  });

  it('cells that are values; absent markers round-trip', () => {
    const d = new Date(0);
    for (const v of [1, 2n, 'x', true, null, d]) expect(decodeCell(encodeCell(v))).toBe(v);
    const a = decodeCell(structuredClone(encodeCell(new AbsentValue('unreadable', 'ESRCH'))));
    expect(a).toBeInstanceOf(AbsentValue);
    expect(a).toEqual(new AbsentValue('unreadable', 'ESRCH'));
    for (const bad of [{}, { absent: 'maybe' }, [1], undefined, Symbol('s'), () => 1, new Uint8Array(1)]) {
      expect(() => decodeCell(bad)).toThrow(PackProtocolError);
    }
    expect(() => decodeRow([1, 2], 3)).toThrow(/a row of 2 cells, expected 3/);
  });

  it('text is cut and its control characters replaced (no terminal escapes from a pack)', () => {
    expect(cleanText('a\u001b[2Jb\nc')).toBe('a?[2Jb\nc');
    expect(cleanText('x'.repeat(10_000))).toHaveLength(4096);
  });
});

describe('trusted packs', () => {
  it('VMI_TRUST_PACKS names them; nothing is trusted by default', () => {
    expect(trustedFromEnv(undefined)('p')).toBe(false);
    expect(trustedFromEnv('')('p')).toBe(false);
    expect(trustedFromEnv('a, p')('p')).toBe(true);
    expect(trustedFromEnv('a,b')('p')).toBe(false);
    expect(trustedFromEnv('*')('p')).toBe(true);
  });
});
