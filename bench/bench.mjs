// vmi benchmark: vmi pslist/psaux (doorbell and trap) against the same work done natively
// in the guest (psnative) and busybox ps, at several process counts, in one run.
// Usage: npm run bench   (env: BENCH_RUNS, BENCH_RESIDENT_RUNS, BENCH_RESIDENT_WARMUP, BENCH_RESIDENT_WARMUP_MS, BENCH_NATIVE_RUNS, BENCH_LEVELS, BENCH_GUEST, BENCH_CLI_RUNS)
//        BENCH_ONLY=cli npm run bench   CLI start-up only (printed, results files left alone)
//        BENCH_ONLY=capture npm run bench   capture pause and size, and the wall time of
//          `vmi plugins run pslist` from the shell, fresh and with a resident shadow, on the
//          256 MiB lab guest (bench/results-capture.json and bench/results-capture.md)
//        BENCH_ONLY=watch npm run bench   vmi watch on its own lab guest: latency from a process's
//          exec in the guest to its process_started event (p50/p95), and the guest CPU the
//          watch costs, at 1 Hz and 10 Hz (bench/results-watch.json and bench/results-watch.md)
//        BENCH_ONLY=memory npm run bench   attach and pslist on a 256 MiB and an 8 GiB lab
//          guest (q35: RAM split around the PCI hole) in the same run, runs interleaved
//          (bench/results-memory.json and bench/results-memory.md)
//        BENCH_ONLY=xview npm run bench   the cross-view plugins on a lab guest: psxview's whole
//          PID sweep and a bounded one, sockxview, against pslist and sockstat in the same run
//          (bench/results-xview.json and bench/results-xview.md); modxview, check_syscall, check_idt, tracing
//          (kallsyms read + host page walk) beside lsmod
//        BENCH_ONLY=sql npm run bench   vmi query's pslist⋈sockstat join on a lab guest, wall time
//          of the CLI, next to the two plugins run plainly (one attach) in the same interleaved
//          rounds (bench/results-sql.json and bench/results-sql.md)
//        BENCH_ONLY=foreign npm run bench   a foreign QEMU (ordinary RAM backend, no shared
//          file, attached through its QMP socket only) beside a lab guest of the same size:
//          attach and pslist through QEMU's process memory (doorbell) and through the
//          gdbstub (trap), runs interleaved (bench/results-foreign.json and .md); and capture
//          create of that guest, RAM from QEMU's process memory vs a full migration stream:
//          guest pause and capture wall time, interleaved (BENCH_FOREIGN_CAPTURE_MIB=256,1024
//          adds a 1 GiB foreign guest; BENCH_FOREIGN_CAPTURE_RUNS, default 3)
//        BENCH_ONLY=serve npm run bench   CLI wall time, command start → table, of `vmi plugins
//          run pslist` on a 256 MiB lab guest: fresh shadow, resident shadow (no server), and
//          through a `vmi serve` (bin/run.js fast path) on this Node and on the system's Node,
//          and through the native client (bin/vmi → dist/vmi-client); with Node start and the fast client's module load beside them, runs interleaved
//          (bench/results-serve.json and bench/results-serve.md)
//        BENCH_ONLY=devices npm run bench   captures of a 256 MiB lab guest without devices and
//          with a virtio disk (ext4, mounted) and NIC: guest pause and capture time, plain and
//          --with-disks, and replay-to-first-result (clone rebuilt, pslist table); "before"
//          replays the disk guest's capture without its device model, as vmi did before
//          issue 19 (bench/results-devices.json and bench/results-devices.md)
//        BENCH_ONLY=realvm npm run bench   the same for the debian lab flavour (Debian 12 +
//          systemd, SeaBIOS boot, virtio disk + NIC) at 256 MiB and 1 GiB: pause, capture
//          time, replay-to-first-result, plain and --with-disks; "before" = the capture
//          replayed without its device model (bench/results-realvm.json and .md)
// Progress goes to stderr; the table to stdout; bench/results.json and bench/results.md.
/* global AbortController */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout } from 'node:timers';
import { fileURLToPath } from 'node:url';
import { format } from 'prettier';
import { createCapture } from '../dist/capture/create.js';
import { GuestConsole } from '../dist/lab/console.js';
import { labDown, labUp } from '../dist/lab/lab.js';
import { foreignRunDir, openForeignGuest } from '../dist/targets/qmp.js';
import { bootForeignQemu } from '../dist/lab/foreign-qemu.js';
import { builtinPlugins } from '../dist/plugins/index.js';
import { openGuest } from '../dist/api/index.js';
import { runPluginsOnGuest } from '../dist/runner/run-plugins.js';
import { makeClock } from '../dist/watch/events.js';
import { watchGuests } from '../dist/watch/watch.js';
import { RedirectSession } from '../dist/shadow/session.js';
import { startResidentShadow, stopResidentShadow } from '../dist/shadow/resident.js';
import { installedNode, isTooOld, pins } from '../bin/node-runtime.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const GUEST = process.env.BENCH_GUEST ?? 'bench';
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const NATIVE_RUNS = Number(process.env.BENCH_NATIVE_RUNS ?? 20);
const PS_RUNS = Number(process.env.BENCH_PS_RUNS ?? 10);
const RESIDENT_RUNS = Number(process.env.BENCH_RESIDENT_RUNS ?? 15);
const RESIDENT_WARMUP = Number(process.env.BENCH_RESIDENT_WARMUP ?? 30);
/**
 * And at least this long (ms): a fresh API process reaches its steady pace only after
 * ~50 runs at 117 processes (V8 grows its young generation and tiers up the hot code;
 * medians of 10 runs from a fresh process fell 34 → 27 → 24 → 29 → 22 → 22 → 21 ms with
 * psnative flat at ~19), so a count alone left the first blocks of a series in the
 * warm-up (results.md of 2026-11-30 18:49: block ratios 2.4, 2.2, 1.7, 1.3, 1.3 against a
 * psnative steady within 2%). Time scales with the work: more processes, fewer runs.
 */
const RESIDENT_WARMUP_MS = Number(process.env.BENCH_RESIDENT_WARMUP_MS ?? 5000);
/** Resident runs per block, and psnative passes per block beside them (vmiSeries). */
const RESIDENT_BLOCK = Number(process.env.BENCH_RESIDENT_BLOCK ?? 3);
const NATIVE_BLOCK_RUNS = Number(process.env.BENCH_NATIVE_BLOCK_RUNS ?? 5);
/** Idle gap before each run of the "apart" series (vmi resident and psnative alike). */
const GAP_MS = 100;
const LEVELS = (process.env.BENCH_LEVELS ?? '50,500,2000').split(',').map(Number);
const CLI_RUNS = Number(process.env.BENCH_CLI_RUNS ?? 10);
const ONLY_CLI = process.env.BENCH_ONLY === 'cli';
const ONLY_CAPTURE = process.env.BENCH_ONLY === 'capture';
const ONLY_MEMORY = process.env.BENCH_ONLY === 'memory';
const ONLY_FOREIGN = process.env.BENCH_ONLY === 'foreign';
const FOREIGN_RUNS = Number(process.env.BENCH_FOREIGN_RUNS ?? 10);
const FOREIGN_MEM_MIB = 256;
const FOREIGN_CAPTURE_RUNS = Number(process.env.BENCH_FOREIGN_CAPTURE_RUNS ?? 3);
const FOREIGN_CAPTURE_MIB = (process.env.BENCH_FOREIGN_CAPTURE_MIB ?? String(FOREIGN_MEM_MIB))
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
const ONLY_WATCH = process.env.BENCH_ONLY === 'watch';
const ONLY_XVIEW = process.env.BENCH_ONLY === 'xview';
const ONLY_SQL = process.env.BENCH_ONLY === 'sql';
const SQL_RUNS = Number(process.env.BENCH_SQL_RUNS ?? 7);
const ONLY_DEVICES = process.env.BENCH_ONLY === 'devices';
const ONLY_SERVE = process.env.BENCH_ONLY === 'serve';
const SERVE_RUNS = Number(process.env.BENCH_SERVE_RUNS ?? 7);
const DEVICES_RUNS = Number(process.env.BENCH_DEVICES_RUNS ?? 3);
const ONLY_REALVM = process.env.BENCH_ONLY === 'realvm';
const REALVM_RUNS = Number(process.env.BENCH_REALVM_RUNS ?? 2);
const XVIEW_RUNS = Number(process.env.BENCH_XVIEW_RUNS ?? 5);
const WATCH_SAMPLES = Number(process.env.BENCH_WATCH_SAMPLES ?? 50);
/** Series as MODE:INTERVAL_MS: full snapshots (--full-snapshots) and incremental ones (the default). */
const WATCH_SERIES = (
  process.env.BENCH_WATCH_SERIES ?? 'full:1000,full:100,incremental:1000,incremental:100,incremental:50'
)
  .split(',')
  .map((x) => {
    const [mode, ms] = x.split(':');
    return { mode, intervalMs: Number(ms) };
  });
const WATCH_CPU_SECONDS = Number(process.env.BENCH_WATCH_CPU_SECONDS ?? 10);
const MEMORY_RUNS = Number(process.env.BENCH_MEMORY_RUNS ?? 10);
const MEMORY_SIZES_MIB = (process.env.BENCH_MEMORY_SIZES ?? '256,8192').split(',').map(Number);
const CAPTURE_RUNS = Number(process.env.BENCH_CAPTURE_RUNS ?? 5);
const GETPID_HOT = 200;
const GETPID_IDLE = 10;

