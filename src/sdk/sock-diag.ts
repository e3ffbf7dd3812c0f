/**
 * Sockets as the sock_diag netlink dump lists them (what `ss` reads): the inet hash
 * tables and the unix socket table walked by the diag modules, a kernel path apart from
 * the /proc/net seq files. The dump covers the network namespace of the shadow only (the
 * netlink socket's namespace): sockets of other namespaces are not in it.
 */
import {
  AF_NETLINK,
  decodeSockDiagChunk,
  encodeSockDiagRequest,
  MSG_DONTWAIT,
  NETLINK_SOCK_DIAG,
  SOCK_RAW,
  type SockDiagQuery,
} from '../abi/linux/sock-diag.js';
import { inBytes, outBuffer, type CallRef } from './batch.js';
import type { SyscallError } from './errors.js';
import type { SyscallApi } from './syscall-api.js';

/** SOCK_CLOEXEC: the dump socket never outlives the batch in a child. */
const SOCK_CLOEXEC = 0o2000000;
/** recvfrom buffer: a dump skb is at most 32 KiB (netlink_dump's allocation). */
export const SOCK_DIAG_RECV_BUFFER = 32 << 10;
/** recvfrom calls per dump in its one batch: ~200 unix or ~300 inet sockets per 32 KiB. */
export const SOCK_DIAG_RECVS = 8;

export type { SockDiagQuery } from '../abi/linux/sock-diag.js';

/** One dump's answer. */
export interface SockDiagResult {
  query: SockDiagQuery;
  /** Socket inodes (time-wait and request sockets, inode 0, left out). */
  inodes: Set<bigint>;
  /** NLMSG_DONE was read: `inodes` is the whole table. False: the dump had more than fits one batch. */
  complete: boolean;
  /** Why the dump failed (socket() or sendto() failed, or NLMSG_ERROR with this errno name). */
  error?: SyscallError | string;
}

/**
 * Runs every dump in one batch: per query socket(AF_NETLINK, NETLINK_SOCK_DIAG), sendto of
 * the request, SOCK_DIAG_RECVS × recvfrom(MSG_DONTWAIT) and close. Allowed by the
 * read-only policy (SOCK_DIAG_SYSCALLS in policy.ts), which checks each of these shapes.
 */
export async function sockDiagDump(
  sys: SyscallApi,
  queries: readonly SockDiagQuery[],
): Promise<SockDiagResult[]> {
  const b = sys.batch();
  const refs = queries.map((q) =>
    b.group(() => {
      const msg = encodeSockDiagRequest(q);
      const fd = b.call('socket', [AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG]);
      const sent = b.call('sendto', [fd, inBytes(msg), msg.length, 0, 0, 0]);
      const recvs: CallRef[] = [];
      for (let i = 0; i < SOCK_DIAG_RECVS; i++)
        recvs.push(
          b.call('recvfrom', [
            fd,
            outBuffer(SOCK_DIAG_RECV_BUFFER),
            SOCK_DIAG_RECV_BUFFER,
            MSG_DONTWAIT,
            0,
            0,
          ]),
        );
      b.close(fd);
      return { fd, sent, recvs };
    }),
  );
  await b.submit();
  return queries.map((query, i) => {
    const { fd, sent, recvs } = refs[i];
    const res: SockDiagResult = { query, inodes: new Set(), complete: false };
    const err = fd.result().error ?? sent.result().error;
    if (err) return { ...res, error: err };
    for (const r of recvs) {
      const got = r.result();
      // EAGAIN after the last message: nothing more queued.
      if (got.error) break;
      let chunk;
      try {
        chunk = decodeSockDiagChunk(got.data, query.family);
      } catch (e) {
        return { ...res, error: (e as Error).message };
      }
      for (const ino of chunk.inodes) res.inodes.add(ino);
      if (chunk.error !== undefined) return { ...res, error: `NLMSG_ERROR ${chunk.error}` };
      if (chunk.done) return { ...res, complete: true };
    }
    return res;
  });
}
