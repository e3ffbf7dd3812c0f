/**
 * Incremental snapshots of vmi watch over a fake guest: a quiet tick costs the probes and
 * the listing only, a new process costs a read of its own files, a reused PID is caught
 * through loadavg's allocation cursor, and the delegating sources (modules, mounts,
 * listeners) run their whole plugin only when their fingerprint moved, with the same
 * events as full snapshots.
 */
import { describe, expect, it } from 'vitest';
import { Guest, type GuestRun, type PluginCall } from '../../src/api/guest.js';
import type { AttachedSession } from '../../src/runner/run-plugins.js';
import type { SessionStats } from '../../src/shadow/session.js';
import { sysno } from '../../src/abi/linux/syscalls.js';
import type { Call } from '../../src/sdk/syscall-types.js';
import { makeClock, type WatchEvent } from '../../src/watch/events.js';
import { allocatedSince, listenerInodes, parseLastPid } from '../../src/watch/incremental.js';
import type { SourceName } from '../../src/watch/sources.js';
import { watchLoop, type WatchedGuest } from '../../src/watch/watcher.js';
import { addFakeProcess, fakeProcGuest, fakeStat, type FakeGuest } from './helpers/fake-guest.js';

function apiGuest(g: FakeGuest): Guest {
  const attach = async (): Promise<AttachedSession> => ({
    stats: {
      attachMs: 0,
      batches: 0,
      calls: 0,
      runMs: 0,
      transport: 'doorbell',
      shadowPid: 0,
    } as SessionStats,
    run: async (calls) => g.run(calls),
    detach: async () => undefined,
  });
  const target = {
    guest: { name: 'g1', qmpSocket: '/x', ramSize: 0, runDir: '/x' },
    close: async () => undefined,
  };
  return new Guest(target, {}, { attach, stopShadow: async () => undefined });
}

const MODULES = 'ext4 1000 1 - Live 0x0000000000000000\nloop 200 0 - Live 0x0000000000000000\n';
const MOUNTS = '20 1 0:19 / / rw - rootfs rootfs rw\n';
const TCP_HEAD =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const tcpLine = (port: number, st: string, inode: number) =>
  `   0: 00000000:${port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0\n`;
const UNIX_HEAD = 'Num       RefCount Protocol Flags    Type St Inode Path\n';

function guest(): FakeGuest {
  const g = fakeProcGuest(0);
  for (const [pid, comm] of [
    [1, 'init'],
    [2, 'sh'],
  ] as const) {
    addFakeProcess(g, pid, comm);
    g.addLink(`/proc/${pid}/ns/mnt`, 'mnt:[4026531841]');
    g.addLink(`/proc/${pid}/ns/net`, 'net:[4026531840]');
    g.addFile(`/proc/${pid}/mountinfo`, MOUNTS);
    g.addFile(`/proc/${pid}/net/tcp`, TCP_HEAD);
    g.addFile(`/proc/${pid}/net/udp`, TCP_HEAD);
    g.addFile(`/proc/${pid}/net/unix`, UNIX_HEAD);
  }
  g.addFile('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n');
  g.addFile('/proc/loadavg', '0.00 0.00 0.00 1/3 2\n');
  g.addFile('/proc/modules', MODULES);
  return g;
}

function newProcess(g: FakeGuest, pid: number, comm: string, cursor = pid): void {
  addFakeProcess(g, pid, comm);
  g.addLink(`/proc/${pid}/ns/mnt`, 'mnt:[4026531841]');
  g.addLink(`/proc/${pid}/ns/net`, 'net:[4026531840]');
  g.addFile('/proc/loadavg', `0.00 0.00 0.00 1/3 ${cursor}\n`);
}

/** A new process with its parent and argv (NUL-separated, as /proc/PID/cmdline holds it). */
function forked(g: FakeGuest, pid: number, comm: string, ppid: number, cmdline: string): void {
  newProcess(g, pid, comm);
  g.addFile(`/proc/${pid}/stat`, fakeStat(pid, comm, { ppid }));
  g.addFile(`/proc/${pid}/cmdline`, cmdline);
}