const log = (m) => process.stderr.write(`[bench] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}
const min = (xs) => Math.min(...xs);

/** Least-squares line through [processes, ms] points: slope in µs/process, intercept, R². */
function linearFit(points) {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  }
  const slope = sxy / sxx;
  return { slopeUs: slope * 1000, interceptMs: my - slope * mx, r2: (sxy * sxy) / (sxx * syy) };
}
const stat = (xs) => ({ median: median(xs), min: min(xs), samples: xs });

/** Parses `tag key=value ...` lines printed by psnative. */
function parseKv(output, tag) {
  const line = output.split('\n').find((l) => l.startsWith(`${tag} `));
  if (!line) throw new Error(`no "${tag}" line in guest output: ${output.trim().slice(0, 300)}`);
  const kv = {};
  for (const m of line.matchAll(/(\w+)=(\d+)/g)) kv[m[1]] = Number(m[2]);
  return kv;
}

async function guestRun(con, cmd, timeoutMs = 300_000) {
  const r = await con.run(cmd, timeoutMs);
  if (r.status !== 0) throw new Error(`guest command failed (${r.status}): ${cmd}: ${r.output.trim()}`);
  return r.output;
}

async function procCount(con) {
  return Number((await guestRun(con, "ls /proc | grep -c '^[0-9]'")).trim());
}

/** One vmi command-equivalent: attach, run the plugin, detach. */
async function vmiRun(guest, plugin, transport) {
  const t0 = performance.now();
  const r = await runPluginsOnGuest(guest, [{ plugin, options: {} }], { transport });
  const totalMs = performance.now() - t0;
  if (r.failures.length > 0) {
    throw new Error(`${plugin.name}/${transport}: ${r.failures.map((f) => f.message).join('; ')}`);
  }
  const table = r.tables[0];
  if (table.errors.length > 0) log(`  ${plugin.name}/${transport} errors: ${table.errors.join('; ')}`);
  return {
    attachMs: r.session.attachMs,
    // Of the attach: establishing and verifying the shadow's root context (fresh shadow),
    // or re-verifying it (resident shadow).
    contextMs: r.session.contextMs,
    pluginMs: r.pluginMs[plugin.name],
    totalMs,
    // Time inside session.run(): guest work + transport, without the plugin's parsing.
    runMs: r.session.runMs,
    batches: r.session.batches,
    calls: r.session.calls,
    rows: table.rows.length,
  };
}

/**
 * One call of a program that holds the guest open through the API (openGuest): the
 * figures a user's program gets, resident shadow and all.
 */
async function apiRun(api, plugin) {
  // The host CPU this process spent on the run (every thread: the main one, V8's GC
  // helpers): on a 2-core machine it is taken from the core QEMU's vCPU runs on.
  const cpu0 = process.cpuUsage();
  const r = await api.runAll([{ plugin }]);
  const cpu = process.cpuUsage(cpu0);
  if (r.failures.length > 0)
    throw new Error(`${plugin.name}/api: ${r.failures.map((f) => f.message).join('; ')}`);
  const result = r.results[0];
  if (result.errors.length > 0) log(`  ${plugin.name}/api errors: ${result.errors.join('; ')}`);
  const t = r.timing;
  return {
    attachMs: t.attachMs,
    contextMs: t.contextMs,
    pluginMs: t.pluginMs[plugin.name],
    totalMs: t.totalMs,
    runMs: t.runMs,
    hostCpuMs: (cpu.user + cpu.system) / 1000,
    batches: t.batches,
    calls: t.calls,
    rows: result.table.rows.length,
  };
}

/**
 * `count` runs of `plugin`. With `beside` (the guest's console), psnative runs in the guest
 * in blocks of NATIVE_BLOCK_RUNS passes before every RESIDENT_BLOCK runs (with the same gap
 * between passes as between runs): the guest's own speed drifts by up to 2× from one
 * minute to the next under TCG, so the resident series is compared with the psnative
 * passes made beside it (`native`: median and min of the block medians), not with those
 * made minutes earlier. `native.ratio`: the median over blocks of (the block's median vmi
 * total / the psnative median just before it): each block against its own psnative, so
 * that a change of the guest's speed between blocks moves one block's ratio, not all.
 */
async function vmiSeries(guest, plugin, transport, { runs: count = RUNS, gapMs = 0, api, beside } = {}) {
  const runs = [];
  const blocks = [];
  for (let i = 0; i < count; i++) {
    if (beside && i % RESIDENT_BLOCK === 0) {
      const gap = gapMs > 0 ? ` --gap-ms ${gapMs}` : '';
      blocks.push(
        parseKv(await guestRun(beside, `psnative -n ${NATIVE_BLOCK_RUNS}${gap}`), 'psnative').median_us /
          1000,
      );
    }
    if (gapMs > 0) await sleep(gapMs);
    runs.push(api ? await apiRun(api, plugin) : await vmiRun(guest, plugin, transport));
    const last = runs[runs.length - 1];
    log(
      `  ${plugin.name}/${transport} run ${i + 1}/${count}: attach ${last.attachMs.toFixed(0)} ms, ` +
        `plugin ${last.pluginMs.toFixed(1)} ms (batches ${last.runMs.toFixed(1)}), total ${last.totalMs.toFixed(1)} ms, ` +
        `${last.batches} batches, ${last.calls} calls, ${last.rows} rows`,
    );
  }
  const pick = (k) => stat(runs.map((r) => r[k]));
  const blockRatios = blocks.map(
    (n, b) => median(runs.slice(b * RESIDENT_BLOCK, (b + 1) * RESIDENT_BLOCK).map((r) => r.totalMs)) / n,
  );
  return {
    transport,
    attachMs: pick('attachMs'),
    contextMs: pick('contextMs'),
    pluginMs: pick('pluginMs'),
    totalMs: pick('totalMs'),
    runMs: pick('runMs'),
    ...(api ? { hostCpuMs: pick('hostCpuMs') } : {}),
    batches: median(runs.map((r) => r.batches)),
    calls: median(runs.map((r) => r.calls)),
    rows: median(runs.map((r) => r.rows)),
    ...(beside
      ? {
          native: {
            median: median(blocks),
            min: min(blocks),
            blocks,
            blockRatios,
            ratio: median(blockRatios),
          },
        }
      : {}),
  };
}

/** getpid batches through the doorbell: back to back, then each after 1 s idle. */
async function getpidLatency(guest) {
  const session = await RedirectSession.attach(guest, { transport: 'doorbell' });
  const call = [{ nr: 39, args: [] }];
  try {
    const hot = [];
    for (let i = 0; i < GETPID_HOT; i++) {
      const t0 = performance.now();
      const [res] = await session.run(call);
      hot.push(performance.now() - t0);
      if (res.ret <= 0n) throw new Error(`getpid returned ${res.ret}`);
    }
    const idle = [];
    for (let i = 0; i < GETPID_IDLE; i++) {
      await sleep(1000);
      const t0 = performance.now();
      await session.run(call);
      idle.push(performance.now() - t0);
    }
    return { backToBackMs: stat(hot), afterIdle1sMs: stat(idle), shadowPid: session.stats.shadowPid };
  } finally {
    await session.detach();
  }
}

/** CPU (% of one vCPU) that process `pid` used over `seconds`, from its /proc stat ticks. */
async function cpuPercent(con, pid, seconds) {
  const ticks = async () => {
    const stat = (await guestRun(con, `cat /proc/${pid}/stat`)).trim();
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime, USER_HZ = 100
  };
  const t0 = performance.now();
  const a = await ticks();
  await sleep(seconds * 1000);
  const b = await ticks();
  return ((b - a) / 100 / ((performance.now() - t0) / 1000)) * 100;
}

/**
 * The resident shadow: attach → first result, pslist through it, and what it costs the
 * guest while idle, against a plain 10 ms nanosleep loop measured the same way.
 */
async function residentShadow(guest, con, plugins) {
  const out = {};
  const started = await startResidentShadow(guest, { transport: 'doorbell' });
  try {
    const first = [];
    for (let i = 0; i < 15; i++) {
      await sleep(200 + Math.random() * 300);
      const t0 = performance.now();
      const session = await RedirectSession.attach(guest, { transport: 'doorbell' });
      await session.run([{ nr: 39, args: [] }]);
      first.push(performance.now() - t0);
      await session.detach();
    }
    out.attachToFirstResultMs = stat(first);
    // A resident shadow serves a long-lived collector (a daemon, a notebook): its JIT is
    // warm. Warm-up runs first (untimed, as psnative's own warm-up pass), then two series
    // like psnative's two: back to back, and 100 ms apart (each run then finds the shadow
    // asleep and pays its wake-up). More runs than elsewhere: single runs vary ±50%.
    // Through the public API (openGuest), as a user's program runs it.
    const api = await openGuest(guest.name, { transport: 'doorbell', keepShadow: true });
    try {
      const warm = [];
      const warmStart = performance.now();
      while (warm.length < RESIDENT_WARMUP || performance.now() - warmStart < RESIDENT_WARMUP_MS)
        warm.push((await apiRun(api, plugins.pslist)).totalMs);
      out.warmup = {
        runs: warm.length,
        firstTenMs: median(warm.slice(0, 10)),
        lastTenMs: median(warm.slice(-10)),
      };
      log(
        `  ${warm.length} warm-up runs in ${((performance.now() - warmStart) / 1000).toFixed(1)} s: ` +
          `median of the first 10 ${out.warmup.firstTenMs.toFixed(1)} ms, of the last 10 ${out.warmup.lastTenMs.toFixed(1)} ms`,
      );
      out.pslist = await vmiSeries(guest, plugins.pslist, 'doorbell', {
        runs: RESIDENT_RUNS,
        api,
        beside: con,
      });
      out.pslistApart = await vmiSeries(guest, plugins.pslist, 'doorbell', {
        runs: RESIDENT_RUNS,
        gapMs: GAP_MS,
        api,
        beside: con,
      });
    } finally {
      await api.close();
    }
    log('idle cost of the resident shadow (10 s)');
    out.idleCpuPercent = await cpuPercent(con, started.shadowPid, 10);
    out.wakeLine = started.wakeLine;
  } finally {
    await stopResidentShadow(guest);
  }
  const napPid = Number((await guestRun(con, 'psnative nap 10 >/dev/null 2>&1 & echo $!')).trim());
  try {
    out.naiveNap10msCpuPercent = await cpuPercent(con, napPid, 10);
  } finally {
    await guestRun(con, `kill ${napPid}`);
  }
  log(
    `  resident: attach→first result ${out.attachToFirstResultMs.median.toFixed(2)} ms, idle ` +
      `${out.idleCpuPercent.toFixed(2)}% (10 ms nap loop ${out.naiveNap10msCpuPercent.toFixed(2)}%)`,
  );
  return out;
}

async function measureLevel(guest, con, plugins, level) {
  const out = { extra: level };
  out.procs = await procCount(con);
  log(`level ${level}: ${out.procs} processes in the guest`);

  log('psnative (in guest)');
  const nat = parseKv(await guestRun(con, `psnative -n ${NATIVE_RUNS}`), 'psnative');
  const natApart = parseKv(
    await guestRun(con, `psnative -n ${RESIDENT_RUNS} --gap-ms ${GAP_MS}`),
    'psnative',
  );
  const natC = parseKv(await guestRun(con, `psnative --cmdline -n ${NATIVE_RUNS}`), 'psnative-cmdline');
  const ps = parseKv(await guestRun(con, `psnative exec -n ${PS_RUNS} ps`), 'psnative-exec');
  const us2ms = (kv) => ({ median: kv.median_us / 1000, min: kv.min_us / 1000, max: kv.max_us / 1000 });
  out.psnative = { ...us2ms(nat), procs: nat.procs, syscalls: nat.syscalls, runs: nat.runs };
  out.psnativeApart = { ...us2ms(natApart), runs: natApart.runs, gapMs: GAP_MS };
  out.psnativeCmdline = { ...us2ms(natC), procs: natC.procs, syscalls: natC.syscalls, runs: natC.runs };
  out.busyboxPs = { ...us2ms(ps), runs: ps.runs };
  log(
    `  psnative ${out.psnative.median.toFixed(2)} ms (${nat.syscalls} syscalls), --cmdline ` +
      `${out.psnativeCmdline.median.toFixed(2)} ms, busybox ps ${out.busyboxPs.median.toFixed(2)} ms`,
  );

  out.pslistDoorbell = await vmiSeries(guest, plugins.pslist, 'doorbell');
  out.resident = await residentShadow(guest, con, plugins);
  out.pslistTrap = await vmiSeries(guest, plugins.pslist, 'trap');
  if (plugins.psaux) out.psauxDoorbell = await vmiSeries(guest, plugins.psaux, 'doorbell');

  if (level === LEVELS[0] || level === LEVELS[LEVELS.length - 1]) {
    log('getpid latency (doorbell)');
    out.getpid = await getpidLatency(guest);
    log(
      `  back-to-back ${out.getpid.backToBackMs.median.toFixed(3)} ms, after 1 s idle ` +
        `${out.getpid.afterIdle1sMs.median.toFixed(3)} ms`,
    );
  }

  const d = out.pslistDoorbell.pluginMs.median;
  out.ratios = {
    pslistPluginVsNative: d / out.psnative.median,
    pslistTotalVsNative: out.pslistDoorbell.totalMs.median / out.psnative.median,
    pslistPluginVsBusyboxPs: d / out.busyboxPs.median,
    pslistTotalVsBusyboxPs: out.pslistDoorbell.totalMs.median / out.busyboxPs.median,
    pslistTrapPluginVsNative: out.pslistTrap.pluginMs.median / out.psnative.median,
    // The resident series against the psnative passes made beside them (vmiSeries).
    pslistResidentPluginVsNative: out.resident.pslist.pluginMs.median / out.resident.pslist.native.median,
    // Total time: each block against the psnative passes just before it (vmiSeries).
    pslistResidentTotalVsNative: out.resident.pslist.native.ratio,
    pslistResidentApartTotalVsNativeApart: out.resident.pslistApart.native.ratio,
    pslistResidentApartPluginVsNativeApart:
      out.resident.pslistApart.pluginMs.median / out.resident.pslistApart.native.median,
  };
  if (out.psauxDoorbell) {
    out.ratios.psauxPluginVsNativeCmdline = out.psauxDoorbell.pluginMs.median / out.psnativeCmdline.median;
    out.ratios.psauxPluginVsBusyboxPs = out.psauxDoorbell.pluginMs.median / out.busyboxPs.median;
  }
  return out;
}

/**
 * CLI start-up: `vmi` as a user starts it (a new process: `node bin/run.js ARGS`), wall
 * clock to exit, on the system's Node (on Debian 12 that is 20, which runs vmi again under
 * the private LTS: the re-exec costs a Node start more) and on the LTS itself, with the
 * module compile cache and without it (NODE_DISABLE_COMPILE_CACHE=1). The variants take
 * turns run by run, so host load drifts hit them alike. pslist goes through a resident
 * shadow in the bench guest (the always-on target: <= 0.15 s).
 */
async function cliStartup(guest) {
  const runJs = join(HERE, '..', 'bin', 'run.js');
  const lts = pins().lts;
  const ltsNode = installedNode(lts) ?? (process.versions.node === lts ? process.execPath : undefined);
  const systemNode = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' }).stdout?.trim();
  const variants = [];
  if (systemNode) {
    const label = isTooOld(systemNode)
      ? `system Node ${systemNode.split('.')[0]} (re-runs on ${lts.split('.')[0]})`
      : `system Node ${systemNode.split('.')[0]}`;
    variants.push({ key: 'system', label, node: '/usr/bin/node', version: systemNode, env: {} });
  }
  if (ltsNode) {
    variants.push({ key: 'lts', label: `Node ${lts}`, node: ltsNode, version: `v${lts}`, env: {} });
    variants.push({
      key: 'ltsNoCache',
      label: `Node ${lts}, no compile cache`,
      node: ltsNode,
      version: `v${lts}`,
      env: { NODE_DISABLE_COMPILE_CACHE: '1' },
    });
  }
  const commands = [
    { key: 'help', label: 'vmi --help', args: ['--help'] },
    { key: 'list', label: 'vmi plugins run --list', args: ['plugins', 'run', '--list'] },
    {
      key: 'pslistResident',
      label: 'vmi plugins run pslist (resident shadow)',
      args: ['plugins', 'run', 'pslist', '--guest', guest.name],
    },
  ];
  const once = (v, c) => {
    const t0 = performance.now();
    const r = spawnSync(v.node, [runJs, ...c.args], {
      env: { ...process.env, ...v.env },
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    const wall = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${v.label}: ${c.label} failed: ${r.stderr.trim().slice(-300)}`);
    return wall;
  };
  const out = {
    runs: CLI_RUNS,
    variants: variants.map(({ key, label, version }) => ({ key, label, version })),
  };
  await startResidentShadow(guest, { transport: 'doorbell' });
  try {
    for (const c of commands) {
      log(`  start-up: ${c.label}`);
      const samples = Object.fromEntries(variants.map((v) => [v.key, []]));
      for (const v of variants) once(v, c); // warm-up: page cache, compile cache
      for (let i = 0; i < CLI_RUNS; i++) for (const v of variants) samples[v.key].push(once(v, c));
      out[c.key] = {
        label: c.label,
        ...Object.fromEntries(variants.map((v) => [v.key, stat(samples[v.key])])),
      };
    }
  } finally {
    await stopResidentShadow(guest);
  }
  out.commands = commands.map((c) => c.key);
  return out;
}

