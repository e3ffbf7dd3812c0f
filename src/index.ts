/**
 * The `vmi` package entry. The CLI is the `vmi` binary (bin/run.js); what a program or
 * a plugin pack imports is the plugin SDK, re-exported here and available on its own
 * as `vmi/sdk` (the preferred import for packs).
 */
export * from './sdk/index.js';
