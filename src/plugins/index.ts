/** The registry of built-in plugins. */
import type { PluginDefinition } from '../sdk/index.js';
import { banner } from './banner.js';
import { checkSyscall } from './check-syscall.js';
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
  modxview,
  checkSyscall,
];
