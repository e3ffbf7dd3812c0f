/**
 * elfs: the ELF images mapped in each process (Volatility's linux.elfs): every mapping
 * whose first bytes in the process's memory are `\x7fELF` (the executable, shared
 * libraries, the vDSO, and an ELF image in anonymous memory, which is how a reflectively
 * loaded one shows), with the ELF header read from that memory: e_type, e_machine, e_entry,
 * e_phnum, and the GNU build-id from the PT_NOTE segment. Volatility's `--dump` is not
 * offered (its File Output column is left out).
 *
 * Memory is read through /proc/PID/mem (src/sdk/process-memory.ts): what the process maps,
 * as the guest kernel shows it; mappings without read permission and [vvar]/[vsyscall] are
 * not asked.
 *
 * Cost: 1 batch for the process listing (none with --pid), 1 for comm and maps (+ a
 * follow-up for maps over 16 KiB), 1 for 64 bytes at the start of every readable mapping,
 * 1 for the program headers of the ELF ones, 1 for their PT_NOTE segments: 5 batches, more
 * only when the limits split one (2048 calls: ~1900 mappings a batch).
 */
import {
  ELF64_EHDR_SIZE,
  ELF_MACHINES,
  ELF_TYPES,
  gnuBuildId,
  loadBias,
  parseElfHeader,
  parseProgramHeaders,
  PT_NOTE,
  type ElfHeader,
  type ProgramHeader,
} from '../abi/linux/elf.js';
import {
  definePlugin,
  isReadableMapping,
  notAvailable,
  PID_OPTION,
  readMemory,
  readProcessMaps,
  type MapEntry,
  type MemoryRequest,
  type Row,
  unreadable,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  {
    name: 'Start',
    type: 'hex64',
    description: 'First address of the mapping that starts with the ELF header',
  },
  { name: 'End', type: 'hex64', description: 'Address just past that mapping' },
  {
    name: 'File Path',
    type: 'utf8',
    description: 'Mapped file, [vdso], or empty for an ELF image in anonymous memory',
  },
  { name: 'Type', type: 'utf8', description: 'e_type: ET_EXEC, ET_DYN (PIE or shared object)…' },
  { name: 'Machine', type: 'utf8', description: 'e_machine: EM_X86_64…' },
  {
    name: 'Entry',
    type: 'hex64',
    description: 'e_entry as the header holds it (for ET_DYN relative to the load address)',
  },
  { name: 'PhNum', type: 'int32', description: 'e_phnum: program headers' },
  {
    name: 'BuildID',
    type: 'utf8',
    description: 'GNU build-id (NT_GNU_BUILD_ID of a PT_NOTE segment) in hex; N/A when there is none',
  },
] as const;

/** PT_NOTE segments read per image at most, and bytes of each. */
const MAX_NOTES = 4;
const MAX_NOTE_BYTES = 4096;

const named = (table: Readonly<Record<number, string>>, v: number) => table[v] ?? String(v);

export const elfs = definePlugin({
  name: 'elfs',
  volatilityName: 'linux.elfs',
  description: 'Lists the ELF images mapped in the processes of the guest, with their ELF headers',
  version: '1.0.0',
  columns,
  options: { pid: PID_OPTION },
  async run(ctx) {
    const pids = await ctx.proc.selectPids(ctx.options.pid);
    const procs = await readProcessMaps(ctx, pids);
    ctx.progress(`reading the mapping starts of ${procs.length} processes`);
    const heads: { proc: (typeof procs)[number]; map: MapEntry }[] = [];
    for (const proc of procs)
      for (const map of proc.maps) if (isReadableMapping(map)) heads.push({ proc, map });
    const first = await readMemory(
      ctx,
      heads.map((h) => ({ pid: h.proc.pid, address: h.map.start, size: ELF64_EHDR_SIZE })),
    );
    interface Image {
      head: (typeof heads)[number];
      hdr: ElfHeader;
      phdrs: ProgramHeader[];
      buildId?: string;
      noteError?: string;
    }
    const images: Image[] = [];
    first.forEach((r, i) => {
      const hdr = parseElfHeader(r.data);
      if (hdr) images.push({ head: heads[i], hdr, phdrs: [] });
    });
    // The program header table, where the header says it is (inside the mapping).
    const phReqs: { img: Image; req: MemoryRequest }[] = [];
    for (const img of images) {
      const size = img.hdr.phnum * img.hdr.phentsize;
      const span = img.head.map.end - img.head.map.start;
      if (size <= 0 || size > 65536 || img.hdr.phoff <= 0n || img.hdr.phoff + BigInt(size) > span) continue;
      phReqs.push({
        img,
        req: { pid: img.head.proc.pid, address: img.head.map.start + img.hdr.phoff, size },
      });
    }
    const phs = await readMemory(
      ctx,
      phReqs.map((p) => p.req),
    );
    phs.forEach((r, i) => {
      const img = phReqs[i].img;
      img.phdrs = parseProgramHeaders(r.data, img.hdr, img.hdr.phoff);
    });
    // PT_NOTE segments at load bias + p_vaddr.
    const noteReqs: { img: Image; req: MemoryRequest }[] = [];
    for (const img of images) {
      const bias = loadBias(img.phdrs, img.head.map.start);
      for (const n of img.phdrs.filter((p) => p.type === PT_NOTE).slice(0, MAX_NOTES)) {
        const size = Number(n.filesz < BigInt(MAX_NOTE_BYTES) ? n.filesz : BigInt(MAX_NOTE_BYTES));
        const address = (bias + n.vaddr) & ((1n << 64n) - 1n);
        if (size > 0 && address < 1n << 63n)
          noteReqs.push({ img, req: { pid: img.head.proc.pid, address, size } });
      }
    }
    const notes = await readMemory(
      ctx,
      noteReqs.map((n) => n.req),
    );
    notes.forEach((r, i) => {
      const img = noteReqs[i].img;
      if (img.buildId) return;
      if (r.error) img.noteError = r.error.message;
      else img.buildId = gnuBuildId(r.data);
    });
    return images.map((img): Row<typeof columns> => ({
      PID: img.head.proc.pid,
      Process: img.head.proc.comm,
      Start: img.head.map.start,
      End: img.head.map.end,
      'File Path': img.head.map.path,
      Type: named(ELF_TYPES, img.hdr.type),
      Machine: named(ELF_MACHINES, img.hdr.machine),
      Entry: img.hdr.entry,
      PhNum: img.hdr.phnum,
      BuildID:
        img.buildId ?? (img.noteError ? unreadable(img.noteError) : notAvailable('no GNU build-id note')),
    }));
  },
});
