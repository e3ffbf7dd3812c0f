/**
 * The migration-stream reader on a synthetic QEMU 7.2-shaped stream: a configuration
 * section, an iterative `ram` section (block list, a data page, a zero page, a continued
 * page), a `cpu` device section and the JSON vmdesc at the end.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { extractRam, findVmdesc, parseVcpus, streamMachineType } from '../../src/capture/migration-stream.js';

const dir = mkdtempSync(join(tmpdir(), 'vmi-stream-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const u8 = (v: number): Buffer => Buffer.from([v]);
const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const u64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};
const str = (s: string): Buffer => Buffer.concat([u8(s.length), Buffer.from(s, 'latin1')]);

const cpuFields = [
  { name: 'env.regs', type: 'uint64', size: 8, array_len: 16 },
  { name: 'env.eip', type: 'uint64', size: 8 },
  { name: 'env.eflags', type: 'uint64', size: 8 },
  { name: 'env.hflags', type: 'uint32', size: 4 },
  { name: 'env.segs', type: 'struct', size: 20, array_len: 6 },
  { name: 'env.cr[0]', type: 'uint64', size: 8 },
  { name: 'env.cr[2]', type: 'uint64', size: 8 },
  { name: 'env.cr[3]', type: 'uint64', size: 8 },
  { name: 'env.cr[4]', type: 'uint64', size: 8 },
  { name: 'env.efer', type: 'uint64', size: 8 },
  { name: 'env.star', type: 'uint64', size: 8 },
  { name: 'env.lstar', type: 'uint64', size: 8 },
  { name: 'env.kernelgsbase', type: 'uint64', size: 8 },
];

function cpuBody(index: number): Buffer {
  const regs = Array.from({ length: 16 }, (_, i) => u64(BigInt(index * 0x100 + i)));
  const segs = Array.from({ length: 6 }, (_, i) =>
    Buffer.concat([u32(i * 8), u64(i === 4 ? 0x7f0000001000n : 0n), u32(0xffffffff), u32(0)]),
  );
  return Buffer.concat([
    ...regs,
    u64(0xffffffff81a592ebn + BigInt(index)),
    u64(0x246n),
    u32(0),
    ...segs,
    u64(0x80050033n),
    u64(0n),
    u64(0x62bc000n),
    u64(0x750ef0n),
    u64(0xd01n),
    u64(0x23001000000000n),
    u64(0xffffffff81c00080n),
    u64(0n),
  ]);
}

function buildStream(): Buffer {
  const page = Buffer.alloc(4096, 0xab);
  const page2 = Buffer.alloc(4096, 0xcd);
  const ramSize = 16 * 4096;
  const vmdesc = Buffer.from(
    JSON.stringify({
      page_size: 4096,
      devices: [{ name: 'cpu', instance_id: 0, vmsd_name: 'cpu', version: 12, fields: cpuFields }],
    }),
  );
  return Buffer.concat([
    u32(0x5145564d),
    u32(3),
    u8(0x07),
    u32(10),
    Buffer.from('pc-q35-7.2'),
    // START ram: block list
    u8(0x01),
    u32(2),
    str('ram'),
    u32(0),
    u32(4),
    u64(BigInt(ramSize + 4096) | 0x04n),
    str('pc.ram'),
    u64(BigInt(ramSize)),
    str('pc.bios'),
    u64(4096n),
    u64(0x10n),
    u8(0x7e),
    u32(2),
    // PART ram: a page, a continued page, a zero page with fill, a page of another block
    u8(0x02),
    u32(2),
    u64(0x3000n | 0x08n),
    str('pc.ram'),
    page,
    u64(0x5000n | 0x08n | 0x20n),
    page2,
    u64(0x7000n | 0x02n | 0x20n),
    u8(0x11),
    u64(0x0n | 0x08n),
    str('pc.bios'),
    Buffer.alloc(4096, 0xee),
    u64(0x10n),
    u8(0x7e),
    u32(2),
    // END ram
    u8(0x03),
    u32(2),
    u64(0x10n),
    u8(0x7e),
    u32(2),
    // FULL cpu sections for two vCPUs
    u8(0x04),
    u32(5),
    str('cpu'),
    u32(0),
    u32(12),
    cpuBody(0),
    u8(0x7e),
    u32(5),
    u8(0x04),
    u32(6),
    str('cpu'),
    u32(1),
    u32(12),
    cpuBody(1),
    u8(0x7e),
    u32(6),
    u8(0x1f), // EOF
    u8(0x06),
    u32(vmdesc.length),
    vmdesc,
  ]);
}

describe('migration stream reader', () => {
  const stream = buildStream();

  it('reads the machine type and the vmdesc', () => {
    expect(streamMachineType(stream)).toBe('pc-q35-7.2');
    expect(findVmdesc(stream).devices[0].name).toBe('cpu');
    expect(() => streamMachineType(Buffer.from('not a stream at all'))).toThrow(
      /not a QEMU migration stream/,
    );
    expect(() => findVmdesc(stream.subarray(0, stream.length - 3))).toThrow(/vmdesc/);
  });

  it('reads every vCPU: GPRs in QEMU order, rip, segments, CRs, EFER, LSTAR', () => {
    const v = parseVcpus(stream);
    expect(v.map((c) => c.index)).toEqual([0, 1]);
    expect(v[1].regs[0]).toBe(0x100n);
    expect(v[1].regs[15]).toBe(0x10fn);
    expect(v[1].rip).toBe(0xffffffff81a592ecn);
    expect(v[0].segs[1].selector).toBe(8);
    expect(v[0].segs[4].base).toBe(0x7f0000001000n);
    expect(v[0].cr3).toBe(0x62bc000n);
    expect(v[0].cr4).toBe(0x750ef0n);
    expect(v[0].efer).toBe(0xd01n);
    expect(v[0].lstar).toBe(0xffffffff81c00080n);
    expect(v[0].cstar).toBe(0n);
  });

  it('rebuilds the raw RAM of the main block from the ram sections', async () => {
    const out = join(dir, 'ram.raw');
    const r = await extractRam(stream, out);
    expect(r).toEqual({ block: 'pc.ram', size: 16 * 4096, pages: 3 });
    const ram = readFileSync(out);
    expect(ram.length).toBe(16 * 4096);
    expect(ram.subarray(0x3000, 0x4000).every((b) => b === 0xab)).toBe(true);
    expect(ram.subarray(0x5000, 0x6000).every((b) => b === 0xcd)).toBe(true);
    expect(ram.subarray(0x7000, 0x8000).every((b) => b === 0x11)).toBe(true);
    expect(ram.subarray(0, 0x3000).every((b) => b === 0)).toBe(true);
  });

  it('rejects an unsupported RAM encoding', async () => {
    const s = Buffer.from(stream);
    const at = s.indexOf(Buffer.concat([u64(0x5000n | 0x08n | 0x20n)]));
    s.writeBigUInt64BE(0x5000n | 0x40n, at);
    await expect(extractRam(s, join(dir, 'bad.raw'))).rejects.toThrow(/unsupported RAM encoding/);
  });
});
