/**
 * The process-memory plugins (issue 17) on one booted lab guest, each against what the
 * guest's own shell says: the commands this test types into the lab's bash (through its
 * FIFO, from the console), the RWX page of labmem from /proc/PID/maps and its bytes from
 * `dd` of /proc/PID/mem, ELF header fields from `od` of the mapped files, the libraries of
 * /proc/PID/maps, and a string this test plants in labmem's heap (its address from
 * labmem's own log, its bytes from `dd` of /proc/PID/mem) for the regex and YARA scans.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, type LabGuest } from '../../src/lab/lab.js';
import { LAB_WORKLOAD, parseLabPids } from '../../src/lab/workload.js';
import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';
import { bash } from '../../src/plugins/bash.js';
import { elfs } from '../../src/plugins/elfs.js';
import { library_list } from '../../src/plugins/library_list.js';
import { malfind } from '../../src/plugins/malfind.js';
import { vmaregexscan } from '../../src/plugins/vmaregexscan.js';
import { vmayarascan } from '../../src/plugins/vmayarascan.js';
import { runPluginsOnGuest, type PluginsRun } from '../../src/runner/run-plugins.js';
import { records } from '../helpers/records.js';
import { guestSh } from './helpers/guest-shell.js';

const NAME = 'p17b-mem';
const M = LAB_WORKLOAD.memory;
const tag = randomBytes(4).toString('hex');
const TYPED = [`echo vmi-typed-${tag}-one`, `true vmi-typed-${tag}-two`];
const PLANTED = `vmi-planted-${tag}-needle`;

/** Bytes from `od -A n -t x1` output. */
const odBytes = (out: string): number[] =>
  out
    .split(/\s+/)
    .filter((x) => /^[0-9a-f]{2}$/.test(x))
    .map((x) => parseInt(x, 16));
const le = (b: number[], at: number, n: number): bigint =>
  b.slice(at, at + n).reduceRight((v, x) => (v << 8n) | BigInt(x), 0n);

