/**
 * Decoders for the x86-64 Linux structs that redirected syscalls write into output
 * buffers. Every decoder checks sizes first and throws StructDecodeError (one line) on
 * short or inconsistent input: a guest that returns garbage costs one result, never a hang.
 */
import { bytesToText } from '../../util/byte-text.js';

/** A buffer that does not hold a valid struct. */
export class StructDecodeError extends Error {
  override name = 'StructDecodeError';
  constructor(
    readonly struct: string,
    detail: string,
  ) {
    super(`${struct}: ${detail}`);
  }
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Decodes a NUL-terminated (or full-length) C string field as byte text (exact bytes). */
export function cString(buf: Uint8Array, start = 0, maxLen = buf.length - start): string {
  const end = Math.min(buf.length, start + maxLen);
  let i = start;
  while (i < end && buf[i] !== 0) i++;
  return bytesToText(buf.subarray(start, i));
}

// ---------------------------------------------------------------- struct statx

/** struct statx is 256 bytes on every architecture. */
export const STATX_SIZE = 256;

export interface StatxTimestamp {
  sec: bigint;
  nsec: number;
}

export interface Statx {
  /** Which fields the kernel filled (STATX_* bits). */
  mask: number;
  blksize: number;
  attributes: bigint;
  nlink: number;
  uid: number;
  gid: number;
  /** File type and permission bits (S_IF* | 0o7777). */
  mode: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  attributesMask: bigint;
  atime: StatxTimestamp;
  btime: StatxTimestamp;
  ctime: StatxTimestamp;
  mtime: StatxTimestamp;
  rdevMajor: number;
  rdevMinor: number;
  devMajor: number;
  devMinor: number;
  /** 0 before kernel 5.8 or when STATX_MNT_ID is not in mask. */
  mntId: bigint;
}

function statxTs(dv: DataView, off: number): StatxTimestamp {
  return { sec: dv.getBigInt64(off, true), nsec: dv.getUint32(off + 8, true) };
}

/** Milliseconds since the epoch of a statx timestamp (as a number; exact to the ms). */
export function statxTimeMs(ts: StatxTimestamp): number {
  return Number(ts.sec) * 1000 + Math.floor(ts.nsec / 1e6);
}

export function decodeStatx(buf: Uint8Array): Statx {
  if (buf.length < STATX_SIZE) {
    throw new StructDecodeError('statx', `need ${STATX_SIZE} bytes, got ${buf.length}`);
  }
  const dv = view(buf);
  return {
    mask: dv.getUint32(0, true),
    blksize: dv.getUint32(4, true),
    attributes: dv.getBigUint64(8, true),
    nlink: dv.getUint32(16, true),
    uid: dv.getUint32(20, true),
    gid: dv.getUint32(24, true),
    mode: dv.getUint16(28, true),
    ino: dv.getBigUint64(32, true),
    size: dv.getBigUint64(40, true),
    blocks: dv.getBigUint64(48, true),
    attributesMask: dv.getBigUint64(56, true),
    atime: statxTs(dv, 64),
    btime: statxTs(dv, 80),
    ctime: statxTs(dv, 96),
    mtime: statxTs(dv, 112),
    rdevMajor: dv.getUint32(128, true),
    rdevMinor: dv.getUint32(132, true),
    devMajor: dv.getUint32(136, true),
    devMinor: dv.getUint32(140, true),
    mntId: dv.getBigUint64(144, true),
  };
}

// ---------------------------------------------------------------- struct utsname

/** Each field of struct new_utsname is 65 bytes; six fields. */
export const UTSNAME_FIELD = 65;
export const UTSNAME_SIZE = 6 * UTSNAME_FIELD;

export interface Utsname {
  sysname: string;
  nodename: string;
  release: string;
  version: string;
  machine: string;
  domainname: string;
}

export function decodeUtsname(buf: Uint8Array): Utsname {
  if (buf.length < UTSNAME_SIZE) {
    throw new StructDecodeError('utsname', `need ${UTSNAME_SIZE} bytes, got ${buf.length}`);
  }
  const f = (i: number) => cString(buf, i * UTSNAME_FIELD, UTSNAME_FIELD);
  return { sysname: f(0), nodename: f(1), release: f(2), version: f(3), machine: f(4), domainname: f(5) };
}

// ---------------------------------------------------------------- struct sysinfo

/** sizeof(struct sysinfo) on x86-64 (the `_f` padding is empty with 8-byte longs). */
export const SYSINFO_SIZE = 112;
/** Load averages are fixed point with 16 fractional bits. */
const SI_LOAD_SHIFT = 16;

export interface Sysinfo {
  /** Seconds since boot. */
  uptime: number;
  /** 1, 5 and 15 minute load averages. */
  loads: [number, number, number];
  /** Memory sizes in bytes (already multiplied by mem_unit). */
  totalram: bigint;
  freeram: bigint;
  sharedram: bigint;
  bufferram: bigint;
  totalswap: bigint;
  freeswap: bigint;
  procs: number;
  totalhigh: bigint;
  freehigh: bigint;
  memUnit: number;
}

export function decodeSysinfo(buf: Uint8Array): Sysinfo {
  if (buf.length < SYSINFO_SIZE) {
    throw new StructDecodeError('sysinfo', `need ${SYSINFO_SIZE} bytes, got ${buf.length}`);
  }
  const dv = view(buf);
  const memUnit = dv.getUint32(104, true) || 1;
  const unit = BigInt(memUnit);
  const mem = (off: number) => dv.getBigUint64(off, true) * unit;
  const load = (off: number) => Number(dv.getBigUint64(off, true)) / (1 << SI_LOAD_SHIFT);
  return {
    uptime: Number(dv.getBigInt64(0, true)),
    loads: [load(8), load(16), load(24)],
    totalram: mem(32),
    freeram: mem(40),
    sharedram: mem(48),
    bufferram: mem(56),
    totalswap: mem(64),
    freeswap: mem(72),
    procs: dv.getUint16(80, true),
    totalhigh: mem(88),
    freehigh: mem(96),
    memUnit,
  };
}

// ---------------------------------------------------------------- linux_dirent64

/** d_ino (8) + d_off (8) + d_reclen (2) + d_type (1); the name follows. */
export const DIRENT64_HEADER = 19;

export interface Dirent64 {
  ino: bigint;
  /** Opaque position cookie of the *next* entry (usable with lseek on the directory). */
  off: bigint;
  /** DT_* value. */
  type: number;
  name: string;
}

/**
 * Decodes the records getdents64 wrote (`buf` = exactly the bytes it returned). A record
 * length shorter than a header plus NUL, or one that runs past the end, throws: every
 * step advances by at least 20 bytes, so the loop cannot spin.
 */
export function decodeDirents64(buf: Uint8Array): Dirent64[] {
  const dv = view(buf);
  const out: Dirent64[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (buf.length - pos < DIRENT64_HEADER) {
      throw new StructDecodeError('linux_dirent64', `truncated record header at offset ${pos}`);
    }
    const reclen = dv.getUint16(pos + 16, true);
    if (reclen < DIRENT64_HEADER + 1 || pos + reclen > buf.length) {
      throw new StructDecodeError('linux_dirent64', `bad d_reclen ${reclen} at offset ${pos}`);
    }
    const name = cString(buf, pos + DIRENT64_HEADER, reclen - DIRENT64_HEADER);
    out.push({
      ino: dv.getBigUint64(pos, true),
      off: dv.getBigInt64(pos + 8, true),
      type: buf[pos + 18],
      name,
    });
    pos += reclen;
  }
  return out;
}

/** Encodes dirents as the kernel lays them out (8-byte aligned records). For tests and fakes. */
export function encodeDirents64(entries: readonly Dirent64[]): Uint8Array {
  const enc = new TextEncoder();
  const parts = entries.map((e) => {
    const name = enc.encode(e.name);
    const reclen = (DIRENT64_HEADER + name.length + 1 + 7) & ~7;
    const rec = new Uint8Array(reclen);
    const dv = view(rec);
    dv.setBigUint64(0, e.ino, true);
    dv.setBigInt64(8, e.off, true);
    dv.setUint16(16, reclen, true);
    rec[18] = e.type;
    rec.set(name, DIRENT64_HEADER);
    return rec;
  });
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
