/**
 * lsmod: the loaded kernel modules (Volatility's linux.lsmod), from /proc/modules. The
 * kernel prints load addresses as 0 to readers kptr_restrict hides kernel pointers from:
 * such an Offset is shown as NOT_AVAILABLE, never as a fake 0.
 */
import { parseModules } from '../abi/linux/proc/index.js';
import { definePlugin, notAvailable, type Row } from '../sdk/index.js';

const columns = [
  {
    name: 'Offset',
    type: 'hex64',
    description: 'Load address of the module (N/A when kptr_restrict hides it)',
  },
  { name: 'Name', type: 'utf8', description: 'Module name' },
  { name: 'Size', type: 'int64', description: 'Size of the module in memory, bytes' },
  { name: 'Refcount', type: 'int32', description: 'References held (N/A without CONFIG_MODULE_UNLOAD)' },
  { name: 'State', type: 'utf8', description: 'Live, Loading or Unloading' },
  { name: 'Users', type: 'utf8', description: 'Modules that depend on this one, comma-separated' },
] as const;

const HIDDEN = notAvailable('load address hidden by kptr_restrict');
const NO_REFCOUNT = notAvailable('kernel without module unloading');

export const lsmod = definePlugin({
  name: 'lsmod',
  volatilityName: 'linux.lsmod',
  description: 'Lists the loaded kernel modules of the guest',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const data = await ctx.sys.readFile('/proc/modules', { chunkSize: 16384 });
    const { entries, errors } = parseModules(data);
    for (const e of errors) ctx.warn(e.message);
    return entries.map((m): Row<typeof columns> => ({
      Offset: m.offset === 0n ? HIDDEN : m.offset,
      Name: m.name,
      Size: m.size,
      Refcount: m.refcount ?? NO_REFCOUNT,
      State: m.state,
      Users: m.users.join(','),
    }));
  },
});
