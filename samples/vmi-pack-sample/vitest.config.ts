import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Unit tests run against the SDK sources of the vmi checkout this sample lives in.
    // A pack outside the repo installs vmi and drops this alias.
    alias: { 'vmi/sdk': fileURLToPath(new URL('../../src/sdk/index.ts', import.meta.url)) },
  },
  test: { include: ['test/**/*.test.ts'] },
});
