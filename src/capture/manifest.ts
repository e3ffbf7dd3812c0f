/**
 * The capture manifest: standard MessagePack (msgpackr with useRecords:false), so any
 * language's MessagePack library reads it. 64-bit register values are stored as
 * 0x-prefixed hex strings (no BigInt/int64 ambiguity between libraries).
 */
import { Packr } from 'msgpackr';
import { GPR_NAMES } from '../qemu/x86-regs.js';

export const CAPTURE_FORMAT = 'vmi-capture';
/**
 * 2: ram.raw may carry the `sha256-sparse` digest. 3: the machine's device model
 * (machine.devices/pci/disks/firmware, `disks` mode) and firmware boots (no kernel part).
 * Versions 1 and 2 are still read and replayed.
 */
export const CAPTURE_VERSION = 3;
/** Manifest versions this vmi reads. */
export const READABLE_VERSIONS: readonly number[] = [1, 2, 3];
export const MANIFEST = 'manifest.msgpack';
/** sha256 of manifest.msgpack, so a flipped byte in the manifest is caught too. */
export const MANIFEST_SUM = 'manifest.sha256';
export const RAM_PART = 'ram.raw';
/** The RAM part of a capture made with --compress: ram.raw, gzip-compressed. */
export const RAM_GZ_PART = 'ram.raw.gz';
export const DEVSTATE_PART = 'devstate.bin';

export type RamSource = 'shared-file' | 'process-memory' | 'migration-stream';
export const RAM_SOURCES: readonly RamSource[] = ['shared-file', 'process-memory', 'migration-stream'];

export class CaptureError extends Error {
  override name = 'CaptureError';
}

export type PartDigest = 'sha256-sparse';

export interface PartInfo {
  /** Size and sha256 of the file as stored (for a compressed part: the compressed file). */
  size: number;
  sha256: string;
  /**
   * How `sha256` was computed: absent = SHA-256 of the file's bytes; `sha256-sparse`
   * (ram.raw only) = SHA-256 over each 1 MiB chunk that is not all zeros, each preceded
   * by its file offset as a little-endian u64 (see artifact.ts). A mostly untouched
   * 8 GiB guest is then hashed in about the time its touched memory takes.
   */
  digest?: PartDigest;
  /** Only on ram.raw.gz. */
  compression?: 'gzip';
  /** Size once decompressed (only with `compression`). */
  uncompressedSize?: number;
}

/** Which RAM part a capture holds: ram.raw, or ram.raw.gz (gzip). */
export interface RamPart {
  name: string;
  info: PartInfo;
  compressed: boolean;
  /** Size of the raw RAM (decompressed). */
  rawSize: number;
}

export function ramPartOf(m: CaptureManifest): RamPart {
  const gz = m.parts[RAM_GZ_PART];
  if (gz) return { name: RAM_GZ_PART, info: gz, compressed: true, rawSize: gz.uncompressedSize ?? 0 };
  const raw = m.parts[RAM_PART];
  return { name: RAM_PART, info: raw, compressed: false, rawSize: raw.size };
}

export interface VcpuRecord {
  index: number;
  rax: string;
  rbx: string;
  rcx: string;
  rdx: string;
  rsi: string;
  rdi: string;
  rbp: string;
  rsp: string;
  r8: string;
  r9: string;
  r10: string;
  r11: string;
  r12: string;
  r13: string;
  r14: string;
  r15: string;
  rip: string;
  eflags: string;
  cs: number;
  ss: number;
  ds: number;
  es: number;
  fs: number;
  gs: number;
  fsBase: string;
  gsBase: string;
  kernelGsBase: string;
  cr0: string;
  cr2: string;
  cr3: string;
  cr4: string;
  efer: string;
  star: string;
  lstar: string;
  cstar: string;
  fmask: string;
}

/** One device made with -device on the captured machine (version 3). */
export interface DeviceRecord {
  /** QEMU type (`virtio-blk-pci`). */
  type: string;
  /** QOM path on the captured machine (`/machine/peripheral/disk0`). */
  qomPath: string;
  /** qdev id on the captured machine ('' for anonymous devices). */
  id: string;
  /** QOM path of its bus (`/machine/q35/pcie.0`). */
  bus: string;
  /** PCI devfn (slot << 3 | function): the replay puts it in the same slot. */
  addr?: number;
  /** Properties as QEMU reported them (device-model.ts DEVICE_PROPS). */
  props: Record<string, string | number | boolean>;
  /** Index into machine.disks of the image behind a disk device. */
  disk?: number;
}

