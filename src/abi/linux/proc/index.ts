export { ProcParseError, type ProcInput } from './common.js';
export { parsePidStat, type PidStat } from './pid-stat.js';
export { parsePidStatus, type PidStatus, type IdSet } from './pid-status.js';
export { parseCmdline, parseEnviron, parseNulList, type EnvVar } from './nul-list.js';
export { parseProcStat, parseUptime, type ProcStat, type ProcUptime } from './system.js';
export { parseModules, type ProcModule, type ParsedLines } from './modules.js';
export { parseMountInfo, unescapeMountField, type MountInfo } from './mountinfo.js';
export {
  parseInetSockets,
  parseUnixSockets,
  parseNetlinkSockets,
  TCP_STATES,
  TCP_CLOSE,
  SO_ACCEPTCON,
  type InetSocket,
  type UnixSocket,
  type NetlinkSocket,
} from './net.js';
export {
  parseNetDev,
  parseIfInet6,
  parseIpv4Routes,
  parseFibTrie,
  type NetDevStats,
  type Inet6Addr,
  type Ipv4Route,
  type FibEntry,
} from './netdev.js';
export { parseMaps, type MapEntry } from './maps.js';
export { parsePidCgroup, type PidCgroup, type CgroupLine } from './cgroup.js';
export {
  parseKallsyms,
  parseStack,
  KallsymsIndex,
  KALLSYMS_TYPES,
  type KallsymsEntry,
  type StackFrame,
  isPseudoModule,
  SymbolIndex,
  formatSymbol,
  type KernelSymbol,
  type ParsedKallsyms,
} from './kallsyms.js';
export { parseIomem, type IoResource } from './iomem.js';
export {
  parseFtraceFunctions,
  parseKprobeList,
  parseKprobeEvents,
  parsePrintedSymbol,
  type FtraceRecord,
  type FtraceCallback,
  type KprobeRecord,
  type KprobeEvent,
  type PrintedSymbol,
} from './tracing.js';
