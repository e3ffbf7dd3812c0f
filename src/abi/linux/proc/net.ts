/**
 * The socket tables of a network namespace: /proc/net/{tcp,tcp6,udp,udp6,raw,raw6}
 * (net/ipv4/tcp_ipv4.c get_tcp4_sock(), udp.c udp4_format_sock()...), /proc/net/unix
 * (net/unix/af_unix.c unix_seq_show()) and /proc/net/netlink. Each socket is keyed by its
 * inode number, which is what /proc/PID/fd/N links show (`socket:[9938]`).
 *
 *     sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
 *      0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9938 1 ...
 *
 *     Num       RefCount Protocol Flags    Type St Inode Path
 *     00000000c8cb5c4a: 00000002 00000000 00010000 0001 01  9925 /run/vmi-lab/control.sock
 *
 * Addresses are hex words in the CPU's byte order, ports are hex in host order.
 */
import { ipv4FromHexLe, ipv6FromHexLeWords } from '../inet.js';
import {
  excerpt,
  parseBigIntStrict,
  parseIntStrict,
  parseLines,
  ProcParseError,
  type ParsedLines,
  type ProcInput,
} from './common.js';

export interface InetSocket {
  family: 'AF_INET' | 'AF_INET6';
  localAddr: string;
  /** For raw sockets: the IP protocol number. */
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  /** sk_state, a TCP state number (TCP_ESTABLISHED = 1 ... TCP_NEW_SYN_RECV = 12). */
  state: number;
  uid: number;
  inode: bigint;
}

export interface UnixSocket {
  /** SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_SEQPACKET = 5. */
  type: number;
  /** socket->state: SS_UNCONNECTED = 1, SS_CONNECTING, SS_CONNECTED, SS_DISCONNECTING. */
  state: number;
  /** Socket flags; __SO_ACCEPTCON (0x10000) marks a listener. */
  flags: number;
  inode: bigint;
  /** Bound path; abstract names start with '@'; '' when unbound. */
  path: string;
}

export interface NetlinkSocket {
  /** NETLINK_ROUTE = 0, NETLINK_KOBJECT_UEVENT = 15... */
  protocol: number;
  portId: number;
  inode: bigint;
}

/** TCP states, indexed by sk_state (include/net/tcp_states.h). */
export const TCP_STATES: readonly string[] = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
];
export const TCP_CLOSE = 7;
/** Flag of a listening socket in /proc/net/unix. */
export const SO_ACCEPTCON = 0x10000;

function parseEach<T>(
  input: ProcInput,
  file: string,
  isHeader: (line: string) => boolean,
  parse: (line: string, where: string) => T,
): ParsedLines<T> {
  return parseLines(input, file, parse, (line, i) => i === 0 && isHeader(line));
}

const HEX_PORT = /^[0-9A-Fa-f]{4}$/;

function endpoint(s: string, v6: boolean, where: string, what: string): [string, number] {
  const colon = s.lastIndexOf(':');
  const addrHex = s.slice(0, colon);
  const portHex = s.slice(colon + 1);
  const addr = v6 ? ipv6FromHexLeWords(addrHex) : ipv4FromHexLe(addrHex);
  if (colon < 0 || addr === undefined || !HEX_PORT.test(portHex)) {
    throw new ProcParseError(where, `bad ${what} address ${excerpt(s)}`);
  }
  return [addr, parseInt(portHex, 16)];
}

/**
 * /proc/net/{tcp,udp,raw}[6] (`v6` for the *6 files); a bad line becomes an error,
 * never an exception.
 */
export function parseInetSockets(input: ProcInput, v6: boolean, file = 'net/tcp'): ParsedLines<InetSocket> {
  return parseEach(
    input,
    file,
    (l) => l.includes('local_address'),
    (line, where) => {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !/^\d+:$/.test(f[0])) {
        throw new ProcParseError(where, `not a socket line: ${excerpt(line)}`);
      }
      const [localAddr, localPort] = endpoint(f[1], v6, where, 'local');
      const [remoteAddr, remotePort] = endpoint(f[2], v6, where, 'remote');
      if (!/^[0-9A-Fa-f]{2}$/.test(f[3])) throw new ProcParseError(where, `bad state ${excerpt(f[3])}`);
      return {
        family: v6 ? 'AF_INET6' : 'AF_INET',
        localAddr,
        localPort,
        remoteAddr,
        remotePort,
        state: parseInt(f[3], 16),
        uid: parseIntStrict(f[7], where, 'uid'),
        inode: parseBigIntStrict(f[9], where, 'inode'),
      };
    },
  );
}

const UNIX_RE =
  /^[0-9A-Fa-f]+: ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{8}) ([0-9A-Fa-f]{4}) ([0-9A-Fa-f]{2}) +(\d{1,20})(?: (.*))?$/;

/** /proc/net/unix; a bad line becomes an error, never an exception. */
export function parseUnixSockets(input: ProcInput, file = 'net/unix'): ParsedLines<UnixSocket> {
  return parseEach(
    input,
    file,
    (l) => l.startsWith('Num'),
    (line, where) => {
      const m = UNIX_RE.exec(line);
      if (!m) throw new ProcParseError(where, `not a unix socket line: ${excerpt(line)}`);
      return {
        flags: parseInt(m[3], 16),
        type: parseInt(m[4], 16),
        state: parseInt(m[5], 16),
        inode: BigInt(m[6]),
        path: m[7] ?? '',
      };
    },
  );
}

/** /proc/net/netlink; a bad line becomes an error, never an exception. */
export function parseNetlinkSockets(input: ProcInput, file = 'net/netlink'): ParsedLines<NetlinkSocket> {
  return parseEach(
    input,
    file,
    (l) => l.startsWith('sk'),
    (line, where) => {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !/^[0-9A-Fa-f]+$/.test(f[0])) {
        throw new ProcParseError(where, `not a netlink socket line: ${excerpt(line)}`);
      }
      return {
        protocol: parseIntStrict(f[1], where, 'protocol'),
        portId: parseIntStrict(f[2], where, 'port id'),
        inode: parseBigIntStrict(f[9], where, 'inode'),
      };
    },
  );
}
