/**
 * iomem: the physical address map (Volatility's linux.iomem), from /proc/iomem
 * (kernel/resource.c, the iomem_resource tree): RAM, ACPI tables, PCI BARs, the kernel
 * image's code and data. One row per resource, in the file's order, with its depth in
 * the tree (tree renderers indent it). Addresses are zeros for readers without
 * CAP_SYS_ADMIN: the shadow runs as root, otherwise a warning. `--ioports` reads the I/O
 * port tree (/proc/ioports) instead.
 *
 * Cost: 1 batch, 3 calls (+1 follow-up batch for a map over 16 KiB).
 */
import { parseIomem } from '../abi/linux/proc/iomem.js';
import { definePlugin, TREE_DEPTH, type Row } from '../sdk/index.js';

const columns = [
  { name: 'Name', type: 'utf8', description: 'Resource name (System RAM, Kernel code, PCI Bus 0000:00...)' },
  { name: 'Start', type: 'hex64', description: 'First physical address (or port)' },
  { name: 'End', type: 'hex64', description: 'Last physical address (or port), inclusive' },
  { name: 'Size', type: 'uint64', description: 'End - Start + 1, bytes (or ports)' },
  { name: 'Depth', type: 'int32', description: 'Level in the resource tree (0: top)' },
] as const;

export const iomem = definePlugin({
  name: 'iomem',
  volatilityName: 'linux.iomem',
  description: 'Lists the physical memory map of the guest (/proc/iomem tree)',
  version: '1.0.0',
  columns,
  options: {
    ioports: { type: 'boolean', description: 'The I/O port tree (/proc/ioports) instead' },
  },
  async run(ctx) {
    const path = ctx.options.ioports ? '/proc/ioports' : '/proc/iomem';
    const data = await ctx.sys.readFile(path, { chunkSize: 16384 });
    const { entries, bad } = parseIomem(data);
    if (bad.length > 0) ctx.warn(`${path}: ${bad.length} unparsable line(s), first at ${bad[0]}`);
    if (entries.length > 0 && entries.every((e) => e.start === 0n && e.end === 0n))
      ctx.warn(`${path}: addresses hidden (the reader lacks CAP_SYS_ADMIN)`);
    return entries.map((e): Row<typeof columns> => ({
      Name: e.name,
      Start: e.start,
      End: e.end,
      Size: e.end >= e.start ? e.end - e.start + 1n : 0n,
      Depth: e.depth,
      [TREE_DEPTH]: e.depth,
    }));
  },
});
