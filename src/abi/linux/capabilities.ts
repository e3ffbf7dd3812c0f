/**
 * Linux capabilities (include/uapi/linux/capability.h): the number of each CAP_* and the
 * 64-bit masks /proc/PID/status prints as 16 hex digits (CapInh, CapPrm, CapEff, CapBnd,
 * CapAmb; fs/proc/array.c render_cap_t).
 */

/** CAP_* names by number, include/uapi/linux/capability.h (CAP_LAST_CAP is 40 since 5.9). */
export const CAPABILITY_NAMES: readonly string[] = Object.freeze([
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
]);

/** Parses a /proc/PID/status capability mask (1..16 hex digits); undefined when it is not one. */
export function parseCapMask(text: string): bigint | undefined {
  const t = text.trim();
  return /^[0-9a-fA-F]{1,16}$/.test(t) ? BigInt(`0x${t}`) : undefined;
}

/**
 * The names of the bits set in `mask`, lowest first; a bit above the names this table
 * knows (a newer kernel) reads `cap_N`.
 */
export function capabilityNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++)
    if ((mask >> BigInt(bit)) & 1n) out.push(CAPABILITY_NAMES[bit] ?? `cap_${bit}`);
  return out;
}

/**
 * A mask as Volatility's capabilities plugin prints it: the names joined with ", ", `-`
 * for none, `all` when it holds every capability this table names (and maybe more).
 */
export function describeCaps(mask: bigint): string {
  if (mask === 0n) return '-';
  const all = (1n << BigInt(CAPABILITY_NAMES.length)) - 1n;
  if ((mask & all) === all) {
    const extra = capabilityNames(mask & ~all);
    return extra.length === 0 ? 'all' : `all, ${extra.join(', ')}`;
  }
  return capabilityNames(mask).join(', ');
}