const openat = sysno('openat');
/** Paths the calls open (openat's path argument). */
function opened(calls: readonly Call[]): string[] {
  return calls
    .filter((c) => c.nr === openat)
    .map((c) => {
      const a = c.args[1];
      return a.kind === 'in' ? new TextDecoder().decode(a.data).replace(/\0+$/, '') : '?';
    });
}

/** Runs ticks; `steps[i]` changes the guest before tick i; records guest entries per tick. */
async function ticks(g: FakeGuest, steps: ((g: FakeGuest) => void)[], sources: SourceName[], full = false) {
  const api = apiGuest(g);
  const stop = new AbortController();
  const perTick: Call[][][] = [];
  let tick = 0;
  const w: WatchedGuest = {
    name: 'g1',
    async runAll(calls: readonly PluginCall[]): Promise<GuestRun> {
      steps[tick]?.(g);
      const before = g.runs.length;
      const r = await api.runAll(calls);
      perTick.push(g.runs.slice(before));
      if (++tick >= steps.length) stop.abort();
      return r;
    },
  };
  const events: WatchEvent[] = [];
  await watchLoop(w, {
    intervalMs: 1,
    sources,
    signal: stop.signal,
    emit: async (e) => void events.push(e),
    now: makeClock(),
    fullSnapshots: full,
  });
  return { events, perTick };
}

describe('watch: incremental process snapshots', () => {
  it('a quiet tick is one guest entry (probes, the listing, the next PIDs); a new process elsewhere costs one more that reads only its files', async () => {
    const { events, perTick } = await ticks(
      guest(),
      [() => undefined, () => undefined, (g) => newProcess(g, 7, 'sleep')],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS, e.row.USER, e.row.PPID])).toEqual([
      ['process_started', 7, 'sleep --flag', 'alice', 1],
    ]);
    expect(perTick[1]).toHaveLength(1);
    // Behind the listing, the files of the 4 PIDs after the allocation cursor (2).
    const next = [3, 4, 5, 6].flatMap((pid) => ['stat', 'status', 'cmdline'].map((f) => `/proc/${pid}/${f}`));
    expect(perTick[1].flatMap(opened)).toEqual(['/proc/loadavg', '/etc/passwd', '/proc', ...next]);
    // PID 7 is not among them (threads could have taken 3..6).
    expect(perTick[2]).toHaveLength(2);
    expect(opened(perTick[2][1])).toEqual([
      '/proc/stat',
      '/proc/7/stat',
      '/proc/7/status',
      '/proc/7/cmdline',
    ]);
  });

  it('a new process at one of the next PIDs is read behind the listing, in the same guest entry', async () => {
    for (const sources of [['process'], ['process', 'mount', 'listener']] as SourceName[][]) {
      const full = await ticks(
        guest(),
        [() => undefined, () => undefined, (g) => newProcess(g, 4, 'sleep')],
        sources,
        true,
      );
      const { events, perTick } = await ticks(
        guest(),
        [() => undefined, () => undefined, (g) => newProcess(g, 4, 'sleep')],
        sources,
      );
      expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS, e.row.USER, e.row.PPID])).toEqual([
        ['process_started', 4, 'sleep --flag', 'alice', 1],
      ]);
      // The same row as the whole plugin's, CREATION TIME and START_MS included.
      expect(events.map((e) => e.row)).toEqual(full.events.map((e) => e.row));
      expect(perTick[2], sources.join()).toHaveLength(1);
    }
  });

  it('a PID taken over between two ticks with the allocation cursor put back (ns_last_pid) is caught by its new /proc/PID inode', async () => {
    const { events, perTick } = await ticks(
      guest(),
      [
        () => undefined,
        (g) => newProcess(g, 8, 'a', 10),
        () => undefined,
        (g) => {
          // 8 exited and root put the cursor back to 7: the next fork took 8, and the
          // cursor is 10 again (as at the tick before). A new directory, a new inode.
          g.remove('/proc/8');
          addFakeProcess(g, 8, 'nc');
          g.addFile('/proc/8/stat', fakeStat(8, 'nc', { start: 9000 }));
          g.addFile('/proc/8/cmdline', 'nc\0-l\0');
        },
      ],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([
      ['process_started', 8, 'a --flag'],
      ['process_exited', 8, 'a --flag'],
      ['process_started', 8, 'nc -l'],
    ]);
    // The quiet tick between read nothing again: the inode stayed.
    expect(perTick[2]).toHaveLength(1);
  });

  it('rows read behind the listing and rows read after it share the boot time of the tick (a clock step moves btime)', async () => {
    const steps: ((g: FakeGuest) => void)[] = [
      () => undefined,
      () => undefined,
      (g) => {
        g.addFile('/proc/stat', 'cpu  1 2 3 4\nintr 0\nctxt 10\nbtime 1700000005\nprocesses 3\n');
        newProcess(g, 3, 'early', 9); // one of the 4 PIDs after the last cursor (2)
        newProcess(g, 9, 'late', 9); // not: read by a batch of its own, with /proc/stat
      },
    ];
    const full = await ticks(guest(), steps, ['process'], true);
    const { events } = await ticks(guest(), steps, ['process']);
    expect(events.map((e) => [e.row.PID, e.row.START_MS])).toEqual(
      full.events.map((e) => [e.row.PID, e.row.START_MS]),
    );
    expect(events.map((e) => e.row.PID)).toEqual([3, 9]);
  });

  it('an exit needs no read; a known PID is not read again while the allocation cursor stays', async () => {
    const { events, perTick } = await ticks(
      guest(),
      [
        () => undefined,
        (g) => {
          for (const k of [...g.nodes.keys()])
            if (k.startsWith('/proc/2/') || k === '/proc/2') g.nodes.delete(k);
        },
        (g) => newProcess(g, 8, 'a'),
        () => undefined,
      ],
      ['process'],
    );
    expect(perTick[1]).toHaveLength(1);
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([
      ['process_exited', 2, 'sh --flag'],
      ['process_started', 8, 'a --flag'],
    ]);
    // The cursor did not move: no known PID is read again.
    expect(perTick[3]).toHaveLength(1);
  });

  it('a PID handed out again since the last tick is read again and, with a new start time, reported', async () => {
    const { events } = await ticks(
      guest(),
      [
        () => undefined,
        (g) => newProcess(g, 8, 'a', 10),
        (g) => {
          // Exit of 8, then the allocator wrapped (cursor 10 → pid_max → 8): 8 is new.
          g.addFile('/proc/8/stat', fakeStat(8, 'nc', { start: 9000 }));
          g.addFile('/proc/8/cmdline', 'nc\0-l\0');
          g.addFile('/proc/loadavg', '0.00 0.00 0.00 1/3 8\n');
        },
      ],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([
      ['process_started', 8, 'a --flag'],
      ['process_exited', 8, 'a --flag'],
      ['process_started', 8, 'nc -l'],
    ]);
  });
});

