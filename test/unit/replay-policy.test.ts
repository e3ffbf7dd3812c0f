/**
 * A capture's manifest is untrusted input to a replay: a manifest asking for 1 TiB of
 * RAM, a RAM size that is not its RAM part's, a hostile kernel command line or CPU model,
 * or a vCPU count out of range is refused before any file is created in /dev/shm and
 * before QEMU is started (VMI_QEMU points at a stand-in that records being run).
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CAPTURE_FORMAT,
  CAPTURE_VERSION,
  encodeManifest,
  MANIFEST,
  MANIFEST_SUM,
  ramPartOf,
  VCPU_HEX_REGS,
  type CaptureManifest,
} from '../../src/capture/manifest.js';
import { checkReplayManifest } from '../../src/capture/replay-policy.js';
import { openReplay } from '../../src/targets/capture.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-replaypol-'));
const marker = join(root, 'qemu-was-started');
const fakeQemu = join(root, 'qemu-system-x86_64');
const saved = { qemu: process.env.VMI_QEMU, rt: process.env.VMI_RUNTIME_ROOT };
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const MiB = 1 << 20;

beforeAll(() => {
  writeFileSync(fakeQemu, `#!/bin/sh\ntouch ${marker}\nexit 1\n`);
  chmodSync(fakeQemu, 0o755);
  process.env.VMI_QEMU = fakeQemu;
  process.env.VMI_RUNTIME_ROOT = join(root, 'rt');
});
afterAll(() => {
  for (const [k, v] of [
    ['VMI_QEMU', saved.qemu],
    ['VMI_RUNTIME_ROOT', saved.rt],
  ] as const)
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  rmSync(root, { recursive: true, force: true });
});

/** A capture whose manifest says what `mutate` makes it say (the RAM part's size is only claimed). */
function makeCapture(name: string, mutate: (m: CaptureManifest) => void): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'boot'), { recursive: true });
  const files: Record<string, Buffer> = {
    'devstate.bin': Buffer.from('QEVM'),
    'boot/vmlinux-aaaa': Buffer.from('kernel'),
    'boot/initrd-bbbb': Buffer.from('initrd'),
  };
  for (const [n, b] of Object.entries(files)) writeFileSync(join(dir, n), b);
  const m = {
    format: CAPTURE_FORMAT,
    version: CAPTURE_VERSION,
    id: 'test-id-0000',
    createdAt: new Date(0).toISOString(),
    tool: { name: 'vmi', version: '0.0.0' },
    mode: 'shared-ram',
    guest: { name: 'g' },
    qemu: { version: '7.2.22' },
    machine: {
      machineType: 'pc-q35-7.2',
      cpuModel: 'max',
      cpus: 1,
      memMiB: 256,
      append: 'console=ttyS0 loglevel=4 panic=-1 quiet',
      kernelPart: 'boot/vmlinux-aaaa',
      initrdPart: 'boot/initrd-bbbb',
    },
    ram: [{ gpa: 0, size: 256 * MiB, offset: 0 }],
    vcpus: [
      {
        index: 0,
        cs: 0x10,
        ss: 0x18,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
        ...Object.fromEntries([...VCPU_HEX_REGS, 'star', 'cstar', 'fmask'].map((k) => [k, '0x1'])),
      },
    ],
    timing: { pauseMs: 1, migrateMs: 1, copyMs: 1 },
    parts: {
      ...Object.fromEntries(Object.entries(files).map(([n, b]) => [n, { size: b.length, sha256: sha(b) }])),
      'ram.raw': { size: 256 * MiB, sha256: '0'.repeat(64) },
    },
  } as unknown as CaptureManifest;
  mutate(m);
  const buf = encodeManifest(m);
  writeFileSync(join(dir, MANIFEST), buf);
  writeFileSync(join(dir, MANIFEST_SUM), sha(buf) + '\n');
  return dir;
}

const shmReplays = () => readdirSync('/dev/shm').filter((f) => f.startsWith('vmi-replay-'));

