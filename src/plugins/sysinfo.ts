/**
 * sysinfo: the kernel's overall statistics from sysinfo(2), one row: uptime, load
 * averages, memory and swap (in bytes: the kernel's counts times mem_unit) and the
 * number of tasks (threads included, as the kernel counts them).
 */
import { definePlugin } from '../sdk/index.js';

const columns = [
  { name: 'UPTIME', type: 'int64', description: 'Seconds since boot' },
  { name: 'LOAD 1', type: 'float64', description: '1-minute load average' },
  { name: 'LOAD 5', type: 'float64', description: '5-minute load average' },
  { name: 'LOAD 15', type: 'float64', description: '15-minute load average' },
  { name: 'TOTAL RAM', type: 'int64', description: 'Usable RAM, bytes (MemTotal)' },
  { name: 'FREE RAM', type: 'int64', description: 'Free RAM, bytes (MemFree)' },
  { name: 'SHARED', type: 'int64', description: 'Shared memory, bytes (Shmem)' },
  { name: 'BUFFERS', type: 'int64', description: 'Block device buffers, bytes (Buffers)' },
  { name: 'TOTAL SWAP', type: 'int64', description: 'Swap space, bytes' },
  { name: 'FREE SWAP', type: 'int64', description: 'Free swap space, bytes' },
  { name: 'PROCESSES', type: 'int32', description: 'Tasks (threads included)' },
] as const;

export const sysinfo = definePlugin({
  name: 'sysinfo',
  description: 'Shows uptime, load and memory totals of the guest (sysinfo(2))',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const s = await ctx.sys.sysinfo();
    return [
      {
        UPTIME: s.uptime,
        'LOAD 1': s.loads[0],
        'LOAD 5': s.loads[1],
        'LOAD 15': s.loads[2],
        'TOTAL RAM': s.totalram,
        'FREE RAM': s.freeram,
        SHARED: s.sharedram,
        BUFFERS: s.bufferram,
        'TOTAL SWAP': s.totalswap,
        'FREE SWAP': s.freeswap,
        PROCESSES: s.procs,
      },
    ];
  },
});
