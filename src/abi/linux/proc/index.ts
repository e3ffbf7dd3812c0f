export { ProcParseError, type ProcInput } from './common.js';
export { parsePidStat, type PidStat } from './pid-stat.js';
export { parsePidStatus, type PidStatus, type IdSet } from './pid-status.js';
export { parseCmdline, parseEnviron, parseNulList, type EnvVar } from './nul-list.js';
export { parseProcStat, parseUptime, type ProcStat, type ProcUptime } from './system.js';
export { parseModules, type ProcModule, type ParsedLines } from './modules.js';
export { parseMountInfo, unescapeMountField, type MountInfo } from './mountinfo.js';