describe('watch: a process read between fork and exec', () => {
  it('is held back (up to 3 ticks) and reported with the program it runs; the baseline is never held back', async () => {
    const { events } = await ticks(
      guest(),
      [
        // In the baseline: a comm that is not argv[0]'s name (a script) makes no event.
        (g) => {
          g.addFile('/proc/2/cmdline', '/bin/sh\0/usr/bin/tool\0');
          addFakeProcess(g, 3, 'tool');
          g.addFile('/proc/3/cmdline', '/bin/sh\0/usr/bin/tool\0');
        },
        (g) => {
          // Forked by sh (PID 2), not yet exec'd: sh's name and argv.
          forked(g, 9, 'sh', 2, '/bin/sh\0/usr/bin/tool\0');
        },
        (g) => {
          g.addFile('/proc/9/stat', fakeStat(9, 'sleep', { ppid: 2 }));
          g.addFile('/proc/9/cmdline', 'sleep\0' + '1000\0');
        },
        // Exec replacing its memory (no argv), then the program not yet named (busybox's "exe"),
        // then itself.
        (g) => {
          newProcess(g, 10, 'exe');
          g.addFile('/proc/10/cmdline', '');
        },
        (g) => g.addFile('/proc/10/cmdline', 'sleep\0' + '5\0'),
        (g) => g.addFile('/proc/10/stat', fakeStat(10, 'sleep')),
        // Looks mid-exec for good (a script run by its interpreter): reported after 3 ticks held.
        (g) => {
          newProcess(g, 11, 'tool');
          g.addFile('/proc/11/cmdline', '/bin/sh\0/usr/bin/tool\0');
        },
        () => undefined,
        () => undefined,
        () => undefined,
      ],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.COMM, e.row.ARGS])).toEqual([
      ['process_started', 9, 'sleep', 'sleep 1000'],
      ['process_started', 10, 'sleep', 'sleep 5'],
      ['process_started', 11, 'tool', '/bin/sh /usr/bin/tool'],
    ]);
  });
});

