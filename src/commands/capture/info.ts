import { Args, Flags } from '@oclif/core';
import { claimedSigner } from '../../capture/signature.js';
import { VmiCommand } from '../../cli/base-command.js';
import { readManifest } from '../../capture/artifact.js';
import { ramPartOf, type CaptureManifest } from '../../capture/manifest.js';

/** Firmware, devices and disks of a version-3 manifest, and how replays read the disks. */
function deviceLines(m: CaptureManifest): string[] {
  const mc = m.machine;
  if (!mc.firmware && !mc.devices)
    return ['devices   not recorded (capture format before v3: replays rebuild a diskless machine)'];
  const fw = mc.firmware;
  const lines = [
    `firmware  ${fw?.boot === 'firmware' ? 'firmware boot' : '-kernel/-initrd boot'}, bios ${fw?.bios || 'none'}` +
      (fw?.pflash.length ? `, pflash ${fw.pflash.map((p) => `${p.unit}=${p.path}`).join(' ')}` : ''),
  ];
  for (const d of mc.devices ?? []) {
    const addr =
      d.addr !== undefined ? `00:${(d.addr >> 3).toString(16).padStart(2, '0')}.${d.addr & 7}` : '-';
    const k = d.disk !== undefined ? mc.disks?.[d.disk] : undefined;
    lines.push(
      `device    ${addr} ${d.type}${d.id ? ` id ${d.id}` : ''}` +
        (d.props.mac ? ` mac ${String(d.props.mac)}` : '') +
        (k ? ` disk ${k.path} (${k.format}, ${k.virtualSize} bytes)` : ''),
    );
  }
  if (m.disks === 'point-in-time')
    lines.push(
      'disks     point-in-time copies in the capture (disks/*): replays read the disks as they were at the pause',
    );
  else if (m.disks === 'live')
    lines.push(
      'disks     NOT copied: replays read the live disk images by path (as they are now, not as they were)',
    );
  return lines;
}

export default class CaptureInfo extends VmiCommand {
  static override summary =
    "Show a capture's manifest: guest, kernel, machine, vCPUs, parts (no hashing: see verify)";

  static override examples = [
    '<%= config.bin %> <%= command.id %> lab.vmicap',
    '<%= config.bin %> <%= command.id %> lab.vmicap --json',
  ];

  static override args = {
    file: Args.string({ description: 'capture directory', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print the manifest as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CaptureInfo);
    try {
      const m = await readManifest(args.file);
      if (flags.json) {
        this.log(JSON.stringify(m, null, 2));
        return;
      }
      const mc = m.machine;
      const rp = ramPartOf(m);
      const signer = await claimedSigner(args.file);
      const lines = [
        `capture   ${m.id} (format ${m.format} v${m.version}, ${m.mode})`,
        `created   ${m.createdAt} by ${m.tool.name} ${m.tool.version}`,
        `guest     ${m.guest.name}${m.guest.uuid ? ` (uuid ${m.guest.uuid})` : ''}`,
        `kernel    ${m.guest.banner ?? m.guest.kernelRelease ?? 'unknown'}`,
        `qemu      ${m.qemu.version}${m.qemu.package ? ` (${m.qemu.package})` : ''}, machine ${mc.machineType}`,
        `machine   -cpu ${mc.cpuModel} -smp ${mc.cpus} -m ${mc.memMiB}M, append "${mc.append}"`,
        `pause     ${m.timing.pauseMs.toFixed(1)} ms (migrate ${m.timing.migrateMs.toFixed(1)} ms, RAM ${m.timing.copyMs.toFixed(1)} ms)`,
        ...(m.ramSource ? [`ram from  ${m.ramSource}${m.ramSourceNote ? ` (${m.ramSourceNote})` : ''}`] : []),
        ...m.ram.map(
          (r) =>
            `ram       gpa 0x${r.gpa.toString(16)}..0x${(r.gpa + r.size).toString(16)} (${r.size / 2 ** 20} MiB)`,
        ),
        rp.compressed
          ? `storage   ${rp.name}: gzip, ${rp.info.size} bytes stored, ${rp.rawSize} uncompressed (${((100 * rp.info.size) / Math.max(rp.rawSize, 1)).toFixed(1)}%)`
          : `storage   ${rp.name}: uncompressed, ${rp.info.size} bytes`,
        ...deviceLines(m),
        ...m.vcpus.map(
          (v) => `vcpu ${v.index}    rip ${v.rip} rsp ${v.rsp} cr3 ${v.cr3} cr4 ${v.cr4} lstar ${v.lstar}`,
        ),
        signer
          ? `signature ${signer} (as claimed: capture verify --trust PUB.pem checks it)`
          : 'signature none',
        'parts',
        ...Object.entries(m.parts).map(
          ([n, p]) =>
            `  ${n.padEnd(32)} ${String(p.size).padStart(11)}  sha256 ${p.sha256}` +
            (p.compression ? `  (${p.compression}, ${p.uncompressedSize} bytes uncompressed)` : ''),
        ),
      ];
      this.log(lines.join('\n'));
    } catch (e) {
      this.fail(e);
    }
  }
}
