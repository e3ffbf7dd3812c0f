/**
 * The lab's sandboxed root service (src/lab/guest-programs/labsandbox.c), started and
 * stopped from the guest console for the root-context tests.
 */
import { expect } from 'vitest';
import type { LabGuest } from '../../../src/lab/lab.js';
import { guestProcs, guestSh } from './guest-shell.js';

export interface Sandbox {
  /** The busy worker's PID as the guest's init sees it. */
  pid: number;
  /** Its PID in its own PID namespace (what --victim-pid names). */
  nsPid: number;
}

export async function startSandbox(guest: LabGuest, flags: string): Promise<Sandbox> {
  await guestSh(guest, 'rm -f /tmp/sb.out');
  await guestSh(guest, `setsid /usr/sbin/labsandbox ${flags} </dev/null >/tmp/sb.out 2>&1 &`);
  for (let i = 0; i < 50; i++) {
    const out = await guestSh(guest, 'cat /tmp/sb.out 2>/dev/null; true');
    if (out.includes('labsandbox:')) throw new Error(`labsandbox ${flags} failed: ${out}`);
    if (out.includes('ready')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const procs = [...(await guestProcs(guest)).values()].filter((p) => p.comm === 'sandbox-busy');
  expect(procs, `one sandbox-busy for ${flags}`).toHaveLength(1);
  const pid = procs[0]!.pid;
  const nspid = /^NSpid:\s+(.*)$/m
    .exec(await guestSh(guest, `cat /proc/${pid}/status`))![1]!
    .trim()
    .split(/\s+/);
  return { pid, nsPid: Number(nspid[nspid.length - 1]) };
}

export async function stopSandbox(guest: LabGuest): Promise<void> {
  await guestSh(
    guest,
    `for d in /proc/[0-9]*; do case "$(cat $d/comm 2>/dev/null)" in sandbox-*) kill -9 \${d#/proc/};; esac; done; sleep 0.3; for c in /sys/fs/cgroup/sandbox-*; do [ -d "$c" ] && rmdir "$c"; done; true`,
  );
}
