/**
 * The built CLI without a guest: help texts, `plugins available`, and start-up time.
 * Runs bin/run.js against dist/ and oclif.manifest.json (`npm run build` first).
 *
 * The start-up bound asserted here (1.5 s) is a sanity check only; the 0.5 s target is
 * reported by the benchmark.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLAIN_TERMINAL, VMI_BIN, requireBuilt, runProcess, runVmi } from './helpers/cli.js';
import { installedNode, isTooOld, pins } from '../../bin/node-runtime.js';
import { builtinPlugins } from '../../src/plugins/index.js';

const SANITY_MS = 1500;

const vmi = (args: string[], nodeArgs: string[] = []) =>
  runVmi(args, { nodeArgs, env: PLAIN_TERMINAL, timeoutMs: 30_000 });

async function medianMs(args: string[], runs = 3): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await vmi(args);
    expect(r.code, r.stderr).toBe(0);
    times.push(r.ms);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

const names = builtinPlugins.map((p) => p.name);

beforeAll(() => requireBuilt('dist/commands/plugins/run.js'));

describe('vmi --help', () => {
  it('succeeds and shows the topics and a quick start', async () => {
    const r = await vmi(['--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/TOPICS[\s\S]*lab[\s\S]*plugins/);
    expect(r.stdout).toContain('vmi plugins run pslist');
    expect(r.stdout).toContain('vmi plugins available');
  });

  it('`plugins run --help` has every flag, examples and every built-in plugin', async () => {
    const r = await vmi(['plugins', 'run', '--help']);
    expect(r.code, r.stderr).toBe(0);
    for (const flag of ['--renderer', '--output', '--all', '--list', '--timing', '--transport', '--guest']) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toContain('parquet');
    expect(r.stdout).toMatch(/EXAMPLES[\s\S]*\$ vmi plugins run --all -r parquet -o out\//);
    for (const n of names) expect(r.stdout).toMatch(new RegExp(`\\b${n}\\b`));
  });
});

describe('vmi plugins available', () => {
  it('lists every built-in plugin, like plugins run --list', async () => {
    const [available, list] = await Promise.all([
      vmi(['plugins', 'available']),
      vmi(['plugins', 'run', '--list']),
    ]);
    expect(available.code, available.stderr).toBe(0);
    for (const n of names) expect(available.stdout).toMatch(new RegExp(`^${n}  \\(v`, 'm'));
    expect(available.stdout).toContain('columns: PID [int32]');
    expect(available.stdout).toBe(list.stdout);
  });

  it('--json gives names, typed columns and option specs', async () => {
    const r = await vmi(['plugins', 'available', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const catalog = JSON.parse(r.stdout) as {
      name: string;
      version: string;
      columns: { name: string; type: string }[];
      options: { name: string; type: string; multiple?: boolean }[];
    }[];
    expect(catalog.map((p) => p.name)).toEqual(expect.arrayContaining(names));
    const pslist = catalog.find((p) => p.name === 'pslist');
    expect(pslist?.columns).toContainEqual(expect.objectContaining({ name: 'PID', type: 'int32' }));
    expect(pslist?.columns).toContainEqual(
      expect.objectContaining({ name: 'CREATION TIME', type: 'timestamp_ms' }),
    );
    expect(pslist?.options).toContainEqual(
      expect.objectContaining({ name: 'pid', type: 'integer', multiple: true }),
    );
  });
});

/** The system's node when it is older than vmi supports (Debian 12's 20), else undefined. */
function oldSystemNode(): string | undefined {
  const r = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' });
  return r.status === 0 && isTooOld(r.stdout.trim()) ? '/usr/bin/node' : undefined;
}

describe.runIf(oldSystemNode() && installedNode(pins().lts))('on a system Node that is too old', () => {
  const old = oldSystemNode() as string;
  it("runs itself again under vmi's private LTS Node, and exits as it does", async () => {
    const r = await runProcess(old, [VMI_BIN, '--version'], { env: PLAIN_TERMINAL });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`node-v${pins().lts}`);
    const bad = await runProcess(old, [VMI_BIN, 'no-such-command'], { env: PLAIN_TERMINAL });
    const same = await vmi(['no-such-command']);
    expect(same.code).not.toBe(0);
    expect(bad.code).toBe(same.code);
  });

  it('says how to get a supported Node when the private one is not installed', async () => {
    const r = await runProcess(old, [VMI_BIN, '--version'], {
      env: { ...PLAIN_TERMINAL, VMI_CACHE: join(tmpdir(), `vmi-no-cache-${process.pid}`) },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/older than vmi supports.*run `npm run setup`/);
  });
});

describe('start-up', () => {
  let hookDir: string;
  beforeAll(async () => {
    // An ESM resolve hook that reports every module vmi would load from these packages.
    hookDir = await mkdtemp(join(tmpdir(), 'vmi-startup-'));
    await writeFile(
      join(hookDir, 'hooks.mjs'),
      `export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  if (/apache-arrow|parquet-wasm|@duckdb|\\/dist\\/(output|runner|plugins|shadow)\\//.test(r.url)) process.stderr.write('LOADED ' + r.url + '\\n');
  return r;
}
`,
    );
    await writeFile(
      join(hookDir, 'register.mjs'),
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(hookDir, 'hooks.mjs')).href)});\n`,
    );
  });
  afterAll(async () => {
    await rm(hookDir, { recursive: true, force: true });
  });

  it('help loads no command module, Arrow or Parquet (the manifest answers it)', async () => {
    for (const args of [['--help'], ['plugins', 'run', '--help'], ['plugins', 'available', '--help']]) {
      const r = await vmi(args, ['--import', join(hookDir, 'register.mjs')]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr.match(/^LOADED .*/gm) ?? [], args.join(' ')).toEqual([]);
    }
  });

  it('is quick (median of 3; sanity bound only)', async () => {
    const help = await medianMs(['--help']);
    const runHelp = await medianMs(['plugins', 'run', '--help']);
    const available = await medianMs(['plugins', 'available']);
    console.log(
      `start-up: vmi --help ${help.toFixed(0)} ms; vmi plugins run --help ${runHelp.toFixed(0)} ms; ` +
        `vmi plugins available ${available.toFixed(0)} ms`,
    );
    expect(help).toBeLessThan(SANITY_MS);
    expect(runHelp).toBeLessThan(SANITY_MS);
  });
});