describe('watch: a process that execs while its tick is still on', () => {
  it('is looked at again within the tick and reported by it, with its program', async () => {
    let execAt = -1;
    const { events, perTick } = await ticks(
      guest(),
      [
        () => undefined,
        () => undefined,
        (g) => {
          // Forked by sh (PID 2, `sh --flag`), not yet exec'd; PID 9 is past the PIDs read
          // behind the listing.
          forked(g, 9, 'sh', 2, 'sh\0--flag\0');
          // It execs once the guest has been entered twice more (the listing, its first look).
          execAt = g.runs.length + 2;
          g.beforeRun = (n) => {
            if (n !== execAt) return;
            g.addFile('/proc/9/stat', fakeStat(9, 'sleep', { ppid: 2 }));
            g.addFile('/proc/9/cmdline', 'sleep\0' + '1000\0');
          };
        },
      ],
      ['process'],
    );
    // Reported by the tick that found it (the loop ran 3 ticks), with sleep's name and argv.
    expect(events.map((e) => [e.kind, e.row.PID, e.row.COMM, e.row.ARGS])).toEqual([
      ['process_started', 9, 'sleep', 'sleep 1000'],
    ]);
    expect(perTick[2]).toHaveLength(3);
  });
});

describe('watch: a forked copy adopted by init before its exec', () => {
  it('is held back while it looks like a known process; a new program under init is not', async () => {
    const { events } = await ticks(
      guest(),
      [
        // The baseline: a login shell (argv[0] "-/bin/sh", comm sh).
        (g) => {
          addFakeProcess(g, 4, 'sh');
          g.addFile('/proc/4/cmdline', '-/bin/sh\0');
        },
        (g) => {
          // `sleep 1000 &` from a subshell that already exited: the copy of the shell is
          // init's child now, not yet exec'd. Beside it, a new daemon under init.
          forked(g, 12, 'sh', 1, '-/bin/sh\0');
          // In the login shell's session (its leader, pid 4).
          g.addFile('/proc/12/stat', fakeStat(12, 'sh', { ppid: 1, pgrp: 12, session: 4 }));
          forked(g, 13, 'daemon', 1, 'daemon\0-f\0');
        },
        (g) => {
          g.addFile('/proc/12/stat', fakeStat(12, 'sleep', { ppid: 1 }));
          g.addFile('/proc/12/cmdline', 'sleep\0' + '1000\0');
        },
      ],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.COMM, e.row.ARGS])).toEqual([
      ['process_started', 13, 'daemon', 'daemon -f'],
      ['process_started', 12, 'sleep', 'sleep 1000'],
    ]);
  });
});

describe('watch: a second instance of a program under init', () => {
  it('is reported at once: its twin leads neither its session nor its process group', async () => {
    const { events } = await ticks(
      guest(),
      [
        (g) => forked(g, 4, 'sleep', 1, 'sleep\0' + '3\0'),
        (g) => {
          // A second `sleep 3` under init, started by the shell (pid 2) like the first.
          forked(g, 12, 'sleep', 1, 'sleep\0' + '3\0');
          g.addFile('/proc/12/stat', fakeStat(12, 'sleep', { ppid: 1, pgrp: 2, session: 2 }));
        },
      ],
      ['process'],
    );
    expect(events.map((e) => [e.kind, e.row.PID, e.row.ARGS])).toEqual([['process_started', 12, 'sleep 3']]);
  });
});