/** One disk image of the captured machine (version 3). */
export interface DiskRecord {
  /** QOM path of the device it backs. */
  device: string;
  /** Absolute path of the live image on the capturing host (its top image). */
  path: string;
  format: 'raw' | 'qcow2';
  /** Guest-visible size in bytes. */
  virtualSize: number;
  /** The device had it read-only. */
  readOnly: boolean;
  /** With --with-disks: the point-in-time copy (qcow2) inside the capture. */
  copyPart?: string;
}

/** One PCI function of the captured machine, as query-pci reported it (version 3). */
export interface PciRecord {
  bus: number;
  slot: number;
  function: number;
  vendor: number;
  device: number;
  classCode: number;
  desc: string;
  qdevId: string;
}

/** The firmware of the captured machine (version 3). */
export interface FirmwareRecord {
  /** `linux`: -kernel/-initrd (boot files in the capture); `firmware`: booted by the firmware from a disk. */
  boot: 'linux' | 'firmware';
  /** -bios as QEMU reports it (`bios-256k.bin`: QEMU's default SeaBIOS). */
  bios: string;
  /** pflash drives (OVMF code = unit 0, read-only; variable store = unit 1). */
  pflash: { unit: number; path: string; format: 'raw' | 'qcow2'; readOnly: boolean }[];
}

export interface MachineConfig {
  /** Resolved machine type (e.g. pc-q35-7.2). */
  machineType: string;
  cpuModel: string;
  cpus: number;
  memMiB: number;
  append: string;
  /**
   * Part names of the boot files (content-addressed copies inside the capture); absent on
   * a firmware-booted guest (version 3).
   */
  kernelPart?: string;
  initrdPart?: string;
  /** Version 3: the device model, so a replay rebuilds the same machine. */
  devices?: DeviceRecord[];
  pci?: PciRecord[];
  disks?: DiskRecord[];
  firmware?: FirmwareRecord;
}

export interface CaptureManifest {
  format: typeof CAPTURE_FORMAT;
  version: number;
  id: string;
  createdAt: string;
  tool: { name: string; version: string };
  /** shared-ram: devstate.bin carries no page of ram.raw's block (the stream of an
   *  x-ignore-shared migration: device+vCPU state, firmware and ROM blocks) and ram.raw the RAM;
   *  full-stream: devstate.bin is a complete migration stream and ram.raw was rebuilt from it. */
  mode: 'shared-ram' | 'full-stream';
  /**
   * Where ram.raw came from (absent in captures made before it was recorded): `shared-file`
   * the guest's shared RAM file, `process-memory` QEMU's own memory (/proc/PID/mem) while
   * the guest was paused, `migration-stream` the full migration stream.
   */
  ramSource?: RamSource;
  /** Why the migration stream was used for a guest without a shared RAM file (one line). */
  ramSourceNote?: string;
  guest: { name: string; uuid?: string; kernelRelease?: string; banner?: string };
  qemu: { version: string; package?: string };
  machine: MachineConfig;
  /**
   * Version 3: what replays read as the disks. `point-in-time`: the copies taken at the
   * pause (--with-disks, parts disks/*); `live`: the live images by path (they may have
   * changed since); absent on a diskless machine or an older capture.
   */
  disks?: 'point-in-time' | 'live';
  /** Guest-physical ranges of ram.raw (q35 below 2 GiB: one range at 0). */
  ram: { gpa: number; size: number; offset: number }[];
  vcpus: VcpuRecord[];
  /** Milliseconds; diskCopyMs: the backup jobs after the guest resumed (--with-disks). */
  timing: { pauseMs: number; migrateMs: number; copyMs: number; totalMs?: number; diskCopyMs?: number };
  parts: Record<string, PartInfo>;
}

const packr = new Packr({ useRecords: false });

export function encodeManifest(m: CaptureManifest): Buffer {
  return packr.pack(m);
}

