/**
 * A writer (and a strict reader, for tests and inspection) of the cpio "newc" format
 * (magic 070701), the only archive format the Linux kernel unpacks as an initramfs.
 *
 * Layout of one record: a 110-byte ASCII header (magic + 13 eight-digit hex fields), the
 * NUL-terminated name padded so header+name is a multiple of 4, then the data padded to
 * a multiple of 4. The archive ends with a record named "TRAILER!!!".
 */

const MAGIC = '070701';
const HEADER_LEN = 110;
const TRAILER = 'TRAILER!!!';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer | string; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; major: number; minor: number; mode?: number };

/** One record as read back from an archive. */
export interface CpioRecord {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

export class CpioFormatError extends Error {
  override name = 'CpioFormatError';
}

export interface CpioWriteOptions {
  /** Modification time for every entry (seconds); 0 keeps archives reproducible. */
  mtime?: number;
  uid?: number;
  gid?: number;
}

/** Normalizes an archive path: no leading '/', no '.'/'..' components, no NUL. */
export function normalizeCpioPath(path: string): string {
  if (path.includes('\0')) throw new CpioFormatError(`cpio path contains NUL: ${JSON.stringify(path)}`);
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new CpioFormatError(`empty cpio path: ${JSON.stringify(path)}`);
  if (parts.includes('..')) throw new CpioFormatError(`cpio path escapes the root: ${JSON.stringify(path)}`);
  return parts.join('/');
}

function hex8(n: number, field: string): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new CpioFormatError(`cpio field ${field} out of range: ${n}`);
  }
  return n.toString(16).padStart(8, '0');
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

interface RawRecord {
  name: string;
  ino: number;
  mode: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

function encodeRecord(r: RawRecord, opts: Required<CpioWriteOptions>, out: Buffer[]): void {
  const name = Buffer.from(r.name + '\0', 'utf8');
  const header =
    MAGIC +
    hex8(r.ino, 'ino') +
    hex8(r.mode, 'mode') +
    hex8(opts.uid, 'uid') +
    hex8(opts.gid, 'gid') +
    hex8(r.nlink, 'nlink') +
    hex8(opts.mtime, 'mtime') +
    hex8(r.data.length, 'filesize') +
    hex8(0, 'devmajor') +
    hex8(0, 'devminor') +
    hex8(r.rdevMajor, 'rdevmajor') +
    hex8(r.rdevMinor, 'rdevminor') +
    hex8(name.length, 'namesize') +
    hex8(0, 'check');
  out.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(HEADER_LEN + name.length)));
  if (r.data.length > 0) out.push(r.data, Buffer.alloc(pad4(r.data.length)));
}

/**
 * Builds a newc archive from entries, in the given order (the kernel creates entries in
 * archive order, so parents must come before children). Duplicate paths are rejected.
 */
