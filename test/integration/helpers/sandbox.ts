/**
 * The lab's sandboxed root service (src/lab/guest-programs/labsandbox.c), started and
 * stopped from the guest console for the root-context tests.
 *
 * A sandbox is found by descent from the labsandbox the console started (`$!`), never by
 * name alone: a task an earlier test could not stop must not be taken for this one (one CI
 * run had every later test fail on such a leftover). Leftovers are reported with what the
 * guest says of them (state, wait channel, kernel stack) so that their cause can be found.
 */
import { expect } from 'vitest';
import type { LabGuest } from '../../../src/lab/lab.js';
import { guestProcs, guestSh, type GuestProc } from './guest-shell.js';

export interface Sandbox {
  /** The busy worker's PID as the guest's init sees it. */
  pid: number;
  /** Its PID in its own PID namespace (what --victim-pid names). */
  nsPid: number;
}

const isSandbox = (p: GuestProc): boolean => p.comm.startsWith('sandbox-') && p.state !== 'Z';

/** What the guest says of the tasks it still runs under a sandbox name. */
async function describeLeftovers(guest: LabGuest, procs: GuestProc[]): Promise<string> {
  const pids = procs.map((p) => p.pid).join(' ');
  return guestSh(
    guest,
    `for p in ${pids}; do echo "== $p"; grep -E '^(Name|State|PPid|NSpid|SigPnd|ShdPnd|SigBlk|TracerPid)' /proc/$p/status; echo "wchan $(cat /proc/$p/wchan 2>/dev/null)"; cat /proc/$p/stack 2>/dev/null; cat /proc/$p/cgroup 2>/dev/null; done 2>&1; true`,
  );
}

export async function startSandbox(guest: LabGuest, flags: string): Promise<Sandbox> {
  await stopSandbox(guest);
  await guestSh(guest, 'rm -f /tmp/sb.out /tmp/sb.pid');
  await guestSh(
    guest,
    `setsid /usr/sbin/labsandbox ${flags} </dev/null >/tmp/sb.out 2>&1 & echo $! >/tmp/sb.pid`,
  );
  const root = Number((await guestSh(guest, 'cat /tmp/sb.pid')).trim());
  for (let i = 0; i < 50; i++) {
    const out = await guestSh(guest, 'cat /tmp/sb.out 2>/dev/null; true');
    if (out.includes('labsandbox:')) throw new Error(`labsandbox ${flags} failed: ${out}`);
    if (out.includes('ready')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const procs = await guestProcs(guest);
  const ours = (p: GuestProc): boolean => {
    for (let q: GuestProc | undefined = p, n = 0; q && n < 8; q = procs.get(q.ppid), n++)
      if (q.pid === root) return true;
    return false;
  };
  const busy = [...procs.values()].filter((p) => p.comm === 'sandbox-busy' && p.state !== 'Z' && ours(p));
  expect(busy, `one sandbox-busy under labsandbox ${root} for ${flags}`).toHaveLength(1);
  const pid = busy[0]!.pid;
  const nspid = /^NSpid:\s+(.*)$/m
    .exec(await guestSh(guest, `cat /proc/${pid}/status`))![1]!
    .trim()
    .split(/\s+/);
  return { pid, nsPid: Number(nspid[nspid.length - 1]) };
}

/** Kills every sandbox task and waits until the guest shows none; fails naming any that stay. */
export async function stopSandbox(guest: LabGuest): Promise<void> {
  let left: GuestProc[] = [];
  for (let i = 0; i < 20; i++) {
    await guestSh(
      guest,
      `for d in /proc/[0-9]*; do case "$(cat $d/comm 2>/dev/null)" in sandbox-*) kill -9 \${d#/proc/};; esac; done; true`,
    );
    left = [...(await guestProcs(guest)).values()].filter(isSandbox);
    if (left.length === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  await guestSh(
    guest,
    'for c in /sys/fs/cgroup/sandbox-*; do [ -d "$c" ] && rmdir "$c"; done 2>/dev/null; true',
  );
  if (left.length > 0)
    throw new Error(`sandbox tasks survive SIGKILL in the guest:\n${await describeLeftovers(guest, left)}`);
}
