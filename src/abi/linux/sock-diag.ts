/**
 * The sock_diag netlink protocol (NETLINK_SOCK_DIAG, include/uapi/linux/sock_diag.h,
 * inet_diag.h, unix_diag.h): dump requests as `ss` sends them, and the inode of each
 * socket in the answer. A dump is answered by the socket hash tables themselves
 * (inet_diag_dump → inet_diag_dump_icsk; unix_diag_dump → unix_socket_table), not by the
 * seq_file code behind /proc/net/*: a different kernel path to the same sockets.
 */

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const NETLINK_SOCK_DIAG = 4;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
/** The one message type a read-only client may send: dump (or get) by family. SOCK_DESTROY (21) kills sockets. */
export const SOCK_DIAG_BY_FAMILY = 20;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_DUMP = 0x300;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_HDRLEN = 16;
/** recvfrom flag: return EAGAIN instead of blocking once the dump is drained. */
export const MSG_DONTWAIT = 0x40;

/** One dump request: the inet tables of a family and protocol, or every unix socket. */
export type SockDiagQuery =
  | { family: typeof AF_INET | typeof AF_INET6; protocol: typeof IPPROTO_TCP | typeof IPPROTO_UDP }
  | { family: typeof AF_UNIX };

function header(payload: number, seq: number): { buf: Uint8Array; dv: DataView } {
  const buf = new Uint8Array(NLMSG_HDRLEN + payload);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, buf.length, true);
  dv.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  dv.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  dv.setUint32(8, seq, true);
  return { buf, dv };
}

/**
 * The request bytes of a dump: nlmsghdr + inet_diag_req_v2 (56 bytes, every state) or
 * unix_diag_req (24 bytes, every state, no extra attributes).
 */
export function encodeSockDiagRequest(q: SockDiagQuery, seq = 1): Uint8Array {
  if (q.family === AF_UNIX) {
    const { buf, dv } = header(24, seq);
    buf[16] = AF_UNIX;
    dv.setUint32(20, 0xffffffff, true);
    return buf;
  }
  const { buf, dv } = header(56, seq);
  buf[16] = q.family;
  buf[17] = q.protocol;
  dv.setUint32(20, 0xffffffff, true);
  return buf;
}

/** True when `data` is exactly one SOCK_DIAG_BY_FAMILY dump request (the policy's test). */
export function isSockDiagDumpRequest(data: Uint8Array): boolean {
  if (data.length < NLMSG_HDRLEN) return false;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return (
    dv.getUint32(0, true) === data.length &&
    dv.getUint16(4, true) === SOCK_DIAG_BY_FAMILY &&
    (dv.getUint16(6, true) & (NLM_F_REQUEST | NLM_F_DUMP)) === (NLM_F_REQUEST | NLM_F_DUMP)
  );
}

/** What the messages of one recvfrom hold. */
export interface SockDiagChunk {
  /** Socket inodes (0, for time-wait and request sockets, left out). */
  inodes: bigint[];
  /** NLMSG_DONE seen: the dump is complete. */
  done: boolean;
  /** -errno of an NLMSG_ERROR (e.g. -2 ENOENT: no diag handler for that family/protocol). */
  error?: number;
}

/**
 * Decodes the netlink messages of one recvfrom. inet_diag_msg has the inode at offset 68,
 * unix_diag_msg at offset 4 (after the 16-byte header). Throws RangeError on a message
 * that runs past the data.
 */
export function decodeSockDiagChunk(data: Uint8Array, family: number): SockDiagChunk {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: SockDiagChunk = { inodes: [], done: false };
  let off = 0;
  while (off + NLMSG_HDRLEN <= data.length) {
    const len = dv.getUint32(off, true);
    const type = dv.getUint16(off + 4, true);
    if (len < NLMSG_HDRLEN || off + len > data.length)
      throw new RangeError(`netlink message of ${len} bytes at ${off}`);
    const body = off + NLMSG_HDRLEN;
    if (type === NLMSG_DONE) {
      out.done = true;
    } else if (type === NLMSG_ERROR) {
      out.error = len >= NLMSG_HDRLEN + 4 ? dv.getInt32(body, true) : -5;
      out.done = true;
    } else if (type === SOCK_DIAG_BY_FAMILY) {
      const at = family === AF_UNIX ? 4 : 68;
      if (len < NLMSG_HDRLEN + at + 4) throw new RangeError(`short sock_diag message of ${len} bytes`);
      const ino = dv.getUint32(body + at, true);
      if (ino !== 0) out.inodes.push(BigInt(ino));
    }
    off += (len + 3) & ~3;
  }
  return out;
}
