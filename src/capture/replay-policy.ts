/**
 * What a capture's manifest may ask of a replay. `manifest.sha256` proves the manifest
 * is intact, not who wrote it: a capture from elsewhere is untrusted input, and its
 * machine fields become QEMU arguments and a /dev/shm file. Every field is checked here,
 * against an allowlist or a range, before any file is created or any process started.
 */
import { checkDeviceModel } from './device-policy.js';
import { CaptureError, type CaptureManifest, type RamPart } from './manifest.js';

/** vCPUs a replay may have. */
export const REPLAY_MAX_CPUS = 64;
/** Guest RAM a replay may have, MiB (also bounded by free /dev/shm). */
export const REPLAY_MIN_MEM_MIB = 16;
export const REPLAY_MAX_MEM_MIB = 64 << 10;
/** x86's COMMAND_LINE_SIZE. */
export const REPLAY_MAX_CMDLINE = 2048;

/** A CPU model name with optional `,+flag`, `,-flag` or `,key=value` parts. */
const CPU_MODEL_RE =
  /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(,[+-]?[A-Za-z0-9_.-]{1,64}(=[A-Za-z0-9_.-]{1,64})?){0,32}$/;
/** q35 or pc machine types, versioned (`pc-q35-7.2`) or not. */
const MACHINE_RE = /^(q35|pc|pc-q35-[0-9]{1,2}\.[0-9]{1,2}|pc-i440fx-[0-9]{1,2}\.[0-9]{1,2})$/;
/** One kernel command-line word: printable, no quotes, shell or control characters. */
const CMDLINE_WORD_RE = /^[A-Za-z0-9_.,:/=+@%-]+$/;
/** Content-addressed boot files inside the capture. */
const BOOT_PART_RE = /^boot\/[A-Za-z0-9_.-]{1,128}$/;

function refuse(what: string): never {
  throw new CaptureError(`capture refused before replay: ${what}`);
}

/**
 * Checks the manifest's machine against the allowlists and ranges, and the RAM size
 * against the RAM part and the free space of /dev/shm (`shmFreeBytes`). Throws a
 * CaptureError naming the field; returns nothing.
 */
export function checkReplayManifest(m: CaptureManifest, ram: RamPart, shmFreeBytes: number): void {
  const mc = m.machine as Partial<CaptureManifest['machine']> | undefined;
  if (!mc || typeof mc !== 'object') refuse('the manifest has no machine');
  const { cpuModel, cpus, memMiB, append, machineType, kernelPart, initrdPart } = mc;
  if (typeof cpuModel !== 'string' || !CPU_MODEL_RE.test(cpuModel))
    refuse(`CPU model ${JSON.stringify(cpuModel)} is not a plain QEMU CPU model`);
  if (!Number.isSafeInteger(cpus) || (cpus as number) < 1 || (cpus as number) > REPLAY_MAX_CPUS)
    refuse(`vCPU count ${String(cpus)} is outside 1..${REPLAY_MAX_CPUS}`);
  if (
    !Number.isSafeInteger(memMiB) ||
    (memMiB as number) < REPLAY_MIN_MEM_MIB ||
    (memMiB as number) > REPLAY_MAX_MEM_MIB
  )
    refuse(`memory size ${String(memMiB)} MiB is outside ${REPLAY_MIN_MEM_MIB}..${REPLAY_MAX_MEM_MIB} MiB`);
  const bytes = (memMiB as number) * 1024 * 1024;
  if (ram.rawSize !== bytes)
    refuse(`memory size ${memMiB} MiB does not match the RAM part ${ram.name} (${ram.rawSize} bytes)`);
  if (bytes > shmFreeBytes)
    refuse(
      `memory size ${memMiB} MiB is more than /dev/shm has free (${Math.floor(shmFreeBytes / 1048576)} MiB)`,
    );
  checkRamRanges(m.ram, bytes);
  if (typeof append !== 'string') refuse('the kernel command line is missing');
  if (append.length > REPLAY_MAX_CMDLINE)
    refuse(`the kernel command line is ${append.length} characters (at most ${REPLAY_MAX_CMDLINE})`);
  for (const word of append.split(' ').filter((w) => w !== ''))
    if (!CMDLINE_WORD_RE.test(word))
      refuse(
        `the kernel command line has a word with characters outside [A-Za-z0-9_.,:/=+@%-]: ${JSON.stringify(word)}`,
      );
  if (typeof machineType !== 'string' || !MACHINE_RE.test(machineType))
    refuse(`machine type ${JSON.stringify(machineType)} is not q35/pc`);
  // A firmware boot (version 3) has no boot files: the firmware record says what boots.
  const firmwareBoot = m.version >= 3 && kernelPart === undefined && initrdPart === undefined;
  if (firmwareBoot && mc.firmware?.boot !== 'firmware')
    refuse('the manifest has neither boot files nor a firmware boot');
  for (const [what, part] of firmwareBoot
    ? []
    : ([
        ['kernel', kernelPart],
        ['initrd', initrdPart],
      ] as const)) {
    if (typeof part !== 'string' || !BOOT_PART_RE.test(part) || !Object.hasOwn(m.parts, part))
      refuse(`the ${what} part ${JSON.stringify(part)} is not a boot/ part listed in the manifest`);
  }
  checkDeviceModel(m);
  if (typeof m.qemu?.version !== 'string' || !/^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?$/.test(m.qemu.version))
    refuse(`QEMU version ${JSON.stringify(m.qemu?.version)} is not a version number`);
}

/**
 * The manifest's RAM ranges (they become the replay's RAM layout): integers, inside the
 * RAM part, not overlapping in guest-physical space, and no byte of the part used twice.
 */
function checkRamRanges(ram: unknown, bytes: number): void {
  if (!Array.isArray(ram) || ram.length === 0 || ram.length > 64)
    refuse('the RAM range list is missing or too long');
  const ranges = ram as { gpa: unknown; size: unknown; offset: unknown }[];
  for (const r of ranges) {
    const { gpa, size, offset } = r ?? {};
    if (
      ![gpa, size, offset].every((v) => Number.isSafeInteger(v) && (v as number) >= 0) ||
      (size as number) === 0
    )
      refuse(`RAM range ${JSON.stringify(r)} is not three non-negative integers`);
    if ((offset as number) + (size as number) > bytes)
      refuse(`RAM range at 0x${(gpa as number).toString(16)} runs past the end of the RAM part`);
  }
  const overlap = (key: 'gpa' | 'offset'): boolean => {
    const s = [...ranges].sort((a, b) => (a[key] as number) - (b[key] as number));
    return s.some(
      (r, i) => i > 0 && (s[i - 1][key] as number) + (s[i - 1].size as number) > (r[key] as number),
    );
  };
  if (overlap('gpa')) refuse('RAM ranges overlap in guest-physical space');
  if (overlap('offset')) refuse('RAM ranges overlap in the RAM part');
}
