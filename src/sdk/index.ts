/** The public plugin SDK: everything a built-in or third-party plugin imports. */
export {
  apiVersion,
  definePlugin,
  resolveOptions,
  createPluginContext,
  runPlugin,
  rowCells,
  TREE_DEPTH,
  PID_OPTION,
  PluginDefinitionError,
  PluginOptionError,
  PluginApiVersionError,
  checkApiVersion,
  type OptionType,
  type OptionSpec,
  type OptionSpecs,
  type OptionValue,
  type ParsedOptions,
  type Row,
  type PluginContext,
  type FrozenView,
  type PluginSpec,
  type PluginDefinition,
  type CreateContextOptions,
  type RunPluginOptions,
  type PluginRun,
  type PluginRunner,
} from './plugin.js';
export {
  SyscallApi,
  type FileReadRequest,
  type ReadFilesOptions,
  type FileReadResult,
  type DirEntry,
  type DirListResult,
  type ListDirOptions,
  type ReadlinkResult,
  type StatxResult,
  type StatxOptions,
  type SyscallApiOptions,
  type SyscallStats,
} from './syscall-api.js';
export {
  BatchBuilder,
  CallRef,
  inBytes,
  outBuffer,
  inOutBuffer,
  cPath,
  retErrno,
  type SyscallResult,
  type ArgSpec,
  type FdArg,
  type PathArg,
  type InArg,
  type OutArg,
} from './batch.js';
// Typed errors of redirected calls.
export { SyscallError, BatchProtocolError, LimitExceededError, isVanished } from './errors.js';
// The read-only syscall policy every plugin runs under.
export {
  PolicyExecutor,
  PolicyViolationError,
  READ_ONLY_SYSCALLS,
  READ_ONLY_SYSLOG_ACTIONS,
  SOCK_DIAG_SYSCALLS,
  BPF_READ_ONLY_CMDS,
  WRITE_OPEN_FLAGS,
  O_TMPFILE_BIT,
  checkCall,
  assertWriteAllowed,
  needsWrite,
  describeNeeds,
  describeOpenFlags,
  type PluginNeeds,
  type PolicyOptions,
} from './policy.js';
export { ProcFs, PROC_FILE_CHUNK, type ProcHints, type TaskId } from './procfs.js';
// Reading processes and their open files, as the built-in process and file plugins do.
export {
  PROCESS_COLUMNS,
  NAMESPACE_COLUMNS,
  PROCESS_NS_COLUMNS,
  readProcesses,
  processRecordFromFiles,
  tasksPerBatch,
  sliceBounds,
  PIPELINE_SLICES,
  MIN_SLICE_TASKS,
  processForest,
  type ProcessRow,
  type ProcessRecord,
  type ReadProcessesOptions,
  type NamespaceCells,
} from './processes.js';
// Containers as the cgroup tree names them, and the --container filter.
export {
  CONTAINER_OPTION,
  containerOf,
  containerLabel,
  containerMatches,
  processCgroup,
  pidsInContainers,
  selectPids,
  type ContainerRef,
  type ContainerRuntime,
  type ProcessCgroup,
} from './containers.js';
export { readProcessFds, type OpenFd, type ProcessFds, type ReadFdsOptions } from './fds.js';
export * from './limits.js';
// Processes' memory through /proc/PID/mem (pread64 at the virtual address), small reads and bounded scans.
export {
  readProcessMaps,
  readMemory,
  scanMemory,
  describeScanGaps,
  scanTargets,
  maxScanBytes,
  hexBytes,
  MAX_MATCHES_OPTION,
  isReadableMapping,
  isAnonymousMapping,
  MAX_SCAN_OPTION,
  DEFAULT_MAX_SCAN_MIB,
  DEFAULT_SCAN_LOOKAHEAD,
  SCAN_READ_SIZE,
  type MapEntry,
  type ProcessMaps,
  type MemoryRequest,
  type MemoryRead,
  type ScanTarget,
  type ScanChunk,
  type ScanOptions,
  type ScanSummary,
  scanForMatches,
  type MatchScanOptions,
} from './process-memory.js';
export { readKallsyms, type ReadKallsymsOptions } from './kallsyms.js';
export { unlinkedPath, DELETED_SUFFIX, type UnlinkedPath } from './unlinked.js';
// Guest text as exact bytes: the one representation of every guest-controlled string.
export { bytesToText, textToBytes, stringToText, BYTE_TEXT_ENCODING } from '../util/byte-text.js';
export type { Call, CallArg, CallResult, SyscallExecutor } from './syscall-types.js';
export {
  UNREADABLE,
  NOT_AVAILABLE,
  unreadable,
  notAvailable,
  AbsentValue,
  type ColumnSpec,
  type ColumnType,
  type RowValue,
} from '../output/columns.js';
export * as flags from '../abi/linux/flags.js';
export * as proc from '../abi/linux/proc/index.js';
export { errnoName, errnoMessage } from '../abi/linux/errno.js';
export { sysno, sysnoOf, syscallName, type SyscallName } from '../abi/linux/syscalls.js';
export {
  decodeStatx,
  decodeUtsname,
  decodeSysinfo,
  decodeDirents64,
  StructDecodeError,
  type Statx,
  type Utsname,
  type Sysinfo,
  type Dirent64,
} from '../abi/linux/structs.js';
// The sock_diag netlink dump: sockets by a kernel path apart from /proc/net.
export {
  sockDiagDump,
  SOCK_DIAG_RECV_BUFFER,
  SOCK_DIAG_RECVS,
  type SockDiagQuery,
  type SockDiagResult,
} from './sock-diag.js';
export * as sockDiag from '../abi/linux/sock-diag.js';
// The hypervisor's view (host-side reads of guest kernel memory) for cross-view checks.
export type { HypervisorView, KernelMemory, KernelMapping } from './hypervisor.js';