const HOSTILE: Array<[string, (m: CaptureManifest) => void, RegExp]> = [
  [
    '1 TiB of memory',
    (m) => {
      m.machine.memMiB = 1 << 20;
      m.parts['ram.raw'].size = 2 ** 40;
    },
    /memory size 1048576 MiB is outside 16\.\.65536 MiB/,
  ],
  ['memory not the RAM part size', (m) => (m.machine.memMiB = 512), /does not match the RAM part ram\.raw/],
  [
    'a RAM range past the end of the RAM part',
    (m) => (m.ram = [{ gpa: 4 * 2 ** 30, size: 256 * MiB, offset: 1 }]),
    /RAM range at 0x100000000 runs past the end of the RAM part/,
  ],
  [
    'RAM ranges that overlap in guest-physical space',
    (m) =>
      (m.ram = [
        { gpa: 0, size: 128 * MiB, offset: 0 },
        { gpa: 64 * MiB, size: 128 * MiB, offset: 128 * MiB },
      ]),
    /RAM ranges overlap in guest-physical space/,
  ],
  [
    'RAM ranges that read one byte of the part twice',
    (m) =>
      (m.ram = [
        { gpa: 0, size: 128 * MiB, offset: 0 },
        { gpa: 4 * 2 ** 30, size: 128 * MiB, offset: 64 * MiB },
      ]),
    /RAM ranges overlap in the RAM part/,
  ],
  [
    'a negative RAM range',
    (m) => (m.ram = [{ gpa: -1, size: 1, offset: 0 }]),
    /not three non-negative integers/,
  ],
  [
    'a hostile kernel command line',
    (m) => (m.machine.append = 'console=ttyS0 init=/bin/sh;$(reboot) `id`'),
    /kernel command line has a word with characters outside/,
  ],
  ['a control character in the command line', (m) => (m.machine.append = 'quiet\nrdinit=/x'), /outside/],
  ['a 4 KiB command line', (m) => (m.machine.append = 'a'.repeat(4096)), /4096 characters \(at most 2048\)/],
  [
    'a CPU model with extra arguments',
    (m) => (m.machine.cpuModel = 'max -device foo'),
    /CPU model .* is not a plain/,
  ],
  ['0 vCPUs', (m) => (m.machine.cpus = 0), /vCPU count 0 is outside 1\.\.64/],
  ['65 vCPUs', (m) => (m.machine.cpus = 65), /vCPU count 65 is outside 1\.\.64/],
  ['a foreign machine type', (m) => (m.machine.machineType = 'microvm,x-option=1'), /machine type/],
  [
    'a kernel outside the capture',
    (m) => (m.machine.kernelPart = '../../../boot/vmlinuz'),
    /^(capture refused before replay: the kernel part|manifest\.msgpack: boot files not listed)/,
  ],
];

describe('replay manifest checks', () => {
  it.each(HOSTILE)('refuses %s before any file or process exists', async (name, mutate, message) => {
    const dir = makeCapture(name.replace(/\W+/g, '-'), mutate);
    const before = shmReplays();
    await expect(openReplay(dir)).rejects.toThrow(message);
    // (readManifest itself refuses boot parts it does not list, with its own words.)
    if (!name.startsWith('a kernel outside'))
      await expect(openReplay(dir)).rejects.toThrow(/^capture refused before replay: /);
    expect(existsSync(marker), 'QEMU was started').toBe(false);
    expect(shmReplays()).toEqual(before);
    expect(existsSync(join(root, 'rt', `vmi-${process.getuid!()}`, 'replays'))).toBe(false);
  });

  it('accepts the manifest of a normal lab capture', () => {
    const dir = makeCapture('normal', () => {});
    void dir;
    const m = {
      machine: {
        machineType: 'pc-q35-7.2',
        cpuModel: 'max',
        cpus: 2,
        memMiB: 256,
        append: 'console=ttyS0 loglevel=4 panic=-1 quiet pti=on',
        kernelPart: 'boot/vmlinux-aaaa',
        initrdPart: 'boot/initrd-bbbb',
      },
      qemu: { version: '7.2.22' },
      ram: [{ gpa: 0, size: 256 * MiB, offset: 0 }],
      parts: { 'ram.raw': { size: 256 * MiB }, 'boot/vmlinux-aaaa': {}, 'boot/initrd-bbbb': {} },
    } as unknown as CaptureManifest;
    expect(() => checkReplayManifest(m, ramPartOf(m), 1024 * MiB)).not.toThrow();
    // The same, with less /dev/shm free than the guest's RAM.
    expect(() => checkReplayManifest(m, ramPartOf(m), 100 * MiB)).toThrow(
      /more than \/dev\/shm has free \(100 MiB\)/,
    );
  });
});
