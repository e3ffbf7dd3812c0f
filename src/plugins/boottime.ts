/**
 * boottime: when the guest booted (Volatility's linux.boottime), per time namespace.
 * Volatility derives it from the timekeeper's offsets; here the guest kernel answers:
 * CLOCK_REALTIME − CLOCK_BOOTTIME read back to back by clock_gettime (ns precision, the
 * same subtraction the kernel does for /proc/stat's btime, getboottime64), btime of
 * /proc/stat (whole seconds) and /proc/uptime beside it, and the clock source the
 * timekeeper runs on (/sys/devices/system/clocksource/clocksource0).
 *
 * Time namespaces (Linux 5.6+) shift CLOCK_BOOTTIME by the offset in
 * /proc/PID/timens_offsets; each namespace any process lives in gets a row, with its boot
 * time as that namespace's processes see it (the initial namespace's minus its offset).
 *
 * Cost: 1 batch for the /proc listing, 1 for the time namespace links, 1 for the two
 * clock_gettime calls, 1 for the files: 4 batches, ~16 + 4 × processes calls.
 */
import { CLOCK_BOOTTIME, CLOCK_REALTIME } from '../abi/linux/flags.js';
import { parseProcStat, parseUptime } from '../abi/linux/proc/index.js';
import { definePlugin, notAvailable, outBuffer, unreadable, type Row } from '../sdk/index.js';

const columns = [
  { name: 'TIME NS', type: 'int64', description: 'Time namespace id (inode of /proc/PID/ns/time)' },
  {
    name: 'Boot Time',
    type: 'timestamp_ms',
    description: 'CLOCK_REALTIME − CLOCK_BOOTTIME, minus the namespace’s boottime offset',
  },
  {
    name: 'BTIME',
    type: 'timestamp_ms',
    description: 'btime of /proc/stat (initial namespace, whole seconds)',
  },
  {
    name: 'Uptime',
    type: 'float64',
    description: 'Seconds since boot in this namespace (/proc/uptime + offset)',
  },
  {
    name: 'Boottime Offset',
    type: 'float64',
    description: 'boottime line of /proc/PID/timens_offsets, seconds (0 in the initial namespace)',
  },
  { name: 'Processes', type: 'int32', description: 'Processes in this time namespace' },
  { name: 'Clocksource', type: 'utf8', description: 'current_clocksource of clocksource0' },
  { name: 'Available Clocksources', type: 'utf8', description: 'available_clocksource of clocksource0' },
] as const;

const TIMESPEC = 16;

function timespecNs(data: Uint8Array): bigint | undefined {
  if (data.length < TIMESPEC) return undefined;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return dv.getBigInt64(0, true) * 1_000_000_000n + dv.getBigInt64(8, true);
}

/** The boottime offset (ns) of a timens_offsets file (`boottime <sec> <nsec>`), 0 when absent. */
export function boottimeOffsetNs(text: string): bigint {
  const m = /^boottime\s+(-?\d{1,19})\s+(\d{1,9})\s*$/m.exec(text);
  return m ? BigInt(m[1]) * 1_000_000_000n + BigInt(m[2]) : 0n;
}

export const boottime = definePlugin({
  name: 'boottime',
  volatilityName: 'linux.boottime',
  description: 'Shows when the guest booted, per time namespace, with the clock source',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const pids = await ctx.proc.listPids();
    const links = await ctx.sys.readlinks(pids.map((p) => `/proc/${p}/ns/time`));
    const byNs = new Map<string, number[]>();
    links.forEach((l, i) => {
      const m = l.target ? /^time:\[(\d+)\]$/.exec(l.target) : null;
      if (!m) return;
      const list = byNs.get(m[1]);
      if (list) list.push(pids[i]);
      else byNs.set(m[1], [pids[i]]);
    });
    const nss = [...byNs.keys()].sort();

    const b = ctx.sys.batch();
    const real = b.call('clock_gettime', [CLOCK_REALTIME, outBuffer(TIMESPEC, 'all')]);
    const boot = b.call('clock_gettime', [CLOCK_BOOTTIME, outBuffer(TIMESPEC, 'all')]);
    await b.submit();
    const files = await ctx.sys.readFiles([
      { path: '/proc/stat', chunkSize: 8192 },
      { path: '/proc/uptime', chunkSize: 128 },
      { path: '/sys/devices/system/clocksource/clocksource0/current_clocksource', chunkSize: 128 },
      { path: '/sys/devices/system/clocksource/clocksource0/available_clocksource', chunkSize: 512 },
      ...nss.map((ns) => ({ path: `/proc/${byNs.get(ns)![0]}/timens_offsets`, chunkSize: 256 })),
    ]);
    const text = (i: number) => (files[i].data ? new TextDecoder().decode(files[i].data).trim() : undefined);
    const realNs = real.ok ? timespecNs(real.result().data) : undefined;
    const bootNs = boot.ok ? timespecNs(boot.result().data) : undefined;
    let btime: number | undefined;
    try {
      if (files[0].data) btime = parseProcStat(files[0].data).btime * 1000;
    } catch (e) {
      ctx.warn((e as Error).message);
    }
    let uptime: number | undefined;
    try {
      if (files[1].data) uptime = parseUptime(files[1].data).uptime;
    } catch (e) {
      ctx.warn((e as Error).message);
    }
    const cs = text(2) ?? notAvailable('no clocksource0 in sysfs');
    const avail = text(3) ?? notAvailable('no clocksource0 in sysfs');
    const rows: Row<typeof columns>[] = [];
    // No readable ns/time link (a kernel before 5.6): one row for the only namespace.
    const list = nss.length > 0 ? nss : [undefined];
    list.forEach((ns, i) => {
      const offText = ns === undefined ? undefined : text(4 + i);
      const off = offText === undefined ? 0n : boottimeOffsetNs(offText);
      const bootMs =
        realNs !== undefined && bootNs !== undefined
          ? Number((realNs - bootNs - off) / 1_000_000n)
          : unreadable('clock_gettime failed');
      rows.push({
        'TIME NS': ns === undefined ? notAvailable('kernel without time namespaces') : Number(ns),
        'Boot Time': bootMs,
        BTIME: btime ?? unreadable('/proc/stat unreadable'),
        Uptime: uptime === undefined ? unreadable('/proc/uptime unreadable') : uptime + Number(off) / 1e9,
        'Boottime Offset': Number(off) / 1e9,
        Processes: ns === undefined ? pids.length : byNs.get(ns)!.length,
        Clocksource: cs,
        'Available Clocksources': avail,
      });
    });
    return rows;
  },
});