describe('watch: incremental modules, mounts, listeners', () => {
  const steps: ((g: FakeGuest) => void)[] = [
    () => undefined,
    () => undefined,
    () => undefined,
    (g) => g.addFile('/proc/modules', `${MODULES}dummy 100 0 - Loading 0x0000000000000000\n`),
    (g) => g.addFile('/proc/1/mountinfo', `${MOUNTS}31 20 0:40 / /mnt rw - tmpfs none rw\n`),
    (g) => {
      for (const pid of [1, 2]) g.addFile(`/proc/${pid}/net/tcp`, `${TCP_HEAD}${tcpLine(8080, '0A', 777)}`);
      g.addFile('/proc/2/comm', 'sh\n');
      g.addLink('/proc/2/fd/3', 'socket:[777]');
    },
    () => undefined,
  ];
  const sources: SourceName[] = ['listener', 'module', 'mount'];

  it('reports the same events as full snapshots', async () => {
    const inc = await ticks(guest(), steps, sources);
    const full = await ticks(guest(), steps, sources, true);
    const show = (es: WatchEvent[]): unknown[] =>
      es.map((e) => [e.kind, e.row.Name ?? e.row.MOUNT_POINT ?? e.row['Source Port']]);
    expect(show(inc.events)).toEqual([
      ['module_loaded', 'dummy'],
      ['mount_added', '/mnt'],
      ['listener_opened', 8080],
    ]);
    expect(show(full.events)).toEqual(show(inc.events));
  });

  it('runs a whole plugin only when its fingerprint moved', async () => {
    const { perTick } = await ticks(guest(), steps, sources);
    // Tick 2 is quiet (tick 1 still settles the namespaces' fingerprints): probes and
    // listing, one entry.
    expect(perTick[2]).toHaveLength(1);
    expect(perTick[6]).toHaveLength(1);
    // A module appeared: lsmod runs (one entry more); a listener: sockstat runs.
    expect(perTick[3].flatMap(opened).filter((p) => p === '/proc/modules')).toHaveLength(2);
    expect(perTick[5].flatMap(opened)).toContain('/proc/2/fd');
  });
});

describe('watch: incremental probes parse the guest defensively', () => {
  it('reads the last PID of /proc/loadavg', () => {
    const enc = new TextEncoder();
    expect(parseLastPid(enc.encode('0.00 0.01 0.05 1/63 1234\n'))).toBe(1234);
    for (const bad of ['', '0.00 0.01 0.05 1/63', '0.00 0.01 0.05 1/63 -4', '0 0 0 1/1 99999999999'])
      expect(parseLastPid(enc.encode(bad))).toBeUndefined();
  });

  it('knows which PIDs the allocator handed out between two cursors, across the wrap', () => {
    expect(allocatedSince(5, 4, 9)).toBe(true);
    expect(allocatedSince(4, 4, 9)).toBe(false);
    expect(allocatedSince(10, 4, 9)).toBe(false);
    expect(allocatedSince(5, 5, 5)).toBe(false);
    // 32760 → wrap → 12
    expect(allocatedSince(32765, 32760, 12)).toBe(true);
    expect(allocatedSince(3, 32760, 12)).toBe(true);
    expect(allocatedSince(100, 32760, 12)).toBe(false);
  });

  it('keeps listening sockets only', () => {
    const enc = new TextEncoder();
    const tcp = enc.encode(`${TCP_HEAD}${tcpLine(22, '0A', 10)}${tcpLine(40000, '01', 11)}`);
    expect(listenerInodes('tcp', tcp)).toEqual([10n]);
    const udp = enc.encode(
      `${TCP_HEAD}${tcpLine(53, '07', 12)}${tcpLine(0, '07', 13)}${tcpLine(99, '01', 14)}`,
    );
    expect(listenerInodes('udp', udp)).toEqual([12n]);
    const unix = enc.encode(
      `${UNIX_HEAD}0000000000000000: 00000002 00000000 00010000 0001 01 20 /run/a.sock\n0000000000000000: 00000002 00000000 00000000 0001 03 21\n`,
    );
    expect(listenerInodes('unix', unix)).toEqual([20n]);
    expect(listenerInodes('tcp', enc.encode('garbage\n\u0000\u0001'))).toEqual([]);
  });
});
