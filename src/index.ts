/**
 * The `vmi` package entry. The CLI is the `vmi` binary (bin/run.js); what a program
 * imports is the API (open a guest, run plugins, get Arrow tables: docs/api.md) and the
 * plugin SDK, which is also available on its own as `vmi/sdk` (the import for packs).
 */
export * from './sdk/index.js';
export * from './api/index.js';
