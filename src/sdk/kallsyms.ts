/**
 * /proc/kallsyms read whole through the guest (kernel/kallsyms.c), the one way the plugins
 * that symbolise kernel addresses (check_syscall, check_idt, tracing, modxview) get it:
 * a progress line, the file read to its end, bad lines as warnings.
 */
import { parseKallsyms, type ParsedKallsyms } from '../abi/linux/proc/index.js';
import type { PluginContext } from './plugin.js';

export interface ReadKallsymsOptions {
  /**
   * Throw when the guest shows every address as 0 (kptr_restrict, or a shadow without
   * CAP_SYSLOG): for callers that cannot work with names alone.
   */
  needAddresses?: boolean;
}

/** Reads and parses /proc/kallsyms; its parse errors become the table's warnings. */
export async function readKallsyms(
  ctx: PluginContext,
  opts: ReadKallsymsOptions = {},
): Promise<ParsedKallsyms> {
  ctx.progress('reading /proc/kallsyms');
  const ks = parseKallsyms(await ctx.sys.readToEnd('/proc/kallsyms'));
  for (const e of ks.errors) ctx.warn(e.message);
  if (opts.needAddresses && ks.hidden)
    throw new Error('/proc/kallsyms shows no addresses to the shadow (kptr_restrict or no CAP_SYSLOG)');
  return ks;
}