export function writeCpio(entries: readonly CpioEntry[], options: CpioWriteOptions = {}): Buffer {
  const opts: Required<CpioWriteOptions> = { mtime: 0, uid: 0, gid: 0, ...options };
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let ino = 1;
  for (const e of entries) {
    const name = normalizeCpioPath(e.path);
    if (seen.has(name)) throw new CpioFormatError(`duplicate cpio path: ${name}`);
    seen.add(name);
    const perm = (m: number | undefined, dflt: number): number => {
      const v = m ?? dflt;
      if (!Number.isInteger(v) || v < 0 || v > 0o7777)
        throw new CpioFormatError(`bad mode for ${name}: ${v}`);
      return v;
    };
    let rec: RawRecord;
    switch (e.type) {
      case 'dir':
        rec = {
          name,
          ino,
          mode: S_IFDIR | perm(e.mode, 0o755),
          nlink: 2,
          rdevMajor: 0,
          rdevMinor: 0,
          data: Buffer.alloc(0),
        };
        break;
      case 'file':
        rec = {
          name,
          ino,
          mode: S_IFREG | perm(e.mode, 0o644),
          nlink: 1,
          rdevMajor: 0,
          rdevMinor: 0,
          data: typeof e.data === 'string' ? Buffer.from(e.data, 'utf8') : e.data,
        };
        break;
      case 'symlink':
        if (e.target === '' || e.target.includes('\0'))
          throw new CpioFormatError(`bad symlink target for ${name}`);
        rec = {
          name,
          ino,
          mode: S_IFLNK | 0o777,
          nlink: 1,
          rdevMajor: 0,
          rdevMinor: 0,
          data: Buffer.from(e.target, 'utf8'),
        };
        break;
      case 'char':
      case 'block':
        rec = {
          name,
          ino,
          mode: (e.type === 'char' ? S_IFCHR : S_IFBLK) | perm(e.mode, 0o600),
          nlink: 1,
          rdevMajor: e.major,
          rdevMinor: e.minor,
          data: Buffer.alloc(0),
        };
        break;
    }
    encodeRecord(rec, opts, out);
    ino++;
  }
  encodeRecord(
    { name: TRAILER, ino: 0, mode: 0, nlink: 1, rdevMajor: 0, rdevMinor: 0, data: Buffer.alloc(0) },
    opts,
    out,
  );
  return Buffer.concat(out);
}

function field(buf: Buffer, at: number, index: number, what: string): number {
  const s = buf.toString('ascii', at + 6 + index * 8, at + 6 + index * 8 + 8);
  if (!/^[0-9a-fA-F]{8}$/.test(s))
    throw new CpioFormatError(`bad hex in cpio ${what} at offset ${at}: ${JSON.stringify(s)}`);
  return parseInt(s, 16);
}

/**
 * Parses a newc archive up to its trailer. Throws CpioFormatError on anything malformed
 * (bad magic, bad hex, truncation, missing trailer); never reads past the buffer.
 */
export function readCpio(buf: Buffer): CpioRecord[] {
  const records: CpioRecord[] = [];
  let at = 0;
  for (;;) {
    if (at + HEADER_LEN > buf.length) throw new CpioFormatError(`truncated cpio header at offset ${at}`);
    const magic = buf.toString('ascii', at, at + 6);
    if (magic !== MAGIC)
      throw new CpioFormatError(`bad cpio magic at offset ${at}: ${JSON.stringify(magic)}`);
    const ino = field(buf, at, 0, 'ino');
    const mode = field(buf, at, 1, 'mode');
    const uid = field(buf, at, 2, 'uid');
    const gid = field(buf, at, 3, 'gid');
    const nlink = field(buf, at, 4, 'nlink');
    const mtime = field(buf, at, 5, 'mtime');
    const filesize = field(buf, at, 6, 'filesize');
    const rdevMajor = field(buf, at, 9, 'rdevmajor');
    const rdevMinor = field(buf, at, 10, 'rdevminor');
    const namesize = field(buf, at, 11, 'namesize');
    field(buf, at, 12, 'check');
    if (namesize < 1) throw new CpioFormatError(`empty cpio name at offset ${at}`);
    const nameStart = at + HEADER_LEN;
    const nameEnd = nameStart + namesize;
    if (nameEnd > buf.length) throw new CpioFormatError(`truncated cpio name at offset ${at}`);
    if (buf[nameEnd - 1] !== 0) throw new CpioFormatError(`cpio name not NUL-terminated at offset ${at}`);
    const name = buf.toString('utf8', nameStart, nameEnd - 1);
    const dataStart = nameEnd + pad4(HEADER_LEN + namesize);
    const dataEnd = dataStart + filesize;
    if (dataEnd > buf.length) throw new CpioFormatError(`truncated cpio data for ${JSON.stringify(name)}`);
    if (name === TRAILER) return records;
    records.push({
      name,
      ino,
      mode,
      uid,
      gid,
      nlink,
      mtime,
      rdevMajor,
      rdevMinor,
      data: Buffer.from(buf.subarray(dataStart, dataEnd)),
    });
    at = dataEnd + pad4(filesize);
  }
}
