/**
 * pscallstack: the kernel call stack of every task (Volatility's linux.pscallstack),
 * from /proc/PID/task/TID/stack (fs/proc/base.c proc_pid_stack: the kernel unwinds the
 * sleeping task's stack itself and prints `[<0>] symbol+off/size [module]`). Reading it
 * needs CAP_SYS_ADMIN (the shadow runs as root) and CONFIG_STACKTRACE; a kernel that
 * hides it gives one row per task with Name UNREADABLE and the reason, and a warning.
 *
 * Volatility scans the raw stack for values kallsyms can name; the guest kernel's
 * unwinder gives the real frames only. Value (the return address) is the symbol's address
 * in /proc/kallsyms plus the offset: N/A for a name several symbols share or when
 * kallsyms addresses are hidden. Address (where on the stack the value sits) is not
 * exposed by /proc: N/A. A running task (state R) has no stable stack: the kernel prints
 * none.
 *
 * Cost: 1 batch for the /proc listing (none with --pid), 1 for the task directories, 1
 * (+1 follow-up) for every stack and comm file, and /proc/kallsyms (1 batch per 3 MiB: 2
 * on the lab guest): 5 batches (4 with --pid), 6 × tasks + ~1550 calls.
 */
import { KallsymsIndex, parseKallsyms, parseStack } from '../abi/linux/proc/kallsyms.js';
import { definePlugin, isVanished, notAvailable, PID_OPTION, unreadable, type Row } from '../sdk/index.js';

const columns = [
  { name: 'TID', type: 'int32', description: 'Thread id' },
  { name: 'Comm', type: 'utf8', description: 'Task name (/proc/PID/task/TID/comm)' },
  { name: 'Position', type: 'int32', description: 'Frame number, 0 innermost' },
  { name: 'Address', type: 'hex64', description: 'Stack slot of the frame: N/A (not exposed by /proc)' },
  { name: 'Value', type: 'hex64', description: 'Return address: kallsyms address of Name + Offset' },
  { name: 'Name', type: 'utf8', description: 'Function the frame is in' },
  { name: 'Type', type: 'utf8', description: 'kallsyms type letter of Name (t/T: text)' },
  { name: 'Module', type: 'utf8', description: 'Module of the function (N/A: the kernel image)' },
  { name: 'PID', type: 'int32', description: 'Process id (thread-group id)' },
  { name: 'Offset', type: 'hex64', description: 'Offset of the return address into the function' },
  { name: 'Frame', type: 'utf8', description: 'The line as the kernel printed it' },
] as const;

export const pscallstack = definePlugin({
  name: 'pscallstack',
  volatilityName: 'linux.pscallstack',
  description: 'Lists the kernel call stack of every task, symbolised by the guest kernel',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION },
  async run(ctx) {
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const tids = await ctx.proc.listTids(pids);
    const tasks: { pid: number; tid: number }[] = [];
    for (const pid of pids) {
      const t = tids.get(pid);
      if (Array.isArray(t)) for (const tid of t) tasks.push({ pid, tid });
      else if (t && !isVanished(t)) ctx.warn(`pid ${pid}: ${t.message}`);
    }
    const paths = tasks.flatMap((t) => [
      { path: `/proc/${t.pid}/task/${t.tid}/stack`, chunkSize: 2048 },
      { path: `/proc/${t.pid}/task/${t.tid}/comm`, chunkSize: 64 },
    ]);
    const files = await ctx.sys.readFiles(paths);
    let index: KallsymsIndex | undefined;
    try {
      index = new KallsymsIndex(parseKallsyms(await ctx.sys.readToEnd('/proc/kallsyms')).symbols);
      if (!index.addressesVisible) ctx.warn('/proc/kallsyms addresses hidden: Value is N/A');
    } catch (e) {
      ctx.warn(`/proc/kallsyms: ${(e as Error).message}: Value is N/A`);
    }
    const rows: Row<typeof columns>[] = [];
    let hidden = 0;
    tasks.forEach((t, i) => {
      const stack = files[2 * i];
      const commFile = files[2 * i + 1];
      if (isVanished(stack.error) || isVanished(commFile.error)) return;
      const comm = commFile.data
        ? new TextDecoder().decode(commFile.data).replace(/\n$/, '')
        : unreadable(commFile.error?.message ?? 'comm');
      const base = { TID: t.tid, Comm: comm, PID: t.pid };
      if (stack.error) {
        hidden++;
        const why = unreadable(`kernel hides the stack: ${stack.error.message}`);
        rows.push({
          ...base,
          Position: why,
          Address: why,
          Value: why,
          Name: why,
          Type: why,
          Module: why,
          Offset: why,
          Frame: why,
        });
        return;
      }
      const { frames } = parseStack(stack.data!);
      frames.forEach((f, pos) => {
        const sym = f.symbol !== undefined ? index?.lookup(f.symbol, f.module) : undefined;
        const value =
          f.printed !== 0n
            ? f.printed
            : sym && sym.address !== 0n && f.offset !== undefined
              ? sym.address + f.offset
              : notAvailable(
                  f.symbol === undefined ? 'unnamed frame' : 'symbol ambiguous or hidden in kallsyms',
                );
        rows.push({
          ...base,
          Position: pos,
          Address: notAvailable('stack slot not exposed by /proc'),
          Value: value,
          Name: f.symbol ?? unreadable(`unparsed frame: ${f.text.slice(0, 60)}`),
          Type: sym?.type ?? notAvailable('not in kallsyms'),
          Module: f.module ?? notAvailable('kernel image'),
          Offset: f.offset ?? notAvailable('no offset printed'),
          Frame: f.text,
        });
      });
    });
    if (hidden > 0)
      ctx.warn(`kernel stacks of ${hidden} task(s) not readable (CAP_SYS_ADMIN, CONFIG_STACKTRACE)`);
    return rows;
  },
});
