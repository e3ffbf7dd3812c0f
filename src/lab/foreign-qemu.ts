/**
 * A QEMU that vmi did not start, for tests and the bench: the lab's kernel and initramfs,
 * but an ordinary RAM backend (`-m`, anonymous memory: no shared file), no gdbstub, only
 * QMP and a serial console. Deliberately not src/qemu/launcher (that is vmi's own QEMU).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestConsole } from './console.js';
import { buildInitramfs } from './initramfs.js';
import { ensureKernel } from './kernel.js';
import { BASE_CMDLINE } from './lab.js';
import { LAB_WORKLOAD } from './workload.js';
import { findQemu } from '../qemu/launcher.js';

export interface ForeignQemu {
  dir: string;
  qemu: ChildProcess;
  qmpSocket: string;
  /** The guest's console (one client at a time: connect, run, close). */
  serialSocket: string;
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Boots the guest and waits until its workload is ready (the console says so). */
export async function bootForeignQemu(memMiB = 256): Promise<ForeignQemu> {
  const kernel = await ensureKernel();
  const initrd = await buildInitramfs(kernel);
  const dir = await mkdtemp(join(tmpdir(), 'vmi-foreign-'));
  const qmpSocket = join(dir, 'qmp.sock');
  const serialSocket = join(dir, 'serial.sock');
  const qemu = spawn(
    await findQemu(),
    [
      ...['-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', `${memMiB}M`],
      ...['-kernel', kernel.vmlinux, '-initrd', initrd.path, '-append', BASE_CMDLINE],
      ...['-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot', '-nic', 'none'],
      ...['-qmp', `unix:${qmpSocket},server=on,wait=off`],
      ...['-chardev', `socket,id=ser0,path=${serialSocket},server=on,wait=off`, '-serial', 'chardev:ser0'],
    ],
    { stdio: 'ignore' },
  );
  const stop = async (): Promise<void> => {
    qemu.kill('SIGKILL');
    // What vmi kept for this guest (targets/qmp foreignRunDir) is the caller's to remove.
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 240_000;
  try {
    for (;;) {
      if (Date.now() > deadline) throw new Error('foreign guest did not become ready');
      if (qemu.exitCode !== null) throw new Error(`qemu exited with ${qemu.exitCode}`);
      let con: GuestConsole | undefined;
      try {
        con = await GuestConsole.connect(serialSocket, { timeoutMs: 3000 });
        if ((await con.run(`cat ${LAB_WORKLOAD.readyFile}`, 3000)).status === 0) break;
      } catch {
        // not up yet
      } finally {
        con?.close();
      }
      await sleep(300);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { dir, qemu, qmpSocket, serialSocket, stop };
}
