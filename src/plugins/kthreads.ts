/**
 * kthreads: the kernel threads and the function each one runs (Volatility's
 * linux.kthreads, which reads struct kthread's threadfn). A kernel thread is a task with
 * PF_KTHREAD (0x00200000) in the flags of /proc/PID/stat. Its thread function is the frame
 * that kthread() called, just above `kthread` in /proc/PID/stack (kernel/kthread.c: every
 * kernel thread but kthreadd starts in kthread(), which calls threadfn); Handler Address is
 * that function's address in /proc/kallsyms. A thread whose stack the kernel does not
 * show (running, or CAP_SYS_ADMIN missing) has N/A there; WCHAN (/proc/PID/wchan, where
 * it sleeps) is given beside it. Thread Name is the full name the kernel prints in stat
 * (5.17+: longer than comm's 15 bytes).
 *
 * Cost: 1 batch for the /proc listing, 1 (+1 follow-up) for stat, stack and wchan of
 * every process, /proc/kallsyms (1 batch per 3 MiB: 2 on the lab guest): 4 batches, 9 ×
 * processes + ~1550 calls.
 */
import { KallsymsIndex, parseKallsyms, parseStack } from '../abi/linux/proc/kallsyms.js';
import { definePlugin, isVanished, notAvailable, proc as procParsers, type Row } from '../sdk/index.js';

/** include/linux/sched.h: I am a kernel thread. */
export const PF_KTHREAD = 0x00200000;

const columns = [
  { name: 'TID', type: 'int32', description: 'Thread id (a kernel thread is its own process)' },
  { name: 'Thread Name', type: 'utf8', description: 'Full name (stat comm; kthread full_name on 5.17+)' },
  { name: 'Handler Address', type: 'hex64', description: 'Address of the thread function (kallsyms)' },
  { name: 'Module', type: 'utf8', description: 'Module of the thread function (kernel: the image)' },
  { name: 'Symbol', type: 'utf8', description: 'Thread function: the frame kthread() called' },
  { name: 'PPID', type: 'int32', description: 'Parent (2, kthreadd, for all but kthreadd itself)' },
  { name: 'State', type: 'utf8', description: 'Scheduler state (I idle, S sleeping, R running)' },
  { name: 'WCHAN', type: 'utf8', description: 'Where it sleeps (/proc/PID/wchan)' },
] as const;

/** The thread function from a kernel thread's stack: the frame just inside `kthread`. */
export function threadFunction(stack: string): { symbol: string; module?: string } | undefined {
  const { frames } = parseStack(stack);
  const k = frames.findIndex((f) => f.symbol === 'kthread' && f.module === undefined);
  if (k <= 0) return undefined;
  const f = frames[k - 1];
  return f.symbol === undefined ? undefined : { symbol: f.symbol, module: f.module };
}

export const kthreads = definePlugin({
  name: 'kthreads',
  volatilityName: 'linux.kthreads',
  description: 'Lists the kernel threads with the function each one runs',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const pids = await ctx.proc.listPids();
    const files = await ctx.sys.readFiles(
      pids.flatMap((p) => [
        { path: `/proc/${p}/stat`, chunkSize: 1024 },
        { path: `/proc/${p}/stack`, chunkSize: 2048 },
        { path: `/proc/${p}/wchan`, chunkSize: 128 },
      ]),
    );
    let index: KallsymsIndex | undefined;
    try {
      index = new KallsymsIndex(parseKallsyms(await ctx.sys.readToEnd('/proc/kallsyms')).symbols);
    } catch (e) {
      ctx.warn(`/proc/kallsyms: ${(e as Error).message}: Handler Address is N/A`);
    }
    const rows: Row<typeof columns>[] = [];
    let noStack = 0;
    pids.forEach((pid, i) => {
      const [stat, stack, wchan] = files.slice(3 * i, 3 * i + 3);
      if (stat.error) {
        if (!isVanished(stat.error)) ctx.warn(`${stat.path}: ${stat.error.message}`);
        return;
      }
      let st;
      try {
        st = procParsers.parsePidStat(stat.data!, stat.path);
      } catch (e) {
        ctx.warn((e as Error).message);
        return;
      }
      if ((st.flags & PF_KTHREAD) === 0) return;
      const fn = stack.data ? threadFunction(new TextDecoder().decode(stack.data)) : undefined;
      if (stack.error) noStack++;
      const why = stack.error
        ? `stack not readable: ${stack.error.message}`
        : pid === 2 || st.ppid === 0
          ? 'kthreadd is not started by kthread()'
          : 'no kthread frame on its stack (running?)';
      const sym = fn ? index?.lookup(fn.symbol, fn.module) : undefined;
      const w = wchan.data ? new TextDecoder().decode(wchan.data).trim() : '';
      rows.push({
        TID: pid,
        'Thread Name': st.comm,
        'Handler Address':
          sym && sym.address !== 0n ? sym.address : notAvailable(fn ? 'not (uniquely) in kallsyms' : why),
        Module: fn ? (fn.module ?? 'kernel') : notAvailable(why),
        Symbol: fn ? fn.symbol : notAvailable(why),
        PPID: st.ppid,
        State: st.state,
        WCHAN: w === '' || w === '0' ? notAvailable('not sleeping') : w,
      });
    });
    if (noStack > 0) ctx.warn(`stacks of ${noStack} kernel thread(s) not readable: thread function N/A`);
    return rows;
  },
});