function cliStartupTable(cli) {
  const header = ['CLI start-up, wall ms', ...cli.variants.map((v) => v.label)];
  const rows = cli.commands.map((k) => [cli[k].label, ...cli.variants.map((v) => ms(cli[k][v.key], 0))]);
  return { header, rows };
}

/**
 * The figures the README quotes about captures and the CLI seen from the shell, on the
 * lab guest as `vmi lab up` boots it (256 MiB, 1 vCPU): `capture create` pause (stop →
 * cont) and artifact size, plain and --compress (RAM gzip -1 after the resume); the wall
 * time of `vmi plugins run pslist` as a shell runs it (a fresh shadow each run, then
 * through a resident one), and of `vmi --help` (Node and CLI start-up alone).
 */
async function captureAndWall() {
  const name = `${GUEST}-capture`;
  const started = new Date().toISOString();
  const load0 = loadavg();
  log(`booting lab guest ${name} (lab defaults); host load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const guest = await labUp({ name, onProgress: (m) => log(`  ${m}`) });
  const work = await mkdtemp(join(tmpdir(), 'vmi-bench-capture-'));
  const runJs = join(HERE, '..', 'bin', 'run.js');
  const wall = (args) => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [runJs, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const msWall = performance.now() - t0;
    if (r.status !== 0) throw new Error(`vmi ${args.join(' ')} failed: ${r.stderr.trim().slice(-300)}`);
    return msWall;
  };
  const out = { started, node: process.version, runs: CAPTURE_RUNS };
  try {
    out.guest = { kernelRelease: guest.kernelRelease, ramBytes: guest.ramSize, cpus: 1 };
    const pslistArgs = ['plugins', 'run', 'pslist', '--guest', name];
    wall(['--help']); // warm-up: page cache, compile cache
    wall(pslistArgs);
    const samples = { help: [], pslistFresh: [], pslistResident: [] };
    for (let i = 0; i < CAPTURE_RUNS; i++) {
      samples.help.push(wall(['--help']));
      samples.pslistFresh.push(wall(pslistArgs));
    }
    await startResidentShadow(guest, { transport: 'doorbell' });
    try {
      wall(pslistArgs);
      for (let i = 0; i < CAPTURE_RUNS; i++) samples.pslistResident.push(wall(pslistArgs));
    } finally {
      await stopResidentShadow(guest);
    }
    out.wallMs = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, stat(v)]));
    for (const compress of [false, true]) {
      const pause = [];
      const total = [];
      const bytes = [];
      const ramBytes = [];
      const compressMs = [];
      for (let i = 0; i < CAPTURE_RUNS; i++) {
        log(`  capture ${compress ? '--compress ' : ''}${i + 1}/${CAPTURE_RUNS}`);
        const output = join(work, `c${i}.vmicap`);
        const c = await createCapture({ qmpSocket: guest.qmpSocket, output, compress });
        pause.push(c.pauseMs);
        total.push(c.totalMs);
        bytes.push(c.bytes);
        ramBytes.push((c.manifest.parts['ram.raw.gz'] ?? c.manifest.parts['ram.raw']).size);
        if (c.compressMs !== undefined) compressMs.push(c.compressMs);
        await rm(output, { recursive: true, force: true });
      }
      out[compress ? 'captureCompressed' : 'capture'] = {
        pauseMs: stat(pause),
        totalMs: stat(total),
        artifactBytes: stat(bytes),
        ramPartBytes: stat(ramBytes),
        ...(compressMs.length ? { compressMs: stat(compressMs) } : {}),
      };
    }
  } finally {
    await rm(work, { recursive: true, force: true });
    await labDown(name);
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const mb = (s) => `${f(s.median / 1e6, 1)} (${f(s.min / 1e6, 1)})`;
  const rows = [
    ['`vmi --help` wall ms (Node and CLI start-up)', ms(out.wallMs.help, 0)],
    ['`vmi plugins run pslist` wall ms, fresh shadow', ms(out.wallMs.pslistFresh, 0)],
    ['`vmi plugins run pslist` wall ms, resident shadow', ms(out.wallMs.pslistResident, 0)],
    ['capture create: guest paused ms', ms(out.capture.pauseMs, 0)],
    ['capture create: total ms', ms(out.capture.totalMs, 0)],
    ['capture create: artifact MB (RAM, device state, kernel, initramfs)', mb(out.capture.artifactBytes)],
    ['capture create: ram.raw MB', mb(out.capture.ramPartBytes)],
    ['capture create --compress: guest paused ms', ms(out.captureCompressed.pauseMs, 0)],
    ['capture create --compress: total ms', ms(out.captureCompressed.totalMs, 0)],
    ['capture create --compress: artifact MB', mb(out.captureCompressed.artifactBytes)],
    ['capture create --compress: ram.raw.gz MB', mb(out.captureCompressed.ramPartBytes)],
  ];
  const note =
    `Guest: ${out.guest.kernelRelease}, ${out.guest.ramBytes / 2 ** 20} MiB, 1 vCPU, TCG; vmi on Node ${out.node}. ` +
    `Cells: median (min) over ${CAPTURE_RUNS} runs. Host load average before/after: ` +
    `${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)}. Run ${started}.`;
  const md = await format(`${markdown(['', 'value'], rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-capture.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-capture.md'), md);
  process.stdout.write(`${plain(['', 'value'], rows)}\n\n${note}\n`);
  log('wrote bench/results-capture.json and bench/results-capture.md');
}

/**
 * BENCH_ONLY=memory: attach and pslist (fresh shadow, doorbell) on lab guests of each
 * size in BENCH_MEMORY_SIZES (MiB, default 256 and 8192), all booted at once and measured
 * in interleaved rounds, so host noise falls on every size alike.
 */
async function memorySizes(pslist) {
  const started = new Date().toISOString();
  const load0 = loadavg();
  const out = { started, node: process.version, runs: MEMORY_RUNS, guests: [] };
  const guests = [];
  try {
    for (const memMiB of MEMORY_SIZES_MIB) {
      const name = `${GUEST}-mem${memMiB}`;
      log(`booting lab guest ${name} (${memMiB} MiB, 1 vCPU); host load ${loadavg()[0].toFixed(2)}`);
      const t0 = performance.now();
      const guest = await labUp({ name, memMiB, onProgress: (m) => log(`  ${m}`) });
      guests.push({ memMiB, guest, bootMs: performance.now() - t0, runs: [] });
    }
    for (const g of guests) await vmiRun(g.guest, pslist, 'doorbell'); // warm-up
    for (let i = 0; i < MEMORY_RUNS; i++) {
      for (const g of guests) {
        const r = await vmiRun(g.guest, pslist, 'doorbell');
        g.runs.push(r);
        log(
          `  ${g.memMiB} MiB run ${i + 1}/${MEMORY_RUNS}: attach ${r.attachMs.toFixed(0)} ms, pslist ${r.pluginMs.toFixed(1)} ms, total ${r.totalMs.toFixed(0)} ms`,
        );
      }
    }
  } finally {
    for (const g of guests) await labDown(g.guest.name);
  }
  for (const g of guests) {
    const pick = (k) => stat(g.runs.map((r) => r[k]));
    out.guests.push({
      memMiB: g.memMiB,
      ram: g.guest.ram,
      kernelRelease: g.guest.kernelRelease,
      bootMs: g.bootMs,
      attachMs: pick('attachMs'),
      pluginMs: pick('pluginMs'),
      totalMs: pick('totalMs'),
      rows: median(g.runs.map((r) => r.rows)),
    });
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const layout = (ram) =>
    (ram ?? []).map((r) => `0x${r.gpa.toString(16)}+${r.size / 2 ** 20} MiB`).join(', ');
  const header = [
    'guest RAM',
    'layout (guest-physical)',
    'boot s',
    'attach ms',
    'pslist ms',
    'total ms',
    'rows',
  ];
  const rows = out.guests.map((g) => [
    `${g.memMiB} MiB`,
    layout(g.ram),
    f(g.bootMs / 1000, 1),
    ms(g.attachMs, 0),
    ms(g.pluginMs, 1),
    ms(g.totalMs, 0),
    String(g.rows),
  ]);
  const note =
    `Lab guests (q35, 1 vCPU, TCG, ${out.guests[0]?.kernelRelease}), all running during the measurement; ` +
    `fresh shadow each run, doorbell transport; vmi on Node ${out.node}. Cells: median (min) over ${MEMORY_RUNS} ` +
    `interleaved runs. Host load average before/after: ${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)}. Run ${started}.`;
  const md = await format(`${markdown(header, rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-memory.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-memory.md'), md);
  process.stdout.write(`${plain(header, rows)}\n\n${note}\n`);
  log('wrote bench/results-memory.json and bench/results-memory.md');
}

/**
 * BENCH_ONLY=xview: what the cross-view plugins cost on a clean 256 MiB lab guest (fresh
 * shadow, doorbell): psxview sweeping the whole PID space (1..pid_max) and 1..4096,
 * sockxview, beside pslist and sockstat (the single views they cross-check), and modxview and
 * check_syscall, check_idt and tracing beside lsmod, measured in the same interleaved rounds. Also counts HIDDEN
 * (HOOKED) rows, which must be 0 on a clean guest.
 */
async function crossView() {
  const byName = (n) => {
    const p = builtinPlugins.find((x) => x.name === n);
    if (!p) throw new Error(`${n} plugin not found (run npm run build)`);
    return p;
  };
  const series = [
    { key: 'pslist', plugin: byName('pslist'), options: {} },
    { key: 'psxview (whole PID space)', plugin: byName('psxview'), options: {} },
    { key: 'psxview --max-pid 4096', plugin: byName('psxview'), options: { 'max-pid': 4096 } },
    { key: 'sockstat', plugin: byName('sockstat'), options: {} },
    { key: 'sockxview', plugin: byName('sockxview'), options: {} },
    { key: 'lsmod', plugin: byName('lsmod'), options: {} },
    { key: 'modxview', plugin: byName('modxview'), options: {} },
    { key: 'check_syscall', plugin: byName('check_syscall'), options: {} },
    { key: 'check_idt', plugin: byName('check_idt'), options: {} },
    { key: 'tracing', plugin: byName('tracing'), options: {} },
  ];
  const started = new Date().toISOString();
  const load0 = loadavg();
  const name = `${GUEST}-xview`;
  log(`booting lab guest ${name} (256 MiB, 1 vCPU); host load ${load0[0].toFixed(2)}`);
  const guest = await labUp({ name, memMiB: 256, onProgress: (m) => log(`  ${m}`) });
  const runs = new Map(series.map((x) => [x.key, []]));
  let pidMax;
  try {
    const con = await GuestConsole.connect(guest.serialSocket, { timeoutMs: 10_000 });
    try {
      pidMax = Number((await con.run('cat /proc/sys/kernel/pid_max', 10_000)).output.trim());
    } finally {
      con.close();
    }
    const once = async (x) => {
      const r = await runPluginsOnGuest(guest, [{ plugin: x.plugin, options: x.options }], {
        transport: 'doorbell',
      });
      if (r.failures.length > 0) throw new Error(`${x.key}: ${r.failures.map((e) => e.message).join('; ')}`);
      const rows = r.tables[0].rows;
      return {
        pluginMs: r.pluginMs[x.plugin.name],
        batches: r.session.batches,
        calls: r.session.calls,
        rows: rows.length,
        hidden: rows.filter((row) => row.HIDDEN === true || row.HOOKED === true).length,
      };
    };
    for (const x of series) await once(x); // warm-up
    for (let i = 0; i < XVIEW_RUNS; i++) {
      for (const x of series) {
        const r = await once(x);
        runs.get(x.key).push(r);
        log(
          `  ${x.key} run ${i + 1}/${XVIEW_RUNS}: ${r.pluginMs.toFixed(0)} ms, ${r.calls} syscalls, ${r.hidden} hidden`,
        );
      }
    }
  } finally {
    await labDown(name);
  }
  const out = {
    started,
    node: process.version,
    runs: XVIEW_RUNS,
    pidMax,
    kernelRelease: guest.kernelRelease,
    series: [],
  };
  for (const x of series) {
    const rs = runs.get(x.key);
    out.series.push({
      name: x.key,
      pluginMs: stat(rs.map((r) => r.pluginMs)),
      batches: median(rs.map((r) => r.batches)),
      calls: median(rs.map((r) => r.calls)),
      rows: median(rs.map((r) => r.rows)),
      hiddenMax: Math.max(...rs.map((r) => r.hidden)),
    });
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const get = (k) => out.series.find((x) => x.name === k);
  const ratio = (a, b) => `${(get(a).pluginMs.median / get(b).pluginMs.median).toFixed(1)}×`;
  const header = ['', 'plugin ms', 'batches', 'syscalls', 'rows', 'HIDDEN / HOOKED rows (max)'];
  const rows = out.series.map((x) => [
    x.name,
    ms(x.pluginMs, 0),
    String(x.batches),
    String(x.calls),
    String(x.rows),
    x.name.includes('xview') || ['check_syscall', 'check_idt', 'tracing'].includes(x.name)
      ? String(x.hiddenMax)
      : '–',
  ]);
  rows.push([
    '**ratio** psxview (whole) / pslist',
    ratio('psxview (whole PID space)', 'pslist'),
    '',
    '',
    '',
    '',
  ]);
  rows.push([
    '**ratio** psxview --max-pid 4096 / pslist',
    ratio('psxview --max-pid 4096', 'pslist'),
    '',
    '',
    '',
    '',
  ]);
  rows.push(['**ratio** sockxview / sockstat', ratio('sockxview', 'sockstat'), '', '', '', '']);
  rows.push(['**ratio** modxview / lsmod', ratio('modxview', 'lsmod'), '', '', '', '']);
  const note =
    `Lab guest (q35, 256 MiB, 1 vCPU, TCG, ${out.kernelRelease}, pid_max ${pidMax}); fresh shadow each run, ` +
    `doorbell transport; vmi on Node ${out.node}. Cells: median (min) over ${XVIEW_RUNS} interleaved runs. ` +
    `Host load average before/after: ${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)}. Run ${started}.`;
  const md = await format(`${markdown(header, rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-xview.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-xview.md'), md);
  process.stdout.write(`${plain(header, rows)}\n\n${note}\n`);
  log('wrote bench/results-xview.json and bench/results-xview.md');
}

/**
 * BENCH_ONLY=sql: `vmi query` for a pslist⋈sockstat join (listeners with their process
 * names), wall time of the CLI from start to exit, next to `vmi plugins run pslist
 * sockstat` (the same two plugins, one attach, JSON to a pipe) in the same interleaved
 * rounds on one 256 MiB lab guest; plus the query's own split (collect, load, query) from
 * --timing. Target: query ≤ 1.3× the plain run.
 */
async function sqlBench() {
  const runJs = join(HERE, '..', 'bin', 'run.js');
  const name = `${GUEST}-sql`;
  const started = new Date().toISOString();
  const load0 = loadavg();
  const SQL =
    `SELECT s.GUEST, s.PID, p.COMM, s."Source Addr", s."Source Port" FROM sockstat s ` +
    `JOIN pslist p USING (GUEST, PID) WHERE s.State = 'LISTEN' ORDER BY s.PID`;
  const cases = [
    {
      key: 'vmi plugins run pslist sockstat',
      args: ['plugins', 'run', 'pslist', 'sockstat', '--guest', name, '-r', 'json'],
    },
    { key: 'vmi query (pslist ⋈ sockstat)', args: ['query', '--guest', name, '-r', 'json', '--timing', SQL] },
  ];
  const wall = (args) =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      const child = spawn(process.execPath, [runJs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.once('exit', (code) => {
        const ms = performance.now() - t0;
        if (code !== 0) reject(new Error(`vmi ${args.join(' ')}: exit ${code}: ${err}`));
        else resolve({ ms, out, err });
      });
    });
  log(`booting lab guest ${name} (256 MiB, 1 vCPU); host load ${load0[0].toFixed(2)}`);
  const guest = await labUp({ name, memMiB: 256, onProgress: (m) => log(`  ${m}`) });
  const runs = new Map(cases.map((c) => [c.key, []]));
  const split = [];
  let rows = 0;
  try {
    for (const c of cases) await wall(c.args); // warm-up (syscall entry cache, page cache)
    for (let i = 0; i < SQL_RUNS; i++) {
      for (const c of cases) {
        const r = await wall(c.args);
        runs.get(c.key).push(r.ms);
        if (c.key.startsWith('vmi query')) {
          rows = JSON.parse(r.out).length;
          const m =
            /sql: parse ([\d.]+) ms, collect ([\d.]+) ms, load ([\d.]+) ms \((\d+) rows\), query ([\d.]+) ms/.exec(
              r.err,
            );
          if (m)
            split.push({
              parseMs: +m[1],
              collectMs: +m[2],
              loadMs: +m[3],
              loadedRows: +m[4],
              queryMs: +m[5],
            });
        }
        log(`  ${c.key} run ${i + 1}/${SQL_RUNS}: ${r.ms.toFixed(0)} ms`);
      }
    }
  } finally {
    await labDown(name);
  }
  const series = cases.map((c) => ({ name: c.key, wallMs: stat(runs.get(c.key)) }));
  const pick = (k) => stat(split.map((x) => x[k]));
  const out = {
    started,
    node: process.version,
    runs: SQL_RUNS,
    kernelRelease: guest.kernelRelease,
    query: SQL,
    resultRows: rows,
    series,
    querySplit: {
      parseMs: pick('parseMs'),
      collectMs: pick('collectMs'),
      loadMs: pick('loadMs'),
      queryMs: pick('queryMs'),
      loadedRows: median(split.map((x) => x.loadedRows)),
    },
  };
  out.ratio = series[1].wallMs.median / series[0].wallMs.median;
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const header = ['', 'wall ms (CLI start to exit)'];
  const tableRows = series.map((x) => [x.name, ms(x.wallMs, 0)]);
  tableRows.push(['**ratio** query / plain run', `${out.ratio.toFixed(2)}× (target ≤ 1.3×)`]);
  const q = out.querySplit;
  tableRows.push([
    'of the query: parse · collect · load · query',
    `${f(q.parseMs.median, 1)} · ${f(q.collectMs.median, 0)} · ${f(q.loadMs.median, 1)} (${q.loadedRows} rows) · ${f(q.queryMs.median, 1)}`,
  ]);
  const note =
    `Lab guest (q35, 256 MiB, 1 vCPU, TCG, ${out.kernelRelease}); each run a new \`vmi\` process (\`node bin/run.js\`), ` +
    `fresh shadow, one attach for both plugins; vmi on Node ${out.node}. Cells: median (min) over ${SQL_RUNS} interleaved runs. ` +
    `Query: \`${SQL}\` (${rows} rows). Host load average before/after: ${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)}. Run ${started}.`;
  const md = await format(`${markdown(header, tableRows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-sql.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-sql.md'), md);
  process.stdout.write(`${plain(header, tableRows)}\n\n${note}\n`);
  log('wrote bench/results-sql.json and bench/results-sql.md');
}

/**
 * BENCH_ONLY=devices: captures of a lab guest with a virtio disk and NIC against the same
 * guest without devices (each booted in turn, 256 MiB, 1 vCPU): guest pause and capture
 * time (plain, and --with-disks on the disk guest), and replay-to-first-result: from
 * openReplay until pslist's table is back. "Before" is the disk guest's capture replayed
 * without its device model (the clone vmi built before issue 19): it cannot start.
 */
async function devicesBench(pslist) {
  const { withReplay } = await import('../dist/targets/capture.js');
  const { createLabDiskImage } = await import('../dist/lab/lab-devices.js');
  const { decodeManifest, encodeManifest, MANIFEST, MANIFEST_SUM } =
    await import('../dist/capture/manifest.js');
  const { readFile, cp } = await import('node:fs/promises');
  const { createHash } = await import('node:crypto');
  const started = new Date().toISOString();
  const load0 = loadavg();
  const work = await mkdtemp(join(tmpdir(), 'vmi-bench-devices-'));
  const out = { started, node: process.version, runs: DEVICES_RUNS, series: [] };
  const firstResult = async (cap) => {
    const t0 = performance.now();
    return withReplay(cap, async (r) => {
      const run = await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }]);
      if (run.failures.length) throw new Error(run.failures[0].message);
      return { ms: performance.now() - t0, rows: run.tables[0].rows.length, restoreMs: r.timings.restoreMs };
    });
  };
  try {
    for (const withDisk of [false, true]) {
      const name = `${GUEST}-dev${withDisk ? 'disk' : 'none'}`;
      const disk = join(work, `${name}.img`);
      if (withDisk) await createLabDiskImage(disk);
      log(`booting lab guest ${name} (256 MiB, 1 vCPU${withDisk ? ', virtio disk + NIC' : ''})`);
      const guest = await labUp({
        name,
        memMiB: 256,
        ...(withDisk ? { disk, nic: true } : {}),
        onProgress: (m) => log(`  ${m}`),
      });
      try {
        if (withDisk) {
          const con = await GuestConsole.connect(guest.serialSocket, { timeoutMs: 10_000 });
          try {
            await con.run('mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk', 30_000);
          } finally {
            con.close();
          }
        }
        for (const copies of withDisk ? [false, true] : [false]) {
          const key = withDisk
            ? `virtio disk + NIC${copies ? ', --with-disks' : ', live disk'}`
            : 'no devices';
          const rs = [];
          for (let i = 0; i < DEVICES_RUNS; i++) {
            const path = join(work, `${name}-${copies ? 'pit' : 'live'}-${i}.vmicap`);
            const c = await createCapture({ qmpSocket: guest.qmpSocket, output: path, withDisks: copies });
            const r = await firstResult(path);
            rs.push({
              pauseMs: c.pauseMs,
              captureMs: c.totalMs,
              replayMs: r.ms,
              restoreMs: r.restoreMs,
              rows: r.rows,
            });
            log(
              `  ${key} run ${i + 1}: pause ${c.pauseMs.toFixed(0)} ms, capture ${c.totalMs.toFixed(0)} ms, replay to pslist ${r.ms.toFixed(0)} ms`,
            );
            if (i === 0 && withDisk && !copies) {
              // Before issue 19: the same capture, replayed without the device model.
              const old = join(work, 'before.vmicap');
              await cp(path, old, { recursive: true });
              const m = decodeManifest(await readFile(join(old, MANIFEST)));
              delete m.machine.devices;
              delete m.machine.disks;
              delete m.machine.pci;
              delete m.machine.firmware;
              delete m.disks;
              const buf = encodeManifest(m);
              await writeFile(join(old, MANIFEST), buf);
              await writeFile(join(old, MANIFEST_SUM), createHash('sha256').update(buf).digest('hex') + '\n');
              const t0 = performance.now();
              const err = await firstResult(old).then(
                () => 'replayed (unexpected)',
                (e) => e.message,
              );
              out.before = { error: err, ms: performance.now() - t0 };
              log(`  before (no device model): ${err}`);
              await rm(old, { recursive: true, force: true });
            }
            await rm(path, { recursive: true, force: true });
          }
          out.series.push({
            name: key,
            pauseMs: stat(rs.map((r) => r.pauseMs)),
            captureMs: stat(rs.map((r) => r.captureMs)),
            replayMs: stat(rs.map((r) => r.replayMs)),
            restoreMs: stat(rs.map((r) => r.restoreMs)),
            rows: median(rs.map((r) => r.rows)),
          });
        }
        out.kernelRelease = guest.kernelRelease;
      } finally {
        await labDown(name);
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const header = [
    '',
    'guest paused ms',
    'capture total ms',
    'replay → first pslist ms',
    'restore ms',
    'rows',
  ];
  const rows = out.series.map((x) => [
    x.name,
    ms(x.pauseMs, 0),
    ms(x.captureMs, 0),
    ms(x.replayMs, 0),
    ms(x.restoreMs, 0),
    String(x.rows),
  ]);
  rows.push([
    'virtio disk + NIC, before (clone without the device model)',
    '–',
    '–',
    `fails: ${out.before?.error ?? '?'}`,
    '–',
    '–',
  ]);
  const note =
    `Lab guest (q35, 256 MiB, 1 vCPU, TCG, ${out.kernelRelease}); the disk guest has a 32 MiB ext4 virtio-blk disk mounted ` +
    `and a virtio-net NIC on a local hub port. --with-disks copies the disk with a QEMU backup job started in the pause ` +
    `(the device state then goes out as a background snapshot). Cells: median (min) over ${DEVICES_RUNS} runs. ` +
    `Host load average before/after: ${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)} (2 cores shared with other work). Run ${started}.`;
  const md = await format(`${markdown(header, rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-devices.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-devices.md'), md);
  process.stdout.write(`${plain(header, rows)}\n\n${note}\n`);
  log('wrote bench/results-devices.json and bench/results-devices.md');
}

/**
 * A capture of `path` with its device model removed (as vmi wrote captures before issue
 * 19), re-hashed; returns the copy's path.
 */
async function withoutDeviceModel(path, old) {
  const { decodeManifest, encodeManifest, MANIFEST, MANIFEST_SUM } =
    await import('../dist/capture/manifest.js');
  const { readFile, cp } = await import('node:fs/promises');
  const { createHash } = await import('node:crypto');
  await cp(path, old, { recursive: true });
  const m = decodeManifest(await readFile(join(old, MANIFEST)));
  delete m.machine.devices;
  delete m.machine.disks;
  delete m.machine.pci;
  delete m.machine.firmware;
  delete m.disks;
  const buf = encodeManifest(m);
  await writeFile(join(old, MANIFEST), buf);
  await writeFile(join(old, MANIFEST_SUM), createHash('sha256').update(buf).digest('hex') + '\n');
  return old;
}

/**
 * BENCH_ONLY=realvm: captures of the debian lab flavour (Debian 12 + systemd booted by
 * SeaBIOS from a virtio disk, virtio NIC, 1 vCPU) at 256 MiB and 1 GiB, each booted in
 * turn: guest pause and capture time, plain (replays read the live disk) and
 * --with-disks, and replay-to-first-result (openReplay until pslist's table is back).
 * "Before" is the plain capture replayed without its device model (the clone vmi built
 * before issue 19, which also refused to capture a firmware-booted guest at all).
 */
async function realvmBench(pslist) {
  const { withReplay } = await import('../dist/targets/capture.js');
  const started = new Date().toISOString();
  const load0 = loadavg();
  const work = await mkdtemp(join(tmpdir(), 'vmi-bench-realvm-'));
  const out = { started, node: process.version, runs: REALVM_RUNS, series: [], before: {} };
  const firstResult = async (cap) => {
    const t0 = performance.now();
    return withReplay(cap, async (r) => {
      const run = await runPluginsOnGuest(r.guest, [{ plugin: pslist, options: {} }]);
      if (run.failures.length) throw new Error(run.failures[0].message);
      return { ms: performance.now() - t0, rows: run.tables[0].rows.length, restoreMs: r.timings.restoreMs };
    });
  };
  try {
    for (const memMiB of [256, 1024]) {
      const name = `${GUEST}-realvm${memMiB}`;
      log(`booting debian lab guest ${name} (${memMiB} MiB, 1 vCPU, SeaBIOS, virtio disk + NIC)`);
      const t0 = performance.now();
      const guest = await labUp({ name, flavour: 'debian', memMiB, onProgress: (m) => log(`  ${m}`) });
      const bootMs = performance.now() - t0;
      try {
        for (const copies of [false, true]) {
          const key = `debian ${memMiB} MiB${copies ? ', --with-disks' : ', live disk'}`;
          const rs = [];
          for (let i = 0; i < REALVM_RUNS; i++) {
            const path = join(work, `${name}-${copies ? 'pit' : 'live'}-${i}.vmicap`);
            const c = await createCapture({ qmpSocket: guest.qmpSocket, output: path, withDisks: copies });
            const r = await firstResult(path);
            rs.push({
              pauseMs: c.pauseMs,
              captureMs: c.totalMs,
              replayMs: r.ms,
              restoreMs: r.restoreMs,
              rows: r.rows,
            });
            log(
              `  ${key} run ${i + 1}: pause ${c.pauseMs.toFixed(0)} ms, capture ${c.totalMs.toFixed(0)} ms, replay to pslist ${r.ms.toFixed(0)} ms`,
            );
            if (i === 0 && !copies) {
              const old = await withoutDeviceModel(path, join(work, 'before.vmicap'));
              const tb = performance.now();
              const err = await firstResult(old).then(
                () => 'replayed (unexpected)',
                (e) => e.message,
              );
              out.before[memMiB] = { error: err, ms: performance.now() - tb };
              log(`  before (no device model): ${err}`);
              await rm(old, { recursive: true, force: true });
            }
            await rm(path, { recursive: true, force: true });
          }
          out.series.push({
            name: key,
            memMiB,
            bootMs,
            pauseMs: stat(rs.map((r) => r.pauseMs)),
            captureMs: stat(rs.map((r) => r.captureMs)),
            replayMs: stat(rs.map((r) => r.replayMs)),
            restoreMs: stat(rs.map((r) => r.restoreMs)),
            rows: median(rs.map((r) => r.rows)),
          });
        }
        out.kernelRelease = guest.kernelRelease;
      } finally {
        await labDown(name);
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const header = [
    '',
    'guest paused ms',
    'capture total ms',
    'replay → first pslist ms',
    'restore ms',
    'rows',
  ];
  const rows = [];
  for (const memMiB of [256, 1024]) {
    for (const x of out.series.filter((s) => s.memMiB === memMiB))
      rows.push([
        x.name,
        ms(x.pauseMs, 0),
        ms(x.captureMs, 0),
        ms(x.replayMs, 0),
        ms(x.restoreMs, 0),
        String(x.rows),
      ]);
    const b = out.before[memMiB];
    // The run dir's random name varies from run to run: the figure keeps the reason only.
    const why = (b?.error ?? '?').replace(/\/\S*\/(qmp\.sock)/g, '…/$1');
    rows.push([
      `debian ${memMiB} MiB, before (clone without the device model)`,
      '–',
      '–',
      `fails: ${why}`,
      '–',
      '–',
    ]);
  }
  const note =
    `Debian lab flavour (Debian 12 + systemd, q35, SeaBIOS → SYSLINUX, root on a virtio-blk qcow2 overlay of a ` +
    `cached 350 MiB image, virtio-net NIC on a local hub port, 1 vCPU, TCG, ${out.kernelRelease}). "live disk": replays ` +
    `read the guest's disk image as it is now (opened read-only, force-share); --with-disks: a QEMU backup job started ` +
    `in the pause copies the disk (device state then goes out as a background snapshot). Before issue 19, vmi refused ` +
    `to capture a firmware-booted guest at all; the "before" row replays the capture without its device model. ` +
    `Cells: median (min) over ${REALVM_RUNS} runs. Host load average before/after: ${load0[0].toFixed(2)} / ` +
    `${out.hostLoadavg.after[0].toFixed(2)} (2 cores shared with other work). Run ${started}.`;
  const md = await format(`${markdown(header, rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-realvm.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-realvm.md'), md);
  process.stdout.write(`${plain(header, rows)}\n\n${note}\n`);
  log('wrote bench/results-realvm.json and bench/results-realvm.md');
}

/**
 * Boots a QEMU the way someone else would: the lab's kernel and initramfs, `-m` RAM (an
 * anonymous mapping, no shared file), no gdbstub, QMP and a serial console only.
 */
async function bootForeign(memMiB) {
  const vm = await bootForeignQemu(memMiB);
  const stop = async () => {
    await vm.stop();
    await rm(foreignRunDir(vm.qmpSocket), { recursive: true, force: true });
  };
  return { qmpSocket: vm.qmpSocket, serialSocket: vm.serialSocket, pid: vm.qemu.pid, stop };
}

/**
 * capture create of a foreign guest, RAM from QEMU's process memory vs the full migration
 * stream (--full), interleaved; each capture is deleted after it is measured.
 */
async function foreignCaptures(qmpSocket, mib) {
  const out = { processMemory: [], fullStream: [] };
  const dir = await mkdtemp(join(tmpdir(), 'vmi-bench-fcap-'));
  try {
    for (let i = 0; i < FOREIGN_CAPTURE_RUNS; i++) {
      for (const [k, full] of [
        ['processMemory', false],
        ['fullStream', true],
      ]) {
        const path = join(dir, `${k}-${i}.vmicap`);
        const r = await createCapture({ qmpSocket, output: path, full });
        const want = full ? 'migration-stream' : 'process-memory';
        if (r.manifest.ramSource !== want)
          throw new Error(
            `foreign capture took ${r.manifest.ramSource}, not ${want}: ${r.manifest.ramSourceNote ?? ''}`,
          );
        const x = {
          pauseMs: r.pauseMs,
          copyMs: r.manifest.timing.copyMs,
          totalMs: r.totalMs,
          bytes: r.bytes,
          devstateBytes: r.manifest.parts['devstate.bin'].size,
        };
        out[k].push(x);
        log(
          `  ${mib} MiB capture ${k} ${i + 1}/${FOREIGN_CAPTURE_RUNS}: pause ${x.pauseMs.toFixed(0)} ms, RAM ${x.copyMs.toFixed(0)} ms, wall ${x.totalMs.toFixed(0)} ms`,
        );
        await rm(path, { recursive: true, force: true });
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

/** What `vmi plugins run pslist --qmp SOCKET` does: open the foreign guest, run, close it again. */
async function foreignRun(qmpSocket, pslist, processMemory) {
  const t0 = performance.now();
  const f = await openForeignGuest(qmpSocket, { noProcessMemory: !processMemory });
  const openMs = performance.now() - t0;
  let r;
  try {
    r = await runPluginsOnGuest(f.endpoints, [{ plugin: pslist, options: {} }], {
      transport: processMemory ? 'auto' : 'trap',
    });
  } finally {
    await f.close();
  }
  const totalMs = performance.now() - t0;
  if (r.failures.length > 0)
    throw new Error(`foreign pslist: ${r.failures.map((x) => x.message).join('; ')}`);
  const want = processMemory ? ['doorbell', 'qemu-process'] : ['trap', 'gdbstub'];
  if (r.session.transport !== want[0] || r.session.memory !== want[1])
    throw new Error(
      `foreign pslist ran ${r.session.transport}/${r.session.memory}, not ${want.join('/')}: ${r.session.fallback ?? ''}`,
    );
  return {
    openMs,
    attachMs: r.session.attachMs,
    pluginMs: r.pluginMs.pslist,
    totalMs,
    batches: r.session.batches,
    rows: r.tables[0].rows.length,
  };
}

/**
 * BENCH_ONLY=foreign: a foreign QEMU's pslist through its process memory (doorbell) and
 * through the gdbstub (trap, what vmi did before), against a lab guest of the same size
 * (shared RAM file, doorbell). Fresh shadow every run; all three series interleaved.
 * Foreign totals include opening the guest through QMP (gdbstub on, RAM located and
 * checked) and closing it (gdbstub off), as the CLI does.
 */
async function foreignGuest(pslist) {
  const started = new Date().toISOString();
  const load0 = loadavg();
  const name = `${GUEST}-fg`;
  const series = { lab: [], foreignDoorbell: [], foreignTrap: [] };
  const captures = {};
  let lab;
  let foreign;
  try {
    log(
      `booting lab guest ${name} (${FOREIGN_MEM_MIB} MiB) and a foreign QEMU (${FOREIGN_MEM_MIB} MiB, -m RAM)`,
    );
    lab = await labUp({ name, memMiB: FOREIGN_MEM_MIB, onProgress: (m) => log(`  ${m}`) });
    foreign = await bootForeign(FOREIGN_MEM_MIB);
    log(`foreign QEMU pid ${foreign.pid}, QMP ${foreign.qmpSocket}`);
    const runs = {
      lab: () => vmiRun(lab, pslist, 'doorbell'),
      foreignDoorbell: () => foreignRun(foreign.qmpSocket, pslist, true),
      foreignTrap: () => foreignRun(foreign.qmpSocket, pslist, false),
    };
    for (const run of Object.values(runs)) await run(); // warm-up
    for (let i = 0; i < FOREIGN_RUNS; i++) {
      for (const [k, run] of Object.entries(runs)) {
        const r = await run();
        series[k].push(r);
        log(
          `  ${k} run ${i + 1}/${FOREIGN_RUNS}: attach ${r.attachMs.toFixed(0)} ms, pslist ${r.pluginMs.toFixed(1)} ms, total ${r.totalMs.toFixed(0)} ms`,
        );
      }
    }
    for (const mib of FOREIGN_CAPTURE_MIB) {
      if (mib === FOREIGN_MEM_MIB) {
        captures[mib] = await foreignCaptures(foreign.qmpSocket, mib);
        continue;
      }
      log(`booting a foreign QEMU of ${mib} MiB for captures`);
      const big = await bootForeign(mib);
      try {
        captures[mib] = await foreignCaptures(big.qmpSocket, mib);
      } finally {
        await big.stop();
      }
    }
  } finally {
    await foreign?.stop();
    if (lab) await labDown(name);
  }
  const pick = (rs, k) => (rs[0]?.[k] === undefined ? undefined : stat(rs.map((r) => r[k])));
  const out = { started, node: process.version, runs: FOREIGN_RUNS, memMiB: FOREIGN_MEM_MIB, series: {} };
  for (const [k, rs] of Object.entries(series)) {
    out.series[k] = {
      openMs: pick(rs, 'openMs'),
      attachMs: pick(rs, 'attachMs'),
      pluginMs: pick(rs, 'pluginMs'),
      totalMs: pick(rs, 'totalMs'),
      batches: median(rs.map((r) => r.batches)),
      rows: median(rs.map((r) => r.rows)),
    };
  }
  const s = out.series;
  const r = (a, b) => a.median / b.median;
  out.ratios = {
    foreignDoorbellVsLab: {
      attach: r(s.foreignDoorbell.attachMs, s.lab.attachMs),
      pslist: r(s.foreignDoorbell.pluginMs, s.lab.pluginMs),
      total: r(s.foreignDoorbell.totalMs, s.lab.totalMs),
    },
    foreignTrapVsForeignDoorbell: {
      attach: r(s.foreignTrap.attachMs, s.foreignDoorbell.attachMs),
      pslist: r(s.foreignTrap.pluginMs, s.foreignDoorbell.pluginMs),
      total: r(s.foreignTrap.totalMs, s.foreignDoorbell.totalMs),
    },
  };
  out.captures = {};
  for (const [mib, cs] of Object.entries(captures)) {
    out.captures[mib] = {};
    for (const [k, rs] of Object.entries(cs))
      out.captures[mib][k] = {
        pauseMs: stat(rs.map((x) => x.pauseMs)),
        copyMs: stat(rs.map((x) => x.copyMs)),
        totalMs: stat(rs.map((x) => x.totalMs)),
        bytes: median(rs.map((x) => x.bytes)),
        devstateBytes: median(rs.map((x) => x.devstateBytes)),
      };
  }
  out.kernelRelease = lab?.kernelRelease;
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  const header = ['', 'open ms', 'attach ms', 'pslist ms', 'total ms', 'batches', 'rows'];
  const row = (label, x) => [
    label,
    ms(x.openMs, 0),
    ms(x.attachMs, 0),
    ms(x.pluginMs, 1),
    ms(x.totalMs, 0),
    String(x.batches),
    String(x.rows),
  ];
  const q = out.ratios;
  const rows = [
    row('lab guest, shared RAM file, doorbell', s.lab),
    row('foreign QEMU, process memory, doorbell', s.foreignDoorbell),
    row('foreign QEMU, gdbstub, trap', s.foreignTrap),
    [
      '**ratio** foreign doorbell / lab',
      '',
      ratio(q.foreignDoorbellVsLab.attach),
      ratio(q.foreignDoorbellVsLab.pslist),
      ratio(q.foreignDoorbellVsLab.total),
      '',
      '',
    ],
    [
      '**ratio** foreign trap / foreign doorbell',
      '',
      ratio(q.foreignTrapVsForeignDoorbell.attach),
      ratio(q.foreignTrapVsForeignDoorbell.pslist),
      ratio(q.foreignTrapVsForeignDoorbell.total),
      '',
      '',
    ],
  ];
  const note =
    `Both guests q35, ${FOREIGN_MEM_MIB} MiB, 1 vCPU, TCG, ${out.kernelRelease}, running during the whole measurement; ` +
    `fresh shadow each run. Foreign runs open the guest through QMP (gdbstub on, RAM block located with gpa2hva and ` +
    `checked against xp) and close it, as \`vmi plugins run --qmp\` does: "open" is that part, "total" includes it. ` +
    `vmi on Node ${out.node}. Cells: median (min) over ${FOREIGN_RUNS} interleaved runs. Host load average before/after: ` +
    `${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)}. Run ${started}.`;
  const cHeader = [
    'capture create, foreign QEMU',
    'guest pause ms',
    'RAM ms',
    'wall ms',
    'capture MiB',
    'devstate KiB',
  ];
  const cRows = [];
  for (const [mib, c] of Object.entries(out.captures)) {
    const crow = (label, x) => [
      `${mib} MiB, ${label}`,
      ms(x.pauseMs, 0),
      ms(x.copyMs, 0),
      ms(x.totalMs, 0),
      f(x.bytes / 2 ** 20, 1),
      f(x.devstateBytes / 1024, 0),
    ];
    cRows.push(
      crow("RAM from QEMU's process memory", c.processMemory),
      crow('full migration stream (--full)', c.fullStream),
    );
    cRows.push([
      `**ratio** ${mib} MiB process memory / full stream`,
      ratio(c.processMemory.pauseMs.median / c.fullStream.pauseMs.median),
      '',
      ratio(c.processMemory.totalMs.median / c.fullStream.totalMs.median),
      '',
      '',
    ]);
  }
  const cNote =
    `Captures of the same running foreign guest(s), ${FOREIGN_CAPTURE_RUNS} interleaved runs each, median (min). Guest pause: ` +
    `QEMU's STOP → RESUME for process memory (QEMU stops the guest when its precopy migration converges; vmi reads ` +
    `the RAM pages the stream did not show as zero through /proc/PID/mem, then cont), vmi's stop → cont for the full ` +
    `stream. "RAM ms": the process-memory read during the pause, or splitting ram.raw out of the stream after the ` +
    `guest resumed. Wall: capture create start → capture renamed into place.`;
  const md = await format(
    `${markdown(header, rows)}\n\n${note}\n\n${markdown(cHeader, cRows)}\n\n${cNote}\n`,
    { parser: 'markdown' },
  );
  await writeFile(join(HERE, 'results-foreign.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-foreign.md'), md);
  process.stdout.write(`${plain(header, rows)}\n\n${note}\n\n${plain(cHeader, cRows)}\n\n${cNote}\n`);
  log('wrote bench/results-foreign.json and bench/results-foreign.md');
}

// ------------------------------------------------------------------ rendering

const f = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const ms = (s, digits = 1) => (s ? `${f(s.median, digits)} (${f(s.min, digits)})` : '–');
const ratio = (x) => (Number.isFinite(x) ? `${x.toFixed(1)}×` : '–');

function tableRows(levels) {
  const rows = [];
  const row = (label, fn) => rows.push([label, ...levels.map((l) => fn(l) ?? '–')]);
  row('processes in guest (psnative count)', (l) => String(l.psnative.procs));
  row('vmi pslist doorbell: attach ms', (l) => ms(l.pslistDoorbell.attachMs, 0));
  row('vmi pslist doorbell: of the attach, root context ms', (l) => ms(l.pslistDoorbell.contextMs, 2));
  row('vmi pslist doorbell: plugin ms', (l) => ms(l.pslistDoorbell.pluginMs, 2));
  row('vmi pslist doorbell: of which in batches ms', (l) => ms(l.pslistDoorbell.runMs, 2));
  row('vmi pslist doorbell: total ms', (l) => ms(l.pslistDoorbell.totalMs, 0));
  row(
    'vmi pslist doorbell: batches / syscalls',
    (l) => `${l.pslistDoorbell.batches} / ${l.pslistDoorbell.calls}`,
  );
  row('vmi pslist resident shadow, back to back: attach ms', (l) => ms(l.resident.pslist.attachMs, 1));
  row('vmi pslist resident shadow, back to back: of the attach, context re-check ms', (l) =>
    ms(l.resident.pslist.contextMs, 2),
  );
  row('vmi pslist resident shadow, back to back: plugin ms', (l) => ms(l.resident.pslist.pluginMs, 2));
  row('vmi pslist resident shadow, back to back: total ms', (l) => ms(l.resident.pslist.totalMs, 2));
  row(`vmi pslist resident shadow, ${GAP_MS} ms apart: plugin ms`, (l) =>
    ms(l.resident.pslistApart.pluginMs, 2),
  );
  row(`vmi pslist resident shadow, ${GAP_MS} ms apart: total ms`, (l) =>
    ms(l.resident.pslistApart.totalMs, 2),
  );
  row('vmi pslist resident shadow, back to back: host CPU ms per run (all threads of the API process)', (l) =>
    ms(l.resident.pslist.hostCpuMs, 2),
  );
  row('vmi pslist resident shadow, warm-up: runs; median of the first 10 → of the last 10 ms', (l) =>
    l.resident.warmup
      ? `${l.resident.warmup.runs}; ${f(l.resident.warmup.firstTenMs, 1)} → ${f(l.resident.warmup.lastTenMs, 1)}`
      : undefined,
  );
  row('resident shadow: attach → first result ms', (l) => ms(l.resident.attachToFirstResultMs, 2));
  row('resident shadow idle: guest CPU %', (l) => `${f(l.resident.idleCpuPercent, 2)}%`);
  row('plain 10 ms nanosleep loop: guest CPU %', (l) => `${f(l.resident.naiveNap10msCpuPercent, 2)}%`);
  row('vmi pslist trap: attach ms', (l) => ms(l.pslistTrap.attachMs, 0));
  row('vmi pslist trap: of the attach, root context ms', (l) => ms(l.pslistTrap.contextMs, 2));
  row('vmi pslist trap: plugin ms', (l) => ms(l.pslistTrap.pluginMs, 2));
  row('vmi pslist trap: of which in batches ms', (l) => ms(l.pslistTrap.runMs, 2));
  row('vmi pslist trap: total ms', (l) => ms(l.pslistTrap.totalMs, 0));
  row('vmi pslist trap: batches / syscalls', (l) => `${l.pslistTrap.batches} / ${l.pslistTrap.calls}`);
  row('vmi psaux doorbell: plugin ms', (l) => l.psauxDoorbell && ms(l.psauxDoorbell.pluginMs, 2));
  row('vmi psaux doorbell: of which in batches ms', (l) => l.psauxDoorbell && ms(l.psauxDoorbell.runMs, 2));
  row('vmi psaux doorbell: total ms', (l) => l.psauxDoorbell && ms(l.psauxDoorbell.totalMs, 0));
  row(
    'vmi psaux doorbell: batches / syscalls',
    (l) => l.psauxDoorbell && `${l.psauxDoorbell.batches} / ${l.psauxDoorbell.calls}`,
  );
  row('psnative (in guest) ms', (l) => `${ms(l.psnative, 2)}, ${l.psnative.syscalls} syscalls`);
  row(`psnative, passes ${GAP_MS} ms apart ms`, (l) => ms(l.psnativeApart, 2));
  row('psnative --cmdline ms', (l) => `${ms(l.psnativeCmdline, 2)}, ${l.psnativeCmdline.syscalls} syscalls`);
  row('busybox ps (fork+exec, in guest) ms', (l) => ms(l.busyboxPs, 2));
  row('**ratio** pslist plugin / psnative', (l) => ratio(l.ratios.pslistPluginVsNative));
  row('psnative beside the resident series, back to back ms (median of block medians)', (l) =>
    ms(l.resident.pslist.native, 2),
  );
  row(`psnative beside the resident series, ${GAP_MS} ms apart ms`, (l) =>
    ms(l.resident.pslistApart.native, 2),
  );
  row('**ratio** pslist resident total / psnative beside it (back to back; median of block ratios)', (l) =>
    ratio(l.ratios.pslistResidentTotalVsNative),
  );
  row(`**ratio** pslist resident total / psnative beside it (${GAP_MS} ms apart)`, (l) =>
    ratio(l.ratios.pslistResidentApartTotalVsNativeApart),
  );
  row('**ratio** pslist total / psnative', (l) => ratio(l.ratios.pslistTotalVsNative));
  row('**ratio** pslist plugin / busybox ps', (l) => ratio(l.ratios.pslistPluginVsBusyboxPs));
  row('**ratio** pslist total / busybox ps', (l) => ratio(l.ratios.pslistTotalVsBusyboxPs));
  row('**ratio** pslist trap plugin / psnative', (l) => ratio(l.ratios.pslistTrapPluginVsNative));
  row('**ratio** psaux plugin / psnative --cmdline', (l) => ratio(l.ratios.psauxPluginVsNativeCmdline));
  row('**ratio** psaux plugin / busybox ps', (l) => ratio(l.ratios.psauxPluginVsBusyboxPs));
  return rows;
}

function markdown(header, rows) {
  const lines = [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i ? ' ---: ' : ' --- ')).join('|')}|`,
  ];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

function plain(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c).replace(/\*\*/g, '')));
  const w = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all
    .map((r, j) => {
      const line = r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
      return j === 0 ? `${line}\n${'-'.repeat(line.length)}` : line;
    })
    .join('\n');
}

function extrasRows(results) {
  const rows = [];
  for (const l of results.levels) {
    if (!l.getpid) continue;
    rows.push([
      `getpid batch, doorbell, back to back (${GETPID_HOT}), ${l.procs} procs`,
      `${f(l.getpid.backToBackMs.median, 3)} ms (min ${f(l.getpid.backToBackMs.min, 3)})`,
    ]);
    rows.push([
      `getpid batch, doorbell, first after 1 s idle (${GETPID_IDLE}), ${l.procs} procs`,
      `${f(l.getpid.afterIdle1sMs.median, 3)} ms (min ${f(l.getpid.afterIdle1sMs.min, 3)})`,
    ]);
  }
  const s = results.slopeUsPerProcess;
  if (s) {
    rows.push([
      `slope, vmi pslist doorbell plugin time (${s.from}→${s.to} procs)`,
      `${f(s.pslistDoorbell, 1)} µs/process`,
    ]);
    rows.push([`slope, vmi pslist trap plugin time`, `${f(s.pslistTrap, 1)} µs/process`]);
    if (Number.isFinite(s.psauxDoorbell))
      rows.push([`slope, vmi psaux doorbell plugin time`, `${f(s.psauxDoorbell, 1)} µs/process`]);
    rows.push([`slope, psnative`, `${f(s.psnative, 1)} µs/process`]);
    rows.push([`slope, psnative --cmdline`, `${f(s.psnativeCmdline, 1)} µs/process`]);
    rows.push([`slope, busybox ps`, `${f(s.busyboxPs, 1)} µs/process`]);
    rows.push([`slope ratio, vmi pslist doorbell / psnative`, ratio(s.pslistDoorbell / s.psnative)]);
    rows.push([
      `slope, vmi pslist resident shadow total, back to back`,
      `${f(s.pslistResident, 1)} µs/process (${ratio(s.pslistResident / s.psnativeBeside)} that of psnative beside it)`,
    ]);
    rows.push([`slope, psnative beside the resident series`, `${f(s.psnativeBeside, 1)} µs/process`]);
  }
  const fit = results.linearFit;
  if (fit) {
    const line = (x) =>
      `${f(x.slopeUs, 1)} µs/process ${x.interceptMs < 0 ? '−' : '+'} ${f(Math.abs(x.interceptMs), 2)} ms, R² ${x.r2.toFixed(4)}`;
    rows.push([
      `least-squares line over all levels, vmi pslist resident (back to back)`,
      line(fit.pslistResident),
    ]);
    rows.push([`least-squares line over all levels, psnative`, line(fit.psnative)]);
    rows.push([
      `least-squares line over all levels, psnative beside the resident series`,
      line(fit.psnativeBeside),
    ]);
  }
  return rows;
}

// ------------------------------------------------------------------ vmi watch

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

/** Busy share (%) of all guest CPUs over `seconds`, from /proc/stat's cpu line (idle + iowait are idle). */
async function guestBusyPercent(con, seconds) {
  const read = async () => {
    const f = (await guestRun(con, 'head -1 /proc/stat')).trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { total, idle: f[3] + (f[4] ?? 0) };
  };
  const a = await read();
  await sleep(seconds * 1000);
  const b = await read();
  return (1 - (b.idle - a.idle) / (b.total - a.total)) * 100;
}

/**
 * vmi watch as a user runs it (watchGuests, all four sources), on its own lab guest: for
 * each interval, the latency from starting a process in the guest (host clock just before
 * the console command is sent: the figure includes the console's delivery, ~1–5 ms) to
 * its process_started event (the event's observed time, same host clock ±1 ms), and the
 * guest CPU the watch costs: the shadow's own CPU time and the whole guest's busy share,
 * against the idle guest.
 */
async function watchBench() {
  const name = `${GUEST}-watch`;
  await labDown(name);
  const guest = await labUp({ name, onProgress: (m) => log(`  ${m}`) });
  const con = await GuestConsole.connect(guest.serialSocket);
  const clock = makeClock();
  const out = { started: new Date().toISOString(), guest: name, samples: WATCH_SAMPLES, intervals: [] };
  try {
    log(`idle guest, no watch (${WATCH_CPU_SECONDS} s)`);
    out.idleGuestBusyPercent = await guestBusyPercent(con, WATCH_CPU_SECONDS);
    for (const { mode, intervalMs } of WATCH_SERIES) {
      log(`watch every ${intervalMs} ms, ${mode} snapshots`);
      const stop = new AbortController();
      const seen = new Map(); // pid → { observed ns, START_MS }
      let baselines = 0;
      const ticksMs = [];
      const watching = watchGuests({
        guests: [name],
        intervalMs,
        fullSnapshots: mode === 'full',
        signal: stop.signal,
        emit: async (e) => {
          if (e.kind === 'process_started' && !seen.has(Number(e.row.PID)))
            seen.set(Number(e.row.PID), { te: e.timeNs, startMs: e.row.START_MS });
        },
        status: (m) => {
          if (m.includes('baseline:')) baselines++;
        },
      });
      const latencies = [];
      const inGuest = [];
      let watchError;
      try {
        for (let i = 0; i < 600 && baselines < 4; i++) await sleep(50);
        if (baselines < 4) throw new Error('no baseline from the watch');
        for (let i = 0; i < WATCH_SAMPLES; i++) {
          await sleep(Math.random() * intervalMs + 50);
          const t0 = clock();
          // The guest's uptime (CLOCK_BOOTTIME, 10 ms steps) just after the fork, in the same reply.
          const [pidText, upText] = (
            await guestRun(con, 'sleep 3 >/dev/null 2>&1 & echo $! $(cat /proc/uptime)')
          )
            .trim()
            .split(/\s+/);
          const t1 = clock();
          const pid = Number(pidText);
          let got;
          for (let k = 0; k < 200 && (got = seen.get(pid)) === undefined; k++) await sleep(10);
          if (got === undefined) throw new Error(`no process_started for pid ${pid}`);
          latencies.push(Number(got.te - t0) / 1e6);
          // From the process's start as the guest's kernel stamped it (start_boottime): guest
          // time from the stamp to the reply, then host time from the reply to the event
          // (only the reply's way out of the console is left out).
          if (typeof got.startMs === 'bigint')
            inGuest.push(Number(upText) * 1000 - Number(got.startMs) + Number(got.te - t1) / 1e6);
        }
        await sleep(3500); // the sleeps exit before the CPU is measured
        const shadowPid = Number(
          (
            await guestRun(
              con,
              'for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = vmi-shadow ] && echo ${d#/proc/}; done; true',
            )
          )
            .trim()
            .split('\n')[0],
        );
        log(`  shadow pid ${shadowPid}: CPU over ${WATCH_CPU_SECONDS} s`);
        const [shadowCpu, busy] = await Promise.all([
          cpuPercent(con, shadowPid, WATCH_CPU_SECONDS),
          guestBusyPercent(con, WATCH_CPU_SECONDS),
        ]);
        out.intervals.push({
          mode,
          intervalMs,
          latencyMs: { p50: quantile(latencies, 0.5), p95: quantile(latencies, 0.95), samples: latencies },
          inGuestLatencyMs: { p50: quantile(inGuest, 0.5), p95: quantile(inGuest, 0.95), samples: inGuest },
          shadowCpuPercent: shadowCpu,
          guestBusyPercent: busy,
        });
        log(
          `  latency p50 ${quantile(latencies, 0.5).toFixed(0)} ms, p95 ${quantile(latencies, 0.95).toFixed(0)} ms ` +
            `(from the guest's start stamp: p50 ${quantile(inGuest, 0.5).toFixed(0)}, p95 ${quantile(inGuest, 0.95).toFixed(0)}); ` +
            `shadow CPU ${shadowCpu.toFixed(2)}%, guest busy ${busy.toFixed(2)}% (idle guest ${out.idleGuestBusyPercent.toFixed(2)}%)`,
        );
      } finally {
        stop.abort();
        // The watch's own failure is thrown after the finally (a throw inside it would hide another error).
        const r = await watching;
        for (const o of r.outcomes) {
          if (o.error) watchError ??= o.error;
          else ticksMs.push(...o.stats.tickMs);
        }
        // Shown here too: an error of a sample (e.g. no event in time) leaves the finally first.
        if (watchError) log(`  the watch failed: ${watchError.message}`);
        const last = out.intervals[out.intervals.length - 1];
        if (last && last.intervalMs === intervalMs && last.mode === mode)
          last.snapshotMs = { p50: quantile(ticksMs, 0.5), p95: quantile(ticksMs, 0.95) };
      }
      if (watchError) throw watchError;
    }
  } finally {
    con.close();
    await labDown(name);
  }
  out.loadavg = loadavg();
  await writeFile(join(HERE, 'results-watch.json'), `${JSON.stringify(out, null, 2)}\n`);
  const rows = out.intervals.map(
    (x) =>
      `| ${x.mode} | ${x.intervalMs} ms | ${x.latencyMs.p50.toFixed(0)} / ${x.latencyMs.p95.toFixed(0)} | ${x.inGuestLatencyMs.p50.toFixed(0)} / ${x.inGuestLatencyMs.p95.toFixed(0)} | ${x.snapshotMs?.p50.toFixed(1)} / ${x.snapshotMs?.p95.toFixed(1)} | ${x.shadowCpuPercent.toFixed(2)}% | ${x.guestBusyPercent.toFixed(2)}% |`,
  );
  const md =
    `# vmi watch (${out.started}, guest ${name}, ${WATCH_SAMPLES} samples per series, load ${out.loadavg.map((l) => l.toFixed(2)).join(' ')})\n\n` +
    'Latency "console": host clock before the command is sent to the guest\'s console → the event\'s observed time. ' +
    '"guest stamp": the kernel\'s start time of the process (start_boottime, 10 ms steps) → the console\'s reply, in guest time (/proc/uptime in the same reply), + the reply → the event, in host time.\n\n' +
    '| snapshots | interval | exec → event ms, console p50 / p95 | guest stamp p50 / p95 | snapshot ms p50 / p95 | shadow CPU | guest busy |\n' +
    '| --- | --- | --- | --- | --- | --- | --- |\n' +
    `${rows.join('\n')}\n| no watch | | | | | | ${out.idleGuestBusyPercent.toFixed(2)}% |\n`;
  await writeFile(join(HERE, 'results-watch.md'), await format(md, { parser: 'markdown' }));
  process.stdout.write(md);
}

/**
 * BENCH_ONLY=serve: what `vmi plugins run pslist` costs from the shell (spawn → exit, the
 * table on stdout), on one 256 MiB lab guest, in interleaved rounds: with a fresh shadow,
 * with a resident shadow (attach from a new process: gdbstub/QMP, RAM map, re-check), and
 * through a `vmi serve` of the guest (bin/run.js's fast path: no oclif, no attach) on this
 * Node and on the system's `node` (Debian's 20: the fast path skips the re-exec under the
 * private Node), and through the `vmi` command as installed (bin/vmi, the sh wrapper that
 * execs the native client dist/vmi-client: no Node process at all, which alone costs
 * 100-125 ms here). Beside them: a bare Node start, the fast client's module load, and the
 * server's own time per request (its -v log), so the rest is process start, socket and
 * rendering.
 */
async function serveBench() {
  const name = `${GUEST}-serve`;
  const started = new Date().toISOString();
  const load0 = loadavg();
  log(`booting lab guest ${name} (lab defaults); host load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const guest = await labUp({ name, onProgress: (m) => log(`  ${m}`) });
  const runJs = join(HERE, '..', 'bin', 'run.js');
  const vmiSh = join(HERE, '..', 'bin', 'vmi');
  if (!existsSync(join(HERE, '..', 'dist', 'vmi-client')))
    throw new Error('dist/vmi-client is missing: npm run build with a C compiler');
  // The system's Node (Debian's /usr/bin/node), as a user's shell finds `vmi` with it.
  const systemNode = process.env.BENCH_SYSTEM_NODE ?? (existsSync('/usr/bin/node') ? '/usr/bin/node' : '');
  const nodes = {
    this: process.execPath,
    ...(systemNode && systemNode !== process.execPath ? { system: systemNode } : {}),
  };
  const nodeVersion = (bin) => spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const wall = (bin, args, env = {}) => {
    const t0 = performance.now();
    const r = spawnSync(bin, args, {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      env: { ...process.env, ...env },
    });
    const msWall = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr.trim().slice(-300)}`);
    return { ms: msWall, stdout: r.stdout, stderr: r.stderr };
  };
  const pslist = ['plugins', 'run', 'pslist', '--guest', name];
  const off = { VMI_SERVER: 'off' };
  const fastImport = `await import(${JSON.stringify(join(HERE, '..', 'dist', 'server', 'fast-cli.js'))})`;
  const out = {
    started,
    node: process.version,
    nodes: {},
    runs: SERVE_RUNS,
    guest: { kernelRelease: guest.kernelRelease, ramBytes: guest.ramSize },
  };
  for (const [k, bin] of Object.entries(nodes)) out.nodes[k] = nodeVersion(bin);
  const samples = {};
  const add = (k, v) => (samples[k] ??= []).push(v);
  let server;
  try {
    wall(process.execPath, [runJs, '--help']); // warm-up: page cache, compile cache
    wall(process.execPath, [runJs, ...pslist], off);
    for (let i = 0; i < SERVE_RUNS; i++) {
      log(`  round ${i + 1}/${SERVE_RUNS}: node start, --help, fresh shadow`);
      for (const [k, bin] of Object.entries(nodes)) {
        add(`nodeStart.${k}`, wall(bin, ['-e', '0']).ms);
        add(`fastImport.${k}`, wall(bin, ['--input-type=module', '-e', fastImport]).ms);
      }
      add('help', wall(process.execPath, [runJs, '--help']).ms);
      add('fresh', wall(process.execPath, [runJs, ...pslist], off).ms);
    }
    await startResidentShadow(guest, { transport: 'doorbell' });
    wall(process.execPath, [runJs, ...pslist], off);
    for (let i = 0; i < SERVE_RUNS; i++) add('resident', wall(process.execPath, [runJs, ...pslist], off).ms);
    log('  starting vmi serve');
    server = spawn(process.execPath, [runJs, 'serve', '--guest', name, '-v'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let serverOut = '';
    let serverErr = '';
    server.stdout.on('data', (d) => (serverOut += d));
    server.stderr.on('data', (d) => (serverErr += d));
    const deadline = Date.now() + 120_000;
    while (!serverOut.includes('serving ')) {
      if (Date.now() > deadline || server.exitCode !== null)
        throw new Error(`vmi serve did not start: ${serverErr}`);
      await sleep(100);
    }
    for (const bin of Object.values(nodes)) wall(bin, [runJs, ...pslist]);
    wall(vmiSh, pslist);
    const servedMs = () =>
      [...serverErr.matchAll(/served plugins run .* in ([\d.]+) ms/g)].map((m) => Number(m[1]));
    for (let i = 0; i < SERVE_RUNS; i++) {
      for (const [k, bin] of Object.entries(nodes)) {
        const before = servedMs().length;
        const r = wall(bin, [runJs, ...pslist, '--timing']);
        if (!/through the vmi server/.test(r.stderr)) throw new Error(`not served: ${r.stderr}`);
        add(`served.${k}`, r.ms);
        while (servedMs().length === before) await sleep(10);
        add(`serverSide.${k}`, servedMs().at(-1));
      }
      // The `vmi` command as installed: the sh wrapper execs the native client, which
      // sends the command line and writes the bytes the server rendered (no Node at all).
      const before = servedMs().length;
      const r = wall(vmiSh, [...pslist, '--timing']);
      if (!/through the vmi server/.test(r.stderr)) throw new Error(`not served: ${r.stderr}`);
      add('served.native', r.ms);
      while (servedMs().length === before) await sleep(10);
      add('serverSide.native', servedMs().at(-1));
      add('clientSide.native', r.ms - servedMs().at(-1));
    }
  } finally {
    if (server && server.exitCode === null) {
      server.kill('SIGINT');
      await new Promise((r) => server.on('exit', r));
    }
    await stopResidentShadow(guest).catch(() => undefined);
    await labDown(name);
  }
  out.hostLoadavg = { before: load0, after: loadavg() };
  out.finished = new Date().toISOString();
  out.wallMs = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, stat(v)]));
  const w = out.wallMs;
  const rows = [
    [`\`node -e 0\` (Node ${out.nodes.this})`, ms(w['nodeStart.this'], 0)],
    ...(nodes.system
      ? [[`\`node -e 0\` (system Node ${out.nodes.system})`, ms(w['nodeStart.system'], 0)]]
      : []),
    [`fast client module load (Node ${out.nodes.this}, with Node start)`, ms(w['fastImport.this'], 0)],
    ...(nodes.system
      ? [
          [
            `fast client module load (system Node ${out.nodes.system}, with Node start)`,
            ms(w['fastImport.system'], 0),
          ],
        ]
      : []),
    ['`vmi --help` (oclif start-up)', ms(w.help, 0)],
    ['`vmi plugins run pslist`, fresh shadow', ms(w.fresh, 0)],
    ['`vmi plugins run pslist`, resident shadow, no server', ms(w.resident, 0)],
    [`\`vmi plugins run pslist\` through \`vmi serve\` (Node ${out.nodes.this})`, ms(w['served.this'], 0)],
    [`  of which the server's request (parse, re-attach, pslist)`, ms(w['serverSide.this'], 0)],
    ...(nodes.system
      ? [
          [
            `\`vmi plugins run pslist\` through \`vmi serve\` (system Node ${out.nodes.system})`,
            ms(w['served.system'], 0),
          ],
          [`  of which the server's request`, ms(w['serverSide.system'], 0)],
        ]
      : []),
    [
      '`vmi` through `vmi serve`, native client (bin/vmi → dist/vmi-client, no Node)',
      ms(w['served.native'], 0),
    ],
    [`  of which the server's request (parse, re-attach, pslist, render)`, ms(w['serverSide.native'], 0)],
    [
      `  of which the rest: spawn, sh wrapper, exec, connect, request, reply, write`,
      ms(w['clientSide.native'], 0),
    ],
  ];
  const note =
    `CLI wall time, spawn → exit with the table on stdout, ms: median (min) over ${SERVE_RUNS} runs. ` +
    `Guest: ${out.guest.kernelRelease}, ${out.guest.ramBytes / 2 ** 20} MiB, 1 vCPU, TCG. ` +
    `Host load average before/after: ${load0[0].toFixed(2)} / ${out.hostLoadavg.after[0].toFixed(2)} (2 cores). Run ${started}.`;
  const md = await format(`${markdown(['', 'wall ms'], rows)}\n\n${note}\n`, { parser: 'markdown' });
  await writeFile(join(HERE, 'results-serve.json'), JSON.stringify(out, null, 2) + '\n');
  await writeFile(join(HERE, 'results-serve.md'), md);
  process.stdout.write(`${plain(['', 'wall ms'], rows)}\n\n${note}\n`);
  log('wrote bench/results-serve.json and bench/results-serve.md');
}

// ------------------------------------------------------------------ main

async function main() {
  const pslist = builtinPlugins.find((p) => p.name === 'pslist');
  if (!pslist) throw new Error('pslist plugin not found (run npm run build)');
  if (ONLY_CAPTURE) return captureAndWall();
  if (ONLY_MEMORY) return memorySizes(pslist);
  if (ONLY_FOREIGN) return foreignGuest(pslist);
  if (ONLY_WATCH) return watchBench();
  if (ONLY_XVIEW) return crossView();
  if (ONLY_SQL) return sqlBench();
  if (ONLY_DEVICES) return devicesBench(pslist);
  if (ONLY_REALVM) return realvmBench(pslist);
  if (ONLY_SERVE) return serveBench();
  const psaux = builtinPlugins.find((p) => p.name === 'psaux');
  if (!psaux) log('psaux plugin not present: skipping it');
  const plugins = { pslist, psaux };

  const started = new Date().toISOString();
  const load0 = loadavg();
  log(`booting lab guest ${GUEST} (512 MiB, 1 vCPU); host load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const levels = [];
  let guest;
  let cli;
  try {
    guest = await labUp({ name: GUEST, memMiB: 512, cpus: 1, onProgress: (m) => log(`  ${m}`) });
    log(`CLI start-up (${CLI_RUNS} runs per cell)`);
    cli = await cliStartup(guest);
    if (ONLY_CLI) {
      const t = cliStartupTable(cli);
      process.stdout.write(`${plain(t.header, t.rows)}\n\nCells: median (min) over ${CLI_RUNS} runs.\n`);
      return;
    }
    const con = await GuestConsole.connect(guest.serialSocket, { timeoutMs: 10_000 });
    try {
      await guestRun(con, 'test -x /usr/sbin/psnative');
      const base = await procCount(con);
      log(`guest has ${base} processes before spawning`);
      let spawned = 0;
      for (const level of LEVELS) {
        const delta = level - spawned;
        if (delta > 0) {
          log(`spawning ${delta} more idle processes (total extra ${level})`);
          await guestRun(con, `psnative spawn ${delta}`, 600_000);
          spawned = level;
          const deadline = Date.now() + 120_000;
          while ((await procCount(con)) < base + level) {
            if (Date.now() > deadline) throw new Error(`guest never reached ${base + level} processes`);
            await sleep(500);
          }
          await sleep(1000); // let the forks settle
        }
        levels.push(await measureLevel(guest, con, plugins, level));
      }
    } finally {
      con.close();
    }
  } finally {
    log(`stopping ${GUEST}`);
    await labDown(GUEST).catch((e) => log(`labDown failed: ${e.message}`));
  }

  const results = {
    started,
    finished: new Date().toISOString(),
    guest: guest && {
      name: guest.name,
      kernelRelease: guest.kernelRelease,
      memMiB: guest.memMiB,
      cpus: guest.cpus,
      cpuModel: guest.cpuModel,
    },
    hostLoadavg: { before: load0, after: loadavg() },
    config: {
      runs: RUNS,
      residentRuns: RESIDENT_RUNS,
      nativeRuns: NATIVE_RUNS,
      psRuns: PS_RUNS,
      levels: LEVELS,
    },
    units: 'milliseconds unless named otherwise; {median, min, samples}',
    // `node bin/run.js ARGS` from start to exit, per Node (cliStartup).
    cliStartup: cli,
    levels,
    // vmi pslist (doorbell) plugin time / psnative median, per extra-process level.
    pslist_ratio_vs_native: Object.fromEntries(levels.map((l) => [l.extra, l.ratios.pslistPluginVsNative])),
    // Through a resident shadow, attach included (what `vmi plugins run` costs past Node
    // start-up): back to back against psnative's back-to-back passes...
    pslist_resident_total_ratio_vs_native: Object.fromEntries(
      levels.map((l) => [l.extra, l.ratios.pslistResidentTotalVsNative]),
    ),
    // ...and 100 ms apart (the shadow asleep before each run) against passes 100 ms apart.
    pslist_resident_apart_total_ratio_vs_native_apart: Object.fromEntries(
      levels.map((l) => [l.extra, l.ratios.pslistResidentApartTotalVsNativeApart]),
    ),
    pslist_total_ratio_vs_native: Object.fromEntries(
      levels.map((l) => [l.extra, l.ratios.pslistTotalVsNative]),
    ),
    pslist_ratio_vs_busybox_ps: Object.fromEntries(
      levels.map((l) => [l.extra, l.ratios.pslistPluginVsBusyboxPs]),
    ),
  };
  const hi = levels.find((l) => l.extra === 2000) ?? levels[levels.length - 1];
  const lo = levels.find((l) => l.extra === 500) ?? levels[levels.length - 2];
  if (hi && lo && hi !== lo) {
    const dp = hi.psnative.procs - lo.psnative.procs;
    const sl = (get) => ((get(hi) - get(lo)) * 1000) / dp;
    results.slopeUsPerProcess = {
      from: lo.psnative.procs,
      to: hi.psnative.procs,
      pslistDoorbell: sl((l) => l.pslistDoorbell.pluginMs.median),
      pslistTrap: sl((l) => l.pslistTrap.pluginMs.median),
      psauxDoorbell: hi.psauxDoorbell ? sl((l) => l.psauxDoorbell.pluginMs.median) : null,
      psnative: sl((l) => l.psnative.median),
      psnativeCmdline: sl((l) => l.psnativeCmdline.median),
      busyboxPs: sl((l) => l.busyboxPs.median),
      pslistResident: sl((l) => l.resident.pslist.totalMs.median),
      psnativeBeside: sl((l) => l.resident.pslist.native.median),
    };
  }
  if (levels.length >= 3) {
    // Linearity over every level: least-squares line of time against process count.
    results.linearFit = {
      pslistResident: linearFit(levels.map((l) => [l.psnative.procs, l.resident.pslist.totalMs.median])),
      psnative: linearFit(levels.map((l) => [l.psnative.procs, l.psnative.median])),
      psnativeBeside: linearFit(levels.map((l) => [l.psnative.procs, l.resident.pslist.native.median])),
    };
  }

  const header = ['', ...levels.map((l) => `+${l.extra} procs`)];
  const rows = tableRows(levels);
  const extras = extrasRows(results);
  const cliTable = cliStartupTable(cli);
  const note =
    `Guest: ${results.guest?.kernelRelease}, ${results.guest?.memMiB} MiB, ${results.guest?.cpus} vCPU, TCG. ` +
    `Cells: median (min) over ${RUNS} vmi runs (resident shadow: untimed warm-up runs, at least ${RESIDENT_WARMUP} and ${RESIDENT_WARMUP_MS / 1000} s, then ${RESIDENT_RUNS} runs per series) / ` +
    `${NATIVE_RUNS} psnative passes / ${PS_RUNS} busybox ps runs / ${CLI_RUNS} CLI start-ups. ` +
    `Host load average before/after: ${load0[0].toFixed(2)} / ${results.hostLoadavg.after[0].toFixed(2)}. ` +
    `Run ${started}.`;
  // Formatted like the rest of the tree, so `prettier --check .` stays clean.
  const md = await format(
    `${markdown(header, rows)}\n\n${markdown(['', 'value'], extras)}\n\n` +
      `${markdown(cliTable.header, cliTable.rows)}\n\n${note}\n`,
    { parser: 'markdown' },
  );
  await writeFile(join(HERE, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  await writeFile(join(HERE, 'results.md'), md);
  process.stdout.write(
    `${plain(header, rows)}\n\n${plain(['', 'value'], extras)}\n\n` +
      `${plain(cliTable.header, cliTable.rows)}\n\n${note}\n`,
  );
  log('wrote bench/results.json and bench/results.md');
}

main().catch((e) => {
  process.stderr.write(`[bench] failed: ${e.stack ?? e}\n`);
  process.exitCode = 1;
});
