/**
 * The pack's entry module, named by `"vmi": { "plugins": "./dist/index.js" }` in
 * package.json. vmi imports it and registers every definition of `plugins`.
 */
import type { PluginDefinition } from 'vmi/sdk';
import { capabilities } from './capabilities.js';
import { cgroups } from './cgroups.js';

export { capabilities, cgroups };
export { decodeCapabilities, CAPABILITY_NAMES } from './caps.js';
export { parseCgroup, type CgroupLine } from './cgroups.js';

/** The introspection plugins this pack adds to `vmi plugins run`. */
export const plugins: readonly PluginDefinition[] = [capabilities, cgroups];
