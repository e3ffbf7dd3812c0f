// What one quiet `vmi watch` tick costs in the guest (issue 16; numbers in
// bench/results-watch.md's notes): guest entries, system calls and the shadow's own CPU
// time (/proc/PID/schedstat, ns) over N quiet
// ticks at 1 Hz, for the attach as a Guest makes it now (a quick context re-check riding
// on the tick's one batch, while no other vmi takes the guest) against one that
// re-verifies the whole context each tick (a new Guest per tick: the attach as it was).
// Run: VMI_RUNTIME_ROOT=... node bench/tick-cost.mjs [ticks]   (after npm run build)
import console from 'node:console';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadavg } from 'node:os';
import { GuestConsole } from '../dist/lab/console.js';
import { labDown, labUp } from '../dist/lab/lab.js';
import { openGuest } from '../dist/api/index.js';
import { incrementalSources } from '../dist/watch/incremental.js';

const TICKS = Number(process.argv[2] ?? 20);
const name = 'keepattach-tick';
const run = async (con, cmd) => {
  const r = await con.run(cmd, 60_000);
  if (r.status !== 0) throw new Error(`${cmd}: ${r.output}`);
  return r.output;
};
/** The shadow's time on a CPU, ms: /proc/PID/schedstat's first field (ns, kernel/sched/stats.c). */
const cpuMs = async (con, pid) => {
  const s = await run(con, `cat /proc/${pid}/schedstat`);
  return Number(s.trim().split(/\s+/)[0]) / 1e6;
};

await labDown(name);
const guest = await labUp({ name });
const con = await GuestConsole.connect(guest.serialSocket);
const sources = incrementalSources(['process', 'module', 'mount', 'listener']);
const opts = { server: false, holdAwake: false, keepShadow: true };
const tick = async (g) => {
  sources.beginTick();
  const r = await g.runAll(sources.calls);
  if (r.failures.length) throw new Error(r.failures[0].message);
  return r.timing;
};
try {
  let g = await openGuest(name, opts);
  for (let i = 0; i < 4; i++) await tick(g); // baseline, then settled fingerprints
  const files = (
    await run(
      con,
      'wc -c /proc/loadavg /etc/passwd /proc/modules /proc/1/mountinfo /proc/1/net/tcp /proc/1/net/tcp6 /proc/1/net/udp /proc/1/net/udp6 /proc/1/net/unix 2>/dev/null; ls /proc | grep -c "^[0-9]"',
    )
  ).trim();
  console.log(`probe file sizes (bytes) and processes:\n${files}`);
  for (const mode of ['reuse', 'full']) {
    const timings = [];
    if (mode === 'full') {
      await g.close();
      g = await openGuest(name, opts);
    }
    const first = await tick(g);
    const pid = first.shadowPid;
    const c0 = await cpuMs(con, pid);
    const t0 = performance.now();
    for (let i = 0; i < TICKS; i++) {
      const next = performance.now() + 1000;
      if (mode === 'full') {
        await g.close();
        g = await openGuest(name, opts);
      }
      timings.push(await tick(g));
      await sleep(Math.max(0, next - performance.now()));
    }
    const secs = (performance.now() - t0) / 1000;
    const c1 = await cpuMs(con, pid);
    const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(
      `${mode}: ${TICKS} quiet ticks in ${secs.toFixed(1)} s; per tick: batches p50 ${p50(timings.map((t) => t.batches))}, calls p50 ${p50(timings.map((t) => t.calls))}, context check ${[...new Set(timings.map((t) => t.contextCheck))].join('/')}, context ms p50 ${p50(timings.map((t) => t.contextMs)).toFixed(1)}, attach ms p50 ${p50(timings.map((t) => t.attachMs)).toFixed(1)}, total ms p50 ${p50(timings.map((t) => t.totalMs)).toFixed(1)}; shadow CPU ${((c1 - c0) / secs / 10).toFixed(2)}% (${((c1 - c0) / TICKS).toFixed(2)} ms per tick), shadow pid ${pid}, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  }
  await g.close();
} finally {
  con.close?.();
  await labDown(name);
}
