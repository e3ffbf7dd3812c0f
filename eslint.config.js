import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/**
 * The layers of src, bottom to top (README, Architecture: the folder map), and the lower
 * folders each may import. An import of any other folder of src is a lint error: imports
 * only point down. (No import cycle between files: test/unit/import-graph.test.ts.)
 */
const LAYERS = [
  ['util', []],
  ['abi', ['util']],
  ['output', ['util']],
  // The vmi server protocol and its client (docs/serve.md): no guest engine, no oclif.
  ['serve', ['util', 'output']],
  ['sdk', ['util', 'abi', 'output']],
  ['qemu', ['util']],
  ['memory', ['util', 'qemu']],
  ['shadow', ['util', 'abi', 'sdk', 'qemu', 'memory']],
  ['capture', ['util', 'qemu', 'memory']],
  ['lab', ['util', 'qemu']],
  ['targets', ['util', 'qemu', 'memory', 'shadow', 'capture', 'lab']],
  ['plugins', ['abi', 'sdk']],
  ['packs', ['util', 'output', 'sdk', 'plugins']],
  ['runner', ['util', 'output', 'sdk', 'qemu', 'memory', 'shadow', 'targets']],
  // The programmatic API (openGuest): targets and the runner, with a guest's lifetime.
  ['api', ['util', 'output', 'sdk', 'qemu', 'shadow', 'targets', 'plugins', 'runner', 'serve']],
  // `vmi watch`: snapshots through the API, diffed into change events.
  ['watch', ['util', 'abi', 'output', 'sdk', 'api']],
  ['cli', ['util', 'output', 'sdk', 'plugins', 'packs', 'runner']],
  // `vmi query`, `vmi collect`: plugin tables in an embedded DuckDB, and the Parquet lake.
  ['sql', ['util', 'output', 'sdk', 'targets', 'runner']],
  // `vmi serve`: a guest held open behind a socket, and the fast client of bin/run.js.
  ['server', ['util', 'output', 'serve', 'shadow', 'lab', 'runner', 'api', 'cli']],
];
const FOLDERS = [...LAYERS.map(([f]) => f), 'commands'];

/** One `files` override per layer: no-restricted-imports of every folder it may not import. */
function layerRules() {
  return LAYERS.map(([folder, allowed], i) => {
    const below = new Set(LAYERS.slice(0, i).map(([f]) => f));
    const stray = allowed.filter((a) => !below.has(a));
    if (stray.length) throw new Error(`eslint layers: ${folder} may only import lower layers, not ${stray}`);
    const forbidden = FOLDERS.filter((f) => f !== folder && !allowed.includes(f));
    return {
      files: [`src/${folder}/**/*.ts`],
      rules: {
        'no-restricted-imports': [
          'error',
          {
            patterns: [
              {
                // A relative path that climbs out of the folder into another layer of src.
                regex: `^(\\.\\./)+(${forbidden.join('|')})/`,
                message: `src/${folder} may import only ${allowed.length ? allowed.map((a) => `src/${a}`).join(', ') : 'node and npm modules'} (layer order: README, Architecture).`,
              },
            ],
          },
        ],
      },
    };
  });
}

export default defineConfig(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'samples/**/node_modules/**',
      'samples/**/dist/**',
      'coverage/**',
      '.cache/**',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  ...layerRules(),
  {
    files: ['bin/**/*.js', 'scripts/**/*.mjs', 'samples/**/*.js', 'samples/**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
