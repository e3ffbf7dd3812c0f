/**
 * Interfaces and their addresses as /proc/net shows them for the reader's network
 * namespace:
 *
 * - /proc/net/dev (net/core/net-procfs.c dev_seq_printf_stats()): two header lines, then
 *   `  eth0: rxbytes rxpackets ... (8 receive fields) txbytes ... (8 transmit fields)`.
 * - /proc/net/if_inet6 (net/ipv6/addrconf.c if6_seq_show()): `addr ifindex plen scope
 *   flags name`, the address as 32 hex digits in network order, the rest hex.
 * - /proc/net/route (net/ipv4/fib_trie.c fib_route_seq_show()): the IPv4 main table,
 *   `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`, addresses
 *   as native-order hex words.
 * - /proc/net/fib_trie (fib_trie_seq_show()): every FIB table as a trie; a leaf line
 *   `|-- 10.0.2.15` is followed by one line per prefix `/32 host LOCAL`. A LOCAL /32 in
 *   the local table is an address of this host (the only place IPv4 addresses of
 *   interfaces show in /proc); which interface holds it is not printed.
 */
import { ipv4FromHexLe, ipv6FromHex } from '../inet.js';
import {
  excerpt,
  parseBigIntStrict,
  parseIntStrict,
  parseLines,
  ProcParseError,
  toText,
  type ParsedLines,
  type ProcInput,
} from './common.js';

export interface NetDevStats {
  name: string;
  rxBytes: bigint;
  rxPackets: bigint;
  txBytes: bigint;
  txPackets: bigint;
}

export interface Inet6Addr {
  address: string;
  ifindex: number;
  prefixLen: number;
  /** IPV6_ADDR_* scope bits (0 global, 0x10 host, 0x20 link). */
  scope: number;
  flags: number;
  name: string;
}

export interface Ipv4Route {
  iface: string;
  destination: string;
  gateway: string;
  flags: number;
  metric: number;
  mask: string;
}

export interface FibEntry {
  /** `Main`, `Local`, or `Id 100` for other tables. */
  table: string;
  address: string;
  prefixLen: number;
  /** `host`, `link`, `universe`... */
  scope: string;
  /** `LOCAL`, `UNICAST`, `BROADCAST`... */
  type: string;
}

function collect<T>(
  input: ProcInput,
  file: string,
  skip: (line: string, index: number) => boolean,
  parse: (line: string, where: string) => T,
): ParsedLines<T> {
  return parseLines(input, file, parse, skip);
}

/** /proc/net/dev; a bad line becomes an error, never an exception. */
export function parseNetDev(input: ProcInput, file = 'net/dev'): ParsedLines<NetDevStats> {
  return collect(
    input,
    file,
    (l) => l.includes('|'),
    (line, where) => {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim();
      const f = line
        .slice(colon + 1)
        .trim()
        .split(/\s+/);
      if (colon < 0 || name === '' || f.length < 16) {
        throw new ProcParseError(where, `not an interface line: ${excerpt(line)}`);
      }
      return {
        name,
        rxBytes: parseBigIntStrict(f[0], where, 'rx bytes'),
        rxPackets: parseBigIntStrict(f[1], where, 'rx packets'),
        txBytes: parseBigIntStrict(f[8], where, 'tx bytes'),
        txPackets: parseBigIntStrict(f[9], where, 'tx packets'),
      };
    },
  );
}

const HEX = /^[0-9A-Fa-f]{1,8}$/;

function hexField(s: string | undefined, where: string, what: string): number {
  if (s === undefined || !HEX.test(s)) throw new ProcParseError(where, `bad ${what} ${excerpt(s ?? '')}`);
  return parseInt(s, 16);
}

/** /proc/net/if_inet6; a bad line becomes an error, never an exception. */
export function parseIfInet6(input: ProcInput, file = 'net/if_inet6'): ParsedLines<Inet6Addr> {
  return collect(
    input,
    file,
    () => false,
    (line, where) => {
      const f = line.trim().split(/\s+/);
      const address = ipv6FromHex(f[0] ?? '');
      if (f.length !== 6 || address === undefined) {
        throw new ProcParseError(where, `not an if_inet6 line: ${excerpt(line)}`);
      }
      return {
        address,
        ifindex: hexField(f[1], where, 'ifindex'),
        prefixLen: hexField(f[2], where, 'prefix length'),
        scope: hexField(f[3], where, 'scope'),
        flags: hexField(f[4], where, 'flags'),
        name: f[5],
      };
    },
  );
}

/** /proc/net/route; a bad line becomes an error, never an exception. */
export function parseIpv4Routes(input: ProcInput, file = 'net/route'): ParsedLines<Ipv4Route> {
  return collect(
    input,
    file,
    (l, i) => i === 0 && l.startsWith('Iface'),
    (line, where) => {
      const f = line.trim().split(/\s+/);
      const destination = ipv4FromHexLe(f[1] ?? '');
      const gateway = ipv4FromHexLe(f[2] ?? '');
      const mask = ipv4FromHexLe(f[7] ?? '');
      if (f.length < 11 || destination === undefined || gateway === undefined || mask === undefined) {
        throw new ProcParseError(where, `not a route line: ${excerpt(line)}`);
      }
      return {
        iface: f[0],
        destination,
        gateway,
        flags: hexField(f[3], where, 'flags'),
        metric: parseIntStrict(f[6], where, 'metric'),
        mask,
      };
    },
  );
}

const TABLE_RE = /^(Main|Local|Id \d+):$/;
const LEAF_RE = /^\s*\|-- (\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;
const PREFIX_RE = /^\s+\/(\d{1,2}) (\S+) (\S+)$/;
const NODE_RE = /^\s*\+-- \S+/;

/**
 * /proc/net/fib_trie: every (table, leaf, prefix) entry. Lines that fit none of the known
 * shapes become errors; the parse goes on.
 */
export function parseFibTrie(input: ProcInput, file = 'net/fib_trie'): ParsedLines<FibEntry> {
  const entries: FibEntry[] = [];
  const errors: ProcParseError[] = [];
  let table: string | undefined;
  let leaf: string | undefined;
  toText(input)
    .split('\n')
    .forEach((line, i) => {
      const where = `${file}:${i + 1}`;
      if (line.trim() === '') return;
      let m = TABLE_RE.exec(line);
      if (m) {
        table = m[1];
        leaf = undefined;
        return;
      }
      if (NODE_RE.test(line)) return;
      m = LEAF_RE.exec(line);
      if (m) {
        leaf = m[1];
        return;
      }
      m = PREFIX_RE.exec(line);
      const len = m ? Number(m[1]) : NaN;
      if (m && table !== undefined && leaf !== undefined && len <= 32) {
        entries.push({ table, address: leaf, prefixLen: len, scope: m[2], type: m[3] });
        return;
      }
      errors.push(new ProcParseError(where, `unexpected fib_trie line: ${excerpt(line)}`));
    });
  return { entries, errors };
}
