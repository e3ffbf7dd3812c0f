/**
 * Reading a kernel module's .modinfo section (NUL-separated key=value strings such as
 * "depends=", "name=dummy", "vermagic=...") straight from the ELF, so no kmod is needed.
 */

export class ElfFormatError extends Error {
  override name = 'ElfFormatError';
}

interface Section {
  name: string;
  offset: number;
  size: number;
}

function sections(elf: Buffer): Section[] {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new ElfFormatError('not an ELF file');
  if (elf[4] !== 2) throw new ElfFormatError('not a 64-bit ELF');
  if (elf[5] !== 1) throw new ElfFormatError('not a little-endian ELF');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shentsize < 64) throw new ElfFormatError(`bad section header size ${shentsize}`);
  if (shoff + shnum * shentsize > elf.length) throw new ElfFormatError('section headers past end of file');
  if (shstrndx >= shnum) throw new ElfFormatError('bad section name table index');
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const h = shoff + i * shentsize;
    const nameOff = elf.readUInt32LE(h);
    const offset = Number(elf.readBigUInt64LE(h + 0x18));
    const size = Number(elf.readBigUInt64LE(h + 0x20));
    const type = elf.readUInt32LE(h + 4);
    // SHT_NOBITS (8) occupies no file bytes.
    if (type !== 8 && offset + size > elf.length) throw new ElfFormatError(`section ${i} past end of file`);
    raw.push({ nameOff, offset, size: type === 8 ? 0 : size });
  }
  const strtab = raw[shstrndx]!;
  return raw.map((s) => {
    if (s.nameOff >= strtab.size) throw new ElfFormatError('section name outside the name table');
    const start = strtab.offset + s.nameOff;
    let end = elf.indexOf(0, start);
    if (end < 0 || end > strtab.offset + strtab.size) end = strtab.offset + strtab.size;
    return { name: elf.toString('latin1', start, end), offset: s.offset, size: s.size };
  });
}

/** Returns every .modinfo key with its values (keys like "alias" repeat). */
export function readModinfo(elf: Buffer): Map<string, string[]> {
  const sec = sections(elf).find((s) => s.name === '.modinfo');
  if (!sec) throw new ElfFormatError('no .modinfo section (not a kernel module?)');
  const info = new Map<string, string[]>();
  for (const item of elf.toString('latin1', sec.offset, sec.offset + sec.size).split('\0')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = item.slice(0, eq);
    const list = info.get(key) ?? [];
    list.push(item.slice(eq + 1));
    info.set(key, list);
  }
  return info;
}

/** The module's dependencies (the "depends=" list), [] when it has none. */
export function moduleDepends(elf: Buffer): string[] {
  const dep = readModinfo(elf).get('depends')?.[0] ?? '';
  return dep.split(',').filter((d) => d !== '');
}