describe('process-memory plugins on the lab guest', () => {
  let guest: LabGuest;
  let run: PluginsRun;
  const tables: Record<string, Record<string, RowValue>[]> = {};
  let bashPid = 0;
  let labmemPid = 0;
  let typedFrom = 0;
  let typedTo = 0;
  let planted = 0n;
  let rwx = { start: 0n, end: 0n, bytes: [] as number[] };
  let mapsText = '';
  const dir = mkdtempSync(join(tmpdir(), 'p17b-yara-'));

  beforeAll(async () => {
    await labDown(NAME);
    guest = await labUp({ name: NAME });
    const pids = parseLabPids(await guestSh(guest, `cat ${LAB_WORKLOAD.pidsFile}`));
    bashPid = pids.bash;
    labmemPid = pids.labmem;
    // Type the commands into the bash, as its terminal would, and wait until it ran them.
    typedFrom = Number((await guestSh(guest, 'date +%s')).trim());
    await guestSh(guest, `printf '%s\\n' ${TYPED.map((c) => `'${c}'`).join(' ')} > ${M.bashFifo}`);
    await guestSh(
      guest,
      `i=0; while ! grep -q 'vmi-typed-${tag}-one' /var/log/lab-bash.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.5`,
    );
    typedTo = Number((await guestSh(guest, 'date +%s')).trim());
    // Plant a string in labmem's heap; its address from labmem's own log.
    await guestSh(guest, `echo ${PLANTED} > ${M.labmemFifo}`);
    const log = await guestSh(
      guest,
      `i=0; while ! grep -q '${PLANTED}' /var/log/lab-labmem.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; cat /var/log/lab-labmem.log`,
    );
    const m = new RegExp(`stored 0x([0-9a-f]+) \\d+ ${PLANTED}`).exec(log);
    planted = BigInt('0x' + m![1]);
    const inMem = await guestSh(
      guest,
      `dd if=/proc/${labmemPid}/mem bs=1 skip=$((0x${planted.toString(16)})) count=${PLANTED.length} 2>/dev/null`,
    );
    expect(inMem.trim()).toBe(PLANTED);
    // The RWX page: /proc/PID/maps, and its first 64 bytes by dd of /proc/PID/mem.
    mapsText = await guestSh(guest, `cat /proc/${labmemPid}/maps`);
    const line = mapsText.split('\n').find((l) => / rwxp 00000000 00:00 0\s*$/.test(l))!;
    const [s, e] = line.split(' ')[0].split('-');
    rwx = {
      start: BigInt('0x' + s),
      end: BigInt('0x' + e),
      bytes: odBytes(
        await guestSh(
          guest,
          `dd if=/proc/${labmemPid}/mem bs=4096 skip=$((0x${s} / 4096)) count=1 2>/dev/null | od -A n -t x1 -N 64 -v`,
        ),
      ),
    };
    writeFileSync(
      join(dir, 'planted.yar'),
      `rule vmi_planted { strings: $needle = "${PLANTED}" condition: $needle }\n`,
    );
    run = await runPluginsOnGuest(guest, [
      { plugin: bash, options: {} },
      { plugin: malfind, options: {} },
      { plugin: elfs, options: { pid: [labmemPid] } },
      { plugin: library_list, options: {} },
      { plugin: vmaregexscan, options: { pattern: `vmi-planted-${tag}-[a-z]+`, pid: [labmemPid] } },
      { plugin: vmayarascan, options: { 'yara-file': join(dir, 'planted.yar') } },
    ]);
    for (const t of run.tables as ResultTable[]) tables[t.plugin] = records(t);
    console.log('plugin ms on the lab guest:', run.pluginMs);
  }, 400_000);

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await labDown(NAME);
  });

  it('runs every plugin without failures', () => {
    expect(run.failures).toEqual([]);
    expect(Object.keys(tables).sort()).toEqual(
      ['bash', 'elfs', 'library_list', 'malfind', 'vmaregexscan', 'vmayarascan'].sort(),
    );
  });

  it('bash: the commands the lab ran at boot and the ones this test typed, with their times', () => {
    const rows = tables.bash.filter((r) => r.PID === bashPid);
    const cmds = rows.map((r) => r.Command);
    for (const c of [...M.bashCommands, ...TYPED]) expect(cmds).toContain(c);
    for (const c of TYPED) {
      const r = rows.find((x) => x.Command === c)!;
      const t = (r.CommandTime as Date).getTime() / 1000;
      expect(t).toBeGreaterThanOrEqual(typedFrom);
      expect(t).toBeLessThanOrEqual(typedTo);
      expect(r.TimeSource).toBe('#');
      expect(r.Process).toBe('bash');
    }
  });

  it('malfind: the RWX page of labmem at the address and with the bytes the guest shows', () => {
    const rows = tables.malfind.filter((r) => r.PID === labmemPid);
    expect(rows).toHaveLength(1);
    const r = rows[0];
    expect([r.Start, r.End, r.Protection, r.Path]).toEqual([rwx.start, rwx.end, 'rwx', '']);
    expect(rwx.bytes).toHaveLength(64);
    expect(r.Hexdump).toBe(rwx.bytes.map((b) => b.toString(16).padStart(2, '0')).join(' '));
    expect(String(r.Hexdump).replace(/ /g, '').startsWith(M.rwxCode)).toBe(true);
    expect(String(r.Disasm)).toMatch(
      new RegExp(
        `^0x${rwx.start.toString(16)}: xor eax,eax; .*: mov eax,3Ch; .*: xor edi,edi; .*: syscall; .*: ret`,
      ),
    );
  });

  it('elfs: labmem, libc and ld.so with the header fields od reads from the files', async () => {
    const rows = tables.elfs;
    for (const path of [
      '/usr/sbin/labmem',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]) {
      const b = odBytes(await guestSh(guest, `od -A n -t x1 -N 4096 -v ${path}`));
      const row = rows.find((r) => r['File Path'] === path && r.Type !== 'ET_NONE');
      expect(row, path).toBeDefined();
      const eType = Number(le(b, 16, 2));
      expect(row!.Type).toBe(eType === 3 ? 'ET_DYN' : eType === 2 ? 'ET_EXEC' : String(eType));
      expect(Number(le(b, 18, 2))).toBe(62);
      expect(row!.Machine).toBe('EM_X86_64');
      expect(row!.Entry).toBe(le(b, 24, 8));
      expect(row!.PhNum).toBe(Number(le(b, 56, 2)));
      // The build-id: the GNU note (namesz 4, descsz 20, type 3, "GNU\0") in the file's first page.
      const hex = b.map((x) => x.toString(16).padStart(2, '0')).join('');
      const at = hex.indexOf('040000001400000003000000474e5500');
      if (at >= 0) expect(row!.BuildID).toBe(hex.slice(at + 32, at + 32 + 40));
      // Where /proc/PID/maps maps the file's offset 0.
      const first = mapsText
        .split('\n')
        .find((l) => l.endsWith(path) && / 00000000 /.test(l))!
        .split('-')[0];
      expect(row!.Start).toBe(BigInt('0x' + first));
    }
  });

  it('library_list: the shared objects /proc/PID/maps shows in labmem, at their bases', () => {
    const rows = tables.library_list.filter((r) => r.Pid === labmemPid);
    const libs = new Map<string, bigint>();
    for (const l of mapsText.split('\n')) {
      const m = /^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ \d+\s+(\/\S*\.so[.\d]*)$/.exec(l);
      if (!m) continue;
      const start = BigInt('0x' + m[1]);
      if (!libs.has(m[2]) || start < libs.get(m[2])!) libs.set(m[2], start);
    }
    expect([...libs.keys()].sort()).toEqual([
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
    for (const [path, base] of libs) {
      const r = rows.find((x) => x.Path === path);
      expect(r, path).toBeDefined();
      expect([r!.LoadAddress, r!.Mapped, r!.Name]).toEqual([base, true, 'labmem']);
    }
    // Statically linked programs have no link map: no rows for them.
    expect(tables.library_list.filter((r) => r.Pid === bashPid)).toEqual([]);
  });

  it('vmaregexscan: the planted string at the address labmem stored it', () => {
    const rows = tables.vmaregexscan;
    const hit = rows.find((r) => r.Offset === planted);
    expect(hit).toBeDefined();
    expect([hit!.PID, hit!.Text, hit!.Path]).toEqual([labmemPid, PLANTED, '[heap]']);
    expect(rows.every((r) => r.PID === labmemPid)).toBe(true);
  });

  it('vmayarascan: the rule matches the planted string where labmem stored it', () => {
    const rows = tables.vmayarascan;
    const hit = rows.find((r) => r.Offset === planted && r.PID === labmemPid);
    expect(hit).toBeDefined();
    expect([hit!.Rule, hit!.Component, hit!.Value]).toEqual(['vmi_planted', '$needle', PLANTED]);
  });
});
