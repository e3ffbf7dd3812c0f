/**
 * banner: the identity of the guest kernel (Volatility's banners plugin): uname(2) and
 * the /proc/version line, which adds the compiler and build host to the version string.
 */
import { definePlugin, unreadable, type RowValue } from '../sdk/index.js';

const columns = [
  { name: 'SYSNAME', type: 'utf8', description: 'Kernel name (uname -s)' },
  { name: 'NODENAME', type: 'utf8', description: 'Host name (uname -n)' },
  { name: 'RELEASE', type: 'utf8', description: 'Kernel release (uname -r)' },
  { name: 'VERSION', type: 'utf8', description: 'Kernel build version (uname -v)' },
  { name: 'MACHINE', type: 'utf8', description: 'Hardware name (uname -m)' },
  { name: 'DOMAINNAME', type: 'utf8', description: 'NIS domain name' },
  { name: 'BANNER', type: 'utf8', description: 'The /proc/version line' },
] as const;

export const banner = definePlugin({
  name: 'banner',
  description: 'Shows the kernel identity of the guest (uname and /proc/version)',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const fail = (what: string, e: unknown) => {
      const msg = `${what}: ${(e as Error).message}`;
      ctx.warn(msg);
      return unreadable(msg);
    };
    let uts: Record<(typeof columns)[number]['name'], RowValue>;
    try {
      const u = await ctx.sys.uname();
      uts = {
        SYSNAME: u.sysname,
        NODENAME: u.nodename,
        RELEASE: u.release,
        VERSION: u.version,
        MACHINE: u.machine,
        DOMAINNAME: u.domainname,
        BANNER: null,
      };
    } catch (e) {
      const cell = fail('uname', e);
      uts = {
        SYSNAME: cell,
        NODENAME: cell,
        RELEASE: cell,
        VERSION: cell,
        MACHINE: cell,
        DOMAINNAME: cell,
        BANNER: null,
      };
    }
    try {
      uts.BANNER = (await ctx.sys.readTextFile('/proc/version', { chunkSize: 1024 })).replace(/\n$/, '');
    } catch (e) {
      uts.BANNER = fail('/proc/version', e);
    }
    return [uts];
  },
});
