/**
 * Locating the compressed kernel inside an x86 bzImage, so the uncompressed vmlinux ELF
 * (which QEMU boots directly through its PVH note, 3-4x faster under TCG) can be cached.
 *
 * The boot protocol's setup header (Documentation/arch/x86/boot.rst) says where the
 * payload is: "HdrS" at 0x202, the protocol version at 0x206, setup_sects at 0x1f1 (0 means
 * 4), and since protocol 2.08 payload_offset/payload_length at 0x248/0x24c, relative to the
 * protected-mode code that starts after the (setup_sects + 1) * 512 bytes of real-mode setup.
 */

export type PayloadFormat = 'xz' | 'gzip' | 'zstd' | 'lzma' | 'lz4' | 'bzip2' | 'lzo' | 'elf';

export interface KernelPayload {
  offset: number;
  /** Byte length when the header says it; a scan fallback gives the rest of the image. */
  length: number;
  format: PayloadFormat;
  /** 'header' when taken from the setup header, 'scan' when found by searching magic bytes. */
  source: 'header' | 'scan';
}

export class KernelImageError extends Error {
  override name = 'KernelImageError';
}

const MAGICS: ReadonlyArray<[PayloadFormat, Buffer]> = [
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['gzip', Buffer.from([0x1f, 0x8b, 0x08])],
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['bzip2', Buffer.from('BZh', 'ascii')],
  ['lzo', Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a])],
  ['lzma', Buffer.from([0x5d, 0x00, 0x00, 0x00])],
  ['elf', Buffer.from([0x7f, 0x45, 0x4c, 0x46])],
];

export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

export function isElf(buf: Buffer): boolean {
  return buf.length >= 4 && buf.subarray(0, 4).equals(ELF_MAGIC);
}

function formatAt(image: Buffer, offset: number): PayloadFormat | undefined {
  for (const [fmt, magic] of MAGICS) {
    if (
      offset + magic.length <= image.length &&
      image.subarray(offset, offset + magic.length).equals(magic)
    ) {
      return fmt;
    }
  }
  return undefined;
}

/** Reads the payload location from the setup header; undefined when the header lacks it. */
export function payloadFromHeader(image: Buffer): KernelPayload | undefined {
  if (image.length < 0x250) return undefined;
  if (image.toString('ascii', 0x202, 0x206) !== 'HdrS') return undefined;
  const version = image.readUInt16LE(0x206);
  if (version < 0x208) return undefined;
  const setupSects = image[0x1f1] === 0 ? 4 : image[0x1f1]!;
  const pmStart = (setupSects + 1) * 512;
  const offset = pmStart + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (length === 0 || offset + length > image.length) return undefined;
  const format = formatAt(image, offset);
  if (!format) return undefined;
  return { offset, length, format, source: 'header' };
}

/**
 * Finds the compressed payload of a bzImage: from the setup header when possible, else by
 * scanning for the first known compression magic (like scripts/extract-vmlinux does).
 */
export function findKernelPayload(image: Buffer): KernelPayload {
  if (isElf(image)) return { offset: 0, length: image.length, format: 'elf', source: 'header' };
  const fromHeader = payloadFromHeader(image);
  if (fromHeader) return fromHeader;
  let best: { offset: number; format: PayloadFormat } | undefined;
  // lzma's magic is weak (5d 00 00 00); only the strong magics take part in the scan.
  for (const [fmt, magic] of MAGICS) {
    if (fmt === 'lzma' || fmt === 'elf') continue;
    const at = image.indexOf(magic, 0x200);
    if (at >= 0 && (!best || at < best.offset)) best = { offset: at, format: fmt };
  }
  if (!best) throw new KernelImageError('no compressed kernel payload found in the image (not a bzImage?)');
  return { ...best, length: image.length - best.offset, source: 'scan' };
}

/** The host command that decompresses a payload of the given format to stdout. */
export function decompressorFor(format: PayloadFormat): [string, string[]] {
  switch (format) {
    case 'xz':
      // --single-stream: stop after the first stream and ignore trailing bytes.
      return ['xz', ['-dc', '--single-stream']];
    case 'zstd':
      return ['zstd', ['-dcq']];
    case 'gzip':
      return ['gzip', ['-dc']];
    case 'bzip2':
      return ['bzip2', ['-dc']];
    case 'lzma':
      return ['xz', ['-dc', '--format=lzma']];
    case 'lz4':
      return ['lz4', ['-dc']];
    case 'lzo':
      return ['lzop', ['-dc']];
    case 'elf':
      return ['cat', []];
  }
}
