import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, existsSync, readSync, openSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GdbClient, GdbError, GdbTimeoutError } from '../../src/qemu/gdb.js';
import { QmpClient, QmpError } from '../../src/qemu/qmp.js';
import { findQemu } from '../../src/qemu/launcher.js';
import { X86_64_G_SIZE, cpl, decodeX86Regs, encodeForG, encodeX86Regs } from '../../src/qemu/x86-regs.js';

async function waitForFile(p: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(p)) {
    if (Date.now() > end) throw new Error(`${p} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function readRamFile(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe('QEMU 7.2 QMP + gdbstub clients', () => {
  let dir: string;
  let qemu: ChildProcess;
  let qmp: QmpClient;
  let gdb: GdbClient;
  let qmpPath: string;
  let gdbPath: string;
  let ramPath: string;
  let stderr = '';

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'vmi-qemu-clients-'));
    qmpPath = path.join(dir, 'q.sock');
    gdbPath = path.join(dir, 'g.sock');
    ramPath = path.join(dir, 'ram');
    // $VMI_QEMU, else qemu-system-x86_64 on PATH (as vmi finds it); none is a failure, not a skip.
    const qemuBin = await findQemu().catch((e: Error) => {
      throw new Error(
        `no QEMU for this suite (set VMI_QEMU or put qemu-system-x86_64 on PATH): ${e.message}`,
      );
    });
    qemu = spawn(
      qemuBin,
      [
        '-machine',
        'q35',
        '-accel',
        'tcg',
        '-nodefaults',
        '-nographic',
        '-S',
        '-smp',
        '2',
        '-m',
        '64M',
        '-object',
        `memory-backend-file,id=m,size=64M,mem-path=${ramPath},share=on`,
        '-machine',
        'memory-backend=m',
        '-qmp',
        `unix:${qmpPath},server=on,wait=off`,
        '-gdb',
        `unix:${gdbPath},server=on,wait=off`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    qemu.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitForFile(qmpPath, 10_000);
    await waitForFile(gdbPath, 10_000);
    qmp = await QmpClient.connect(qmpPath, { timeoutMs: 5000 });
    gdb = await GdbClient.connect(gdbPath, { timeoutMs: 5000 });
  });

  afterAll(async () => {
    gdb?.close();
    qmp?.close();
    if (qemu && qemu.exitCode === null) {
      qemu.kill('SIGKILL');
      await new Promise((r) => qemu.once('exit', r));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (stderr) console.log('qemu stderr:', stderr);
  });

  it('QMP: execute, hmp, errors', async () => {
    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    expect(status.running).toBe(false);
    const info = await qmp.hmp('info status');
    expect(info).toMatch(/VM status: paused/);
    await expect(qmp.execute('no-such-command')).rejects.toThrow(QmpError);
    await expect(qmp.execute('no-such-command')).rejects.toMatchObject({ qmpClass: 'CommandNotFound' });
  });

  it('gdb: register layout matches the reset state and `info registers`', async () => {
    const raw = await gdb.readRegisters();
    expect(raw.length).toBe(X86_64_G_SIZE);
    const r = decodeX86Regs(raw);
    const hmp = await qmp.hmp('info registers');
    console.log('reset regs:', {
      rip: r.rip,
      cs: r.cs,
      cr0: r.cr0,
      eflags: r.eflags,
      rdx: r.rdx,
      efer: r.efer,
    });
    expect(r.rip).toBe(0xfff0n);
    expect(r.cs).toBe(0xf000);
    expect(r.cr0).toBe(0x60000010n);
    expect(r.eflags).toBe(2);
    expect(cpl(r)).toBe(0);
    // cross-check against HMP
    const hx = (name: string): bigint => {
      const m = new RegExp(`\\b${name}=([0-9a-f]+)`, 'i').exec(hmp);
      if (!m) throw new Error(`${name} not in info registers: ${hmp}`);
      return BigInt('0x' + m[1]);
    };
    expect(r.rdx).toBe(hx('EDX'));
    expect(r.rip).toBe(hx('EIP'));
    expect(r.cr0).toBe(hx('CR0'));
    expect(r.cr4).toBe(hx('CR4'));
    expect(r.cr3).toBe(hx('CR3'));
    expect(r.efer).toBe(hx('EFER'));
    expect(BigInt(r.eflags)).toBe(hx('EFL'));
    // mxcsr reset value 0x1f80, fctrl 0x37f
    expect(raw.readUInt32LE(604)).toBe(0x1f80);
    expect(raw.readUInt32LE(316)).toBe(0x37f);
    expect(encodeX86Regs(r).equals(raw)).toBe(true);
  });

  it('gdb: physical-mode memory write/read matches the RAM file', async () => {
    await gdb.setPhysicalMemoryMode(true);
    const data = Buffer.alloc(5000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    await gdb.writeMemory(0x20000n, data);
    const back = await gdb.readMemory(0x20000n, data.length);
    expect(back.equals(data)).toBe(true);
    expect(readRamFile(ramPath, 0x20000, data.length).equals(data)).toBe(true);
    await gdb.setPhysicalMemoryMode(false);
  });

  it('gdb: write registers, single-step, hardware breakpoint, continue timeout', async () => {
    // real-mode code at 0x1000: nop; nop; inc ax; jmp $
    await gdb.setPhysicalMemoryMode(true);
    await gdb.writeMemory(0x1000n, Buffer.from([0x90, 0x90, 0x40, 0xeb, 0xfe]));
    await gdb.setPhysicalMemoryMode(false);
    const r = decodeX86Regs(await gdb.readRegisters());
    // QEMU 7.2 quirk: outside 64-bit code, G parses bases/CRs as 4 bytes: writing the g block
    // back unchanged shifts everything after fs_base (cr0 := 0, cr4 := old cr0, …)
    await gdb.writeRegisters(r.raw);
    const broken = decodeX86Regs(await gdb.readRegisters());
    expect(broken.cr0).toBe(0x10n); // the low 4 bytes of k_gs_base, with ET forced on
    expect(broken.cr4).toBe(0x60000010n); // what was cr0
    await gdb.writeRegisters(encodeForG(r, { cs64: false }));
    expect((await gdb.readRegisters()).equals(r.raw)).toBe(true);
    const changed = { ...r, cs: 0, rip: 0x1000n, rax: 0x1234n };
    // not in 64-bit code: QEMU parses bases/CRs as 4 bytes on G
    await gdb.writeRegisters(encodeForG(changed, { cs64: false }));
    const r2 = decodeX86Regs(await gdb.readRegisters());
    expect(r2.rip).toBe(0x1000n);
    expect(r2.cs).toBe(0);
    expect(r2.rax).toBe(0x1234n);
    expect(r2.cr0).toBe(0x60000010n);
    expect(r2.raw.subarray(236).equals(r.raw.subarray(236))).toBe(true);

    const s = await gdb.singleStep(5000);
    expect(s.signal).toBe(5);
    expect(decodeX86Regs(await gdb.readRegisters()).rip).toBe(0x1001n);

    await gdb.insertBreakpoint(1, 0x1003n);
    const stop = await gdb.continueAndWait(5000);
    expect(stop.signal).toBe(5);
    const r3 = decodeX86Regs(await gdb.readRegisters());
    expect(r3.rip).toBe(0x1003n);
    expect(r3.rax).toBe(0x1235n);
    await gdb.removeBreakpoint(1, 0x1003n);

    // jmp $ forever: continue must time out, interrupt, and leave the VM stopped
    const t0 = Date.now();
    await expect(gdb.continueAndWait(300)).rejects.toBeInstanceOf(GdbTimeoutError);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(gdb.running).toBe(false);
    const r4 = decodeX86Regs(await gdb.readRegisters());
    expect(r4.rip).toBe(0x1003n);
    const st = await qmp.execute<{ running: boolean }>('query-status');
    expect(st.running).toBe(false);
  });

  it('gdb: cycle timings', async () => {
    await gdb.insertBreakpoint(1, 0x1003n);
    const n = 50;
    let t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await gdb.continueAndWait(5000); // stops at once on the bp at rip
    const cont = Number(process.hrtime.bigint() - t) / 1e6 / n;
    await gdb.removeBreakpoint(1, 0x1003n);
    t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await gdb.singleStep(5000);
    const step = Number(process.hrtime.bigint() - t) / 1e6 / n;
    console.log(`continue→breakpoint→stop: ${cont.toFixed(3)} ms; single step: ${step.toFixed(3)} ms`);
  });

  it('gdb: errors are GdbError naming the command', async () => {
    await expect(gdb.selectThread('g', 'p1.99')).rejects.toThrow(/Hgp1\.99/);
    await expect(gdb.readMemory(0xffff_ffff_ffff_f000n, 16)).rejects.toThrow(GdbError);
  });

  it('gdb: listThreads with -smp 2, selectThread, monitor', async () => {
    const threads = await gdb.listThreads();
    expect(threads).toEqual(['p1.1', 'p1.2']);
    await gdb.selectThread('g', 'p1.2');
    const r2 = decodeX86Regs(await gdb.readRegisters());
    await gdb.selectThread('g', 'p1.1');
    const r1 = decodeX86Regs(await gdb.readRegisters());
    expect(r1.rip).toBe(0x1003n);
    expect(r2.rip).not.toBe(0x1003n);
    const out = await gdb.monitor('info status');
    expect(out).toMatch(/VM status: paused/);
  });

  it('gdb: per-packet latency (1000 × g)', async () => {
    const n = 1000;
    const replies = new Set<string>();
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) replies.add((await gdb.readRegisters()).toString('hex'));
    const us = Number(process.hrtime.bigint() - t) / 1e3 / n;
    // The VM is paused: 1000 replies are one register file, the one QEMU's monitor shows.
    expect(replies.size).toBe(1);
    const [only] = replies;
    expect(only.length).toBe(X86_64_G_SIZE * 2);
    const hmp = await qmp.hmp('info registers');
    const rip = /[ER]IP=([0-9a-f]+)/.exec(hmp); // EIP outside long mode
    expect(rip, hmp).not.toBeNull();
    expect(decodeX86Regs(Buffer.from(only, 'hex')).rip).toBe(BigInt(`0x${rip![1]}`));
    const t2 = process.hrtime.bigint();
    await gdb.setPhysicalMemoryMode(true);
    const mem = await gdb.readMemory(0n, 1 << 20);
    const mbps = 1 / (Number(process.hrtime.bigint() - t2) / 1e9);
    await gdb.setPhysicalMemoryMode(false);
    // The stub's physical read is the guest RAM as QEMU's shared RAM file holds it (below
    // 640 KiB: from 0xA0000 up, physical addresses are VGA and BIOS ROM, not the RAM file).
    expect(mem.length).toBe(1 << 20);
    const low = 0xa0000;
    expect(mem.subarray(0, low).equals(readRamFile(ramPath, 0, low))).toBe(true);
    expect(mem.subarray(0x1000, 0x1004).toString('hex')).not.toBe('00000000'); // the code written above
    console.log(`g round trip: ${us.toFixed(1)} µs/packet; m read: ${mbps.toFixed(1)} MiB/s`);
    expect(us).toBeLessThan(5000);
  });

  it('QMP stop/cont events reach QMP listeners and the gdb client', async () => {
    const events: string[] = [];
    qmp.onEvent((e) => events.push(e.event));
    const resumed = qmp.waitForEvent('RESUME', 5000);
    await qmp.execute('cont');
    await resumed;
    // the stub cannot tell us it was resumed behind its back; a QMP stop is reported to it
    const stopped = qmp.waitForEvent('STOP', 5000);
    const gdbStop = gdb.waitForStop(5000);
    await qmp.execute('stop');
    await stopped;
    const s = await gdbStop;
    expect(s.signal).toBe(2);
    expect(events).toContain('RESUME');
    expect(events).toContain('STOP');
    await expect(qmp.waitForEvent('NEVER', 100)).rejects.toThrow(/QMP event NEVER timed out after 100 ms/);
  });

  it('gdb: detach leaves the VM running; reconnecting to a running VM stops it', async () => {
    await gdb.detach();
    await new Promise((r) => setTimeout(r, 100));
    const st = await qmp.execute<{ running: boolean; status: string }>('query-status');
    expect(st.status).toBe('running');
    gdb = await GdbClient.connect(gdbPath, { timeoutMs: 5000 });
    const st2 = await qmp.execute<{ running: boolean; status: string }>('query-status');
    expect(st2.running).toBe(false);
    // no stale stop left over: a request works and gets its own reply
    expect((await gdb.readRegisters()).length).toBe(X86_64_G_SIZE);
    const h = await gdb.queryHaltReason();
    expect(h.thread).toMatch(/^p1\.[12]$/);
  });

  it('gdb: interrupt on a stopped VM times out cleanly; resume/interrupt works', async () => {
    await expect(gdb.interrupt(300)).rejects.toBeInstanceOf(GdbTimeoutError);
    await gdb.resume();
    expect(gdb.running).toBe(true);
    await expect(gdb.readRegisters()).rejects.toThrow(/running/);
    const s = await gdb.interrupt(2000);
    expect(s.signal).toBe(2);
    expect((await gdb.readRegisters()).length).toBe(X86_64_G_SIZE);
  });

  it('QMP and gdb: missing sockets give clear errors', async () => {
    await expect(QmpClient.connect(path.join(dir, 'nope.sock'))).rejects.toThrow(/nope\.sock/);
    await expect(GdbClient.connect(path.join(dir, 'nope.sock'))).rejects.toThrow(/nope\.sock/);
  });
});
