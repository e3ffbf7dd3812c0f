/**
 * What a running QEMU says about its machine through QMP: version, machine type, boot
 * files and command line, CPUs, RAM size and backend, name, UUID, migration capabilities
 * and run state. Read-only queries; what a caller requires of them is its own business.
 */
import type { QmpClient } from './qmp.js';

export interface QemuVersion {
  qemu: { major: number; minor: number; micro: number };
  package?: string;
}

export interface MachineInfo {
  version: QemuVersion;
  /** Machine type without the `-machine` suffix (e.g. `pc-q35-7.2`). */
  machineType: string;
  /** -kernel, -initrd, -append ('' when not given). */
  kernel: string;
  initrd: string;
  append: string;
  /** Number of vCPUs. */
  cpus: number;
  /** CPU model without the `-x86_64-cpu` suffix. */
  cpuModel: string;
  /** Base RAM in bytes. */
  memBytes: number;
  /** The file of a shared memory backend of exactly the RAM size, if QEMU has one. */
  ramFile?: string;
  /** QEMU's -name, if any. */
  name?: string;
  uuid: string;
}

/** Reads the machine description (the guest keeps running). */
export async function queryMachineInfo(qmp: QmpClient): Promise<MachineInfo> {
  const qom = <T>(path: string, property: string): Promise<T> =>
    qmp.execute<T>('qom-get', { path, property });
  const version = await qmp.execute<QemuVersion>('query-version');
  const machineType = (await qom<string>('/machine', 'type')).replace(/-machine$/, '');
  const kernel = await qom<string>('/machine', 'kernel');
  const initrd = await qom<string>('/machine', 'initrd');
  const append = await qom<string>('/machine', 'append');
  const cpusInfo = await qmp.execute<{ 'qom-path': string; 'cpu-index': number }[]>('query-cpus-fast');
  const cpuModel = (await qom<string>(cpusInfo[0]['qom-path'], 'type')).replace(/-x86_64-cpu$/, '');
  const memBytes = (await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary'))['base-memory'];
  const memdevs = await qmp.execute<{ id: string; share: boolean; size: number }[]>('query-memdev');
  const shared = memdevs.find((m) => m.share && m.size === memBytes);
  const ramFile = shared
    ? await qom<string>(`/objects/${shared.id}`, 'mem-path').catch(() => undefined)
    : undefined;
  const name = (await qmp.execute<{ name?: string }>('query-name')).name;
  const uuid = (await qmp.execute<{ UUID: string }>('query-uuid')).UUID;
  return {
    version,
    machineType,
    kernel,
    initrd,
    append,
    cpus: cpusInfo.length,
    cpuModel,
    memBytes,
    ...(ramFile ? { ramFile } : {}),
    ...(name !== undefined ? { name } : {}),
    uuid,
  };
}

/** The state of one migration capability (e.g. x-ignore-shared), or undefined when QEMU lacks it. */
export async function queryMigrateCapability(
  qmp: QmpClient,
  capability: string,
): Promise<{ capability: string; state: boolean } | undefined> {
  const caps = await qmp.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
  return caps.find((c) => c.capability === capability);
}

/** QEMU's run state (`running`, `paused`, `postmigrate`, ...) and whether the vCPUs run. */
export type RunStatus = { status: string; running: boolean };

export function queryStatus(qmp: QmpClient): Promise<RunStatus> {
  return qmp.execute<RunStatus>('query-status');
}