const HEX = /^0x[0-9a-f]+$/;
/** The vCPU registers a manifest must record as hex strings (decodeManifest checks each). */
export const VCPU_HEX_REGS = [
  ...GPR_NAMES,
  'rip',
  'eflags',
  'fsBase',
  'gsBase',
  'kernelGsBase',
  'cr0',
  'cr2',
  'cr3',
  'cr4',
  'efer',
  'lstar',
] as const;

/** Decodes and checks the manifest's shape; throws CaptureError naming the manifest. */
export function decodeManifest(buf: Buffer): CaptureManifest {
  let m: unknown;
  try {
    m = packr.unpack(buf);
  } catch (e) {
    throw new CaptureError(`${MANIFEST}: not valid MessagePack (${(e as Error).message})`);
  }
  const bad = (why: string): never => {
    throw new CaptureError(`${MANIFEST}: ${why}`);
  };
  if (typeof m !== 'object' || m === null) return bad('not a map');
  const r = m as Partial<CaptureManifest>;
  if (r.format !== CAPTURE_FORMAT) bad(`not a vmi capture (format ${JSON.stringify(r.format)})`);
  if (!READABLE_VERSIONS.includes(r.version as number))
    bad(`unsupported format version ${String(r.version)}`);
  if (typeof r.id !== 'string' || typeof r.createdAt !== 'string') bad('missing id or creation time');
  if (r.mode !== 'shared-ram' && r.mode !== 'full-stream') bad(`unknown mode ${String(r.mode)}`);
  if (r.ramSource !== undefined && !RAM_SOURCES.includes(r.ramSource))
    bad(`unknown RAM source ${String(r.ramSource)}`);
  if (r.ramSourceNote !== undefined && (typeof r.ramSourceNote !== 'string' || r.ramSourceNote.length > 1000))
    bad('bad RAM source note');
  if (typeof r.parts !== 'object' || r.parts === null) bad('missing part list');
  for (const [name, p] of Object.entries(r.parts!)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(name) || name.includes('..')) bad(`bad part name ${name}`);
    if (!Number.isSafeInteger(p?.size) || p.size < 0 || !/^[0-9a-f]{64}$/.test(String(p?.sha256)))
      bad(`bad entry for part ${name}`);
    if (p.digest !== undefined && (name !== RAM_PART || p.digest !== 'sha256-sparse' || r.version! < 2))
      bad(`bad entry for part ${name} (digest)`);
    if (name === RAM_GZ_PART) {
      if (p.compression !== 'gzip' || !Number.isSafeInteger(p.uncompressedSize) || p.uncompressedSize! < 0)
        bad(`bad entry for part ${name} (compression)`);
    } else if (p.compression !== undefined || p.uncompressedSize !== undefined) {
      bad(`bad entry for part ${name} (unexpected compression)`);
    }
  }
  if (r.parts![RAM_PART] && r.parts![RAM_GZ_PART]) bad(`both ${RAM_PART} and ${RAM_GZ_PART} listed`);
  for (const need of [RAM_PART, DEVSTATE_PART])
    if (!r.parts![need] && !(need === RAM_PART && r.parts![RAM_GZ_PART])) bad(`part ${need} not listed`);
  const mc = r.machine;
  if (!mc || typeof mc.machineType !== 'string' || !Number.isInteger(mc.cpus) || !Number.isInteger(mc.memMiB))
    bad('bad machine config');
  const linuxBoot = mc!.kernelPart !== undefined || mc!.initrdPart !== undefined || r.version! < 3;
  if (linuxBoot && (!r.parts![mc!.kernelPart as string] || !r.parts![mc!.initrdPart as string]))
    bad('boot files not listed as parts');
  if (!linuxBoot && mc!.firmware?.boot !== 'firmware') bad('no boot files and no firmware boot');
  if (r.disks !== undefined && r.disks !== 'point-in-time' && r.disks !== 'live')
    bad(`unknown disk mode ${String(r.disks)}`);
  if (!Array.isArray(r.vcpus) || r.vcpus.length === 0) bad('no vCPU registers');
  for (const v of r.vcpus!)
    for (const k of VCPU_HEX_REGS) if (!HEX.test(String(v[k]))) bad(`vCPU ${v.index}: bad ${k}`);
  if (!Array.isArray(r.ram) || r.ram.length === 0) bad('no RAM ranges');
  if (!r.qemu || typeof r.qemu.version !== 'string') bad('no QEMU version');
  return r as CaptureManifest;
}

export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;
