/** The registry of built-in plugins. */
import type { PluginDefinition } from '../sdk/index.js';
import { banner } from './banner.js';
import { ebpf } from './ebpf.js';
import { netfilter } from './netfilter.js';
import { boottime } from './boottime.js';
import { capabilities } from './capabilities.js';
import { iomem } from './iomem.js';
import { kallsyms } from './kallsyms.js';
import { kthreads } from './kthreads.js';
import { pscallstack } from './pscallstack.js';
import { ptrace } from './ptrace.js';
import { checkIdt } from './check-idt.js';
import { checkSyscall } from './check-syscall.js';
import { tracing } from './tracing.js';
import { envars } from './envars.js';
import { ifconfig } from './ifconfig.js';
import { kmsg } from './kmsg.js';
import { lsmod } from './lsmod.js';
import { lsof } from './lsof.js';
import { maps } from './maps.js';
import { modxview } from './modxview.js';
import { mountinfo } from './mountinfo.js';
import { psaux } from './psaux.js';
import { pslist } from './pslist.js';
import { pstree } from './pstree.js';
import { psxview } from './psxview.js';
import { sockstat } from './sockstat.js';
import { sockxview } from './sockxview.js';
import { sysinfo } from './sysinfo.js';
// Process memory through /proc/PID/mem (issue 17).
import { bash } from './bash.js';
import { elfs } from './elfs.js';
import { library_list } from './library_list.js';
import { malfind } from './malfind.js';
import { vmaregexscan } from './vmaregexscan.js';
import { vmayarascan } from './vmayarascan.js';

export const builtinPlugins: readonly PluginDefinition[] = [
  pslist,
  pstree,
  psaux,
  envars,
  lsmod,
  mountinfo,
  banner,
  sysinfo,
  sockstat,
  lsof,
  maps,
  kmsg,
  ifconfig,
  psxview,
  sockxview,
  // Issue 17, processes and kernel (p17a).
  capabilities,
  ptrace,
  pscallstack,
  kthreads,
  boottime,
  kallsyms,
  iomem,
  ebpf,
  netfilter,
  // Process memory (issue 17).
  bash,
  elfs,
  library_list,
  malfind,
  vmaregexscan,
  vmayarascan,
  modxview,
  checkSyscall,
  checkIdt,
  tracing,
];
