/**
 * kmsg: the kernel log (Volatility's linux.kmsg), what `dmesg` prints, read with
 * syslog(SYSLOG_ACTION_READ_ALL) in the guest. One row per record line; a line of a
 * multi-line record carries that record's prefix again, so it is a row of its own.
 * Under kernel.dmesg_restrict the read needs CAP_SYSLOG: a refusal is a warning and an
 * empty table, not a failed run.
 */
import { parseKmsg, SYSLOG_FACILITIES } from '../abi/linux/kmsg.js';
import { definePlugin, notAvailable, SyscallError, unreadable, type Row } from '../sdk/index.js';

const columns = [
  { name: 'LEVEL', type: 'int32', description: 'Log level: 0 (emerg) .. 7 (debug)' },
  { name: 'FACILITY', type: 'utf8', description: 'syslog facility (kern for kernel messages)' },
  {
    name: 'TIMESTAMP',
    type: 'float64',
    description: 'Seconds since boot (N/A when the kernel does not print times)',
  },
  {
    name: 'CALLER',
    type: 'utf8',
    description: 'Task (T<pid>) or CPU (C<n>) that logged, with CONFIG_PRINTK_CALLER',
  },
  { name: 'MESSAGE', type: 'utf8', description: 'The text' },
] as const;

const NO_TIME = notAvailable('printk.time is off');
const NO_CALLER = notAvailable('kernel without CONFIG_PRINTK_CALLER');
const NO_PREFIX = unreadable('line without a <level> prefix');

export const kmsg = definePlugin({
  name: 'kmsg',
  volatilityName: 'linux.kmsg',
  description: 'Lists the kernel log of the guest (dmesg)',
  version: '1.0.0',
  columns,
  async run(ctx) {
    let text: string;
    try {
      // 1 batch (2 when the log buffer is bigger than 256 KiB).
      text = await ctx.sys.syslogRead();
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      ctx.warn(`kernel log: ${e.message}`);
      return [];
    }
    return parseKmsg(text).map((l): Row<typeof columns> => ({
      LEVEL: l.level ?? NO_PREFIX,
      FACILITY: l.facility === undefined ? NO_PREFIX : SYSLOG_FACILITIES[l.facility] || String(l.facility),
      TIMESTAMP: l.timestamp ?? (l.level === undefined ? NO_PREFIX : NO_TIME),
      CALLER: l.caller ?? (l.level === undefined ? NO_PREFIX : NO_CALLER),
      MESSAGE: l.message,
    }));
  },
});
