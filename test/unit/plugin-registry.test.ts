import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtinPlugins } from '../../src/plugins/index.js';
import { loadPack, loadPluginRegistry, PluginRegistry, type PackSource } from '../../src/packs/registry.js';
import {
  apiVersion,
  definePlugin,
  PluginApiVersionError,
  runPlugin,
  type PluginDefinition,
} from '../../src/sdk/index.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A pack on disk: package.json with the vmi key, and an entry module with `source` as its body. */
function packOnDisk(name: string, source: string, vmi: unknown = { plugins: './index.js' }): PackSource {
  const root = mkdtempSync(join(tmpdir(), `vmi-pack-${name}-`));
  dirs.push(root);
  const pjson = { name, version: '1.0.0', type: 'module', oclif: {}, vmi };
  writeFileSync(join(root, 'package.json'), JSON.stringify(pjson));
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.js'), source);
  return { name, root, pjson };
}

/** Source of a definition literal (what definePlugin returns, without importing the SDK). */
function defSource(name: string, api = apiVersion): string {
  return `{ name: '${name}', description: 'd', version: '1.0.0', apiVersion: ${api}, options: {},
    columns: [{ name: 'X', type: 'int32' }], run: async () => [{ X: 1 }] }`;
}

function plugin(name: string): PluginDefinition {
  return definePlugin({
    name,
    description: 'd',
    version: '1.0.0',
    columns: [{ name: 'X', type: 'int32' }] as const,
    async run() {
      return [{ X: 1 }];
    },
  });
}

describe('PluginRegistry', () => {
  it('merges packs after the built-ins and knows where each plugin comes from', () => {
    const r = new PluginRegistry(builtinPlugins, [
      { name: 'pack-a', plugins: [plugin('caps')], rejected: [] },
    ]);
    expect(r.find('CAPS')?.name).toBe('caps');
    expect(r.packOf('caps')).toBe('pack-a');
    expect(r.packOf('pslist')).toBeUndefined();
    expect(r.plugins.map((p) => p.name)).toEqual([...builtinPlugins.map((p) => p.name), 'caps']);
    expect(r.warnings).toEqual([]);
  });

  it('a clash is one warning naming both sides; the built-in (or the first pack) wins', () => {
    const mine = plugin('pslist');
    const r = new PluginRegistry(builtinPlugins, [
      { name: 'pack-a', plugins: [mine, plugin('dup')], rejected: [] },
      { name: 'pack-b', plugins: [plugin('dup')], rejected: [] },
    ]);
    expect(r.find('pslist')).toBe(builtinPlugins.find((p) => p.name === 'pslist'));
    expect(r.packOf('dup')).toBe('pack-a');
    expect(r.warnings).toEqual([
      "plugin 'pslist' of pack pack-a clashes with the built-in pslist: using the built-in",
      "plugin 'dup' of pack pack-b clashes with the one of pack pack-a: using pack-a's",
    ]);
  });

  it('a plugin refused for its API version is a warning, and an error when asked for', () => {
    const err = new PluginApiVersionError('future', 2, 'pack-f');
    const r = new PluginRegistry(builtinPlugins, [{ name: 'pack-f', plugins: [], rejected: [err] }]);
    expect(r.warnings).toEqual([err.message]);
    expect(err.message).toBe(
      `plugin 'future' of pack pack-f was built for vmi plugin API 2, but this vmi provides plugin API ${apiVersion}: update the pack or vmi`,
    );
    expect(() => r.find('future')).toThrow(err);
    expect(r.find('nothing')).toBeUndefined();
  });
});

describe('loading packs', () => {
  it('imports the entry named by package.json "vmi.plugins" (named or default export)', async () => {
    const named = await loadPack(packOnDisk('named', `export const plugins = [${defSource('one')}];`));
    expect(named.plugins.map((p) => p.name)).toEqual(['one']);
    const dflt = await loadPack(packOnDisk('dflt', `export default [${defSource('two')}];`));
    expect(dflt.plugins.map((p) => p.name)).toEqual(['two']);
  });

  it('per-definition apiVersion: other majors are rejected with pack and both versions', async () => {
    const p = await loadPack(
      packOnDisk(
        'mixed',
        `export const plugins = [${defSource('ok')}, ${defSource('newer', apiVersion + 1)}];`,
      ),
    );
    expect(p.plugins.map((d) => d.name)).toEqual(['ok']);
    expect(p.rejected[0].message).toContain(
      `plugin 'newer' of pack mixed was built for vmi plugin API ${apiVersion + 1}, but this vmi provides plugin API ${apiVersion}`,
    );
  });

  it('package-level apiVersion is checked before the import', async () => {
    const src = packOnDisk('old', 'throw new Error("must not be imported");', {
      plugins: './index.js',
      apiVersion: 0,
    });
    await expect(loadPack(src)).rejects.toThrow(
      `plugin pack old failed to load: it was built for vmi plugin API 0, but this vmi provides plugin API ${apiVersion}`,
    );
  });

  it('loadPluginRegistry: a throwing pack is one warning line; other packs and the built-ins still load', async () => {
    const lines: string[] = [];
    const config = {
      plugins: new Map<string, PackSource>([
        ['vmi', { name: 'vmi', root: '/', pjson: {}, isRoot: true }],
        ['@oclif/plugin-help', { name: '@oclif/plugin-help', root: '/', pjson: { oclif: {} } }],
        ['broken', packOnDisk('broken', 'throw new Error("kaboom\\nsecond line");')],
        ['noexport', packOnDisk('noexport', 'export const x = 1;')],
        ['badmanifest', packOnDisk('badmanifest', '', { entry: 'x' })],
        ['good', packOnDisk('good', `export const plugins = [${defSource('goodone')}];`)],
      ]),
    };
    // Trusted (imported here): isolated packs run dist/'s child script (test/integration/packs*.test.ts).
    const r = await loadPluginRegistry(config, { onWarning: (l) => lines.push(l), trusted: () => true });
    expect(lines).toEqual([
      'plugin pack broken failed to load: kaboom second line',
      'plugin pack noexport failed to load: ./index.js exports no plugin list (export const plugins = [...])',
      'plugin pack badmanifest failed to load: package.json "vmi.plugins" must name the entry module',
    ]);
    expect(r.find('goodone')).toBeDefined();
    expect(r.find('pslist')).toBeDefined();
    expect(r.packOf('goodone')).toBe('good');
  });

  it('a bad definition fails its pack', async () => {
    await expect(loadPack(packOnDisk('bad', 'export const plugins = [{ name: "x" }];'))).rejects.toThrow(
      'plugin pack bad failed to load: plugins[0] is not a plugin definition (use definePlugin)',
    );
  });
});

describe('runPlugin refuses a definition of another API major', () => {
  it('names both versions', async () => {
    const def = { ...plugin('alien'), apiVersion: apiVersion + 1 };
    await expect(runPlugin(def, { executor: { run: async () => [] } })).rejects.toThrow(
      `plugin 'alien' was built for vmi plugin API ${apiVersion + 1}, but this vmi provides plugin API ${apiVersion}`,
    );
  });
});
