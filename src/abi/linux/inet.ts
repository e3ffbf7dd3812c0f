/**
 * Internet addresses as the kernel prints them in /proc: hex words in the CPU's byte
 * order (/proc/net/tcp, /proc/net/route) or in network order (/proc/net/if_inet6), turned
 * into the usual text forms. The guest ABI is x86-64, so "CPU order" is little-endian.
 */

const HEX8 = /^[0-9A-Fa-f]{8}$/;
const HEX32 = /^[0-9A-Fa-f]{32}$/;

/** Bytes of one 32-bit word printed with `%08X` from a native (little-endian) u32. */
function leWordBytes(hex: string): number[] {
  const v = parseInt(hex, 16);
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/** `0100007F` (a __be32 printed as a native u32) → `127.0.0.1`; undefined if not 8 hex digits. */
export function ipv4FromHexLe(hex: string): string | undefined {
  if (!HEX8.test(hex)) return undefined;
  return leWordBytes(hex).join('.');
}

/** The address as an unsigned 32-bit number in network order (for mask arithmetic). */
export function ipv4ToNumber(addr: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

/** Prefix length of a contiguous netmask (255.255.255.0 → 24); undefined if not contiguous. */
export function prefixOfMask(mask: number): number | undefined {
  let n = 0;
  while (n < 32 && mask & (0x80000000 >>> n)) n++;
  const rest = n === 32 ? 0 : (mask << n) >>> 0;
  return rest === 0 ? n : undefined;
}

/** 16 address bytes → RFC 5952 text (`::1`, `fe80::1`, `::ffff:127.0.0.1`). */
export function formatIpv6(bytes: readonly number[]): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i] << 8) | bytes[i + 1]);
  // IPv4-mapped addresses read best with their IPv4 part (::ffff:a.b.c.d).
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${bytes.slice(12).join('.')}`;
  }
  // The longest run of two or more zero words becomes '::' (the first one on a tie).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

/** /proc/net/tcp6 style: four native-order u32 words, `%08X` each → IPv6 text. */
export function ipv6FromHexLeWords(hex: string): string | undefined {
  if (!HEX32.test(hex)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < 32; i += 8) bytes.push(...leWordBytes(hex.slice(i, i + 8)));
  return formatIpv6(bytes);
}

/** /proc/net/if_inet6 style: 32 hex digits in network order → IPv6 text. */
export function ipv6FromHex(hex: string): string | undefined {
  if (!HEX32.test(hex)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < 32; i += 2) bytes.push(parseInt(hex.slice(i, i + 2), 16));
  return formatIpv6(bytes);
}
