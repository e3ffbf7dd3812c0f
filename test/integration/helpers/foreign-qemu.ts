/**
 * A QEMU that vmi did not start: the lab's kernel and initramfs, but an ordinary RAM
 * backend (`-m`, anonymous memory: no shared file), no gdbstub, only QMP and a serial
 * console. Deliberately not src/qemu/launcher.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GuestConsole } from '../../../src/lab/console.js';
import { buildInitramfs } from '../../../src/lab/initramfs.js';
import { ensureKernel } from '../../../src/lab/kernel.js';
import { BASE_CMDLINE } from '../../../src/lab/lab.js';
import { LAB_WORKLOAD } from '../../../src/lab/workload.js';
import { findQemu } from '../../../src/qemu/launcher.js';
import { foreignRunDir } from '../../../src/targets/qmp.js';

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
  const dir = await mkdtemp('/tmp/vmi-foreign-pm-');
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
    await rm(dir, { recursive: true, force: true });
    await rm(foreignRunDir(qmpSocket), { recursive: true, force: true });
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
