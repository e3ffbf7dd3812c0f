import { createWriteStream, openSync } from 'node:fs';
import { Flags } from '@oclif/core';
import { VmiCommand } from '../cli/base-command.js';
import PluginsRun from './plugins/run.js';
import type { GuestSpec } from '../api/index.js';
import { DEFAULT_LAB_NAME, listLabGuests } from '../lab/lab.js';
import { parseFileMode, streamSink, type Sink } from '../output/sink.js';
import { TRANSPORT_CHOICES } from '../shadow/transport.js';
import { eventLine } from '../watch/events.js';
import { SOURCE_NAMES, type SourceName } from '../watch/sources.js';
import { parseInterval, watchGuests } from '../watch/watch.js';
import { exposeWatchedGuests } from '../server/watch-hook.js';

export default class Watch extends VmiCommand {
  static override summary =
    'Watch guests for changes: processes, listeners, kernel modules, mounts (JSON Lines)';

  static override description = `Takes a snapshot of each guest every --interval through a resident shadow and prints one JSON object per line for every change: process_started / process_exited (with argv, user, parent), listener_opened / listener_closed, module_loaded / module_unloaded, mount_added / mount_removed. Each event has the guest, the time vmi observed it (ISO 8601 with nanoseconds, and time_ns), the kind and the row (docs/watch.md).

The first snapshot is the baseline and makes no events: a restarted watch starts from the guest's current state. A process is known by its PID and start time, so a reused PID is a new process.

SIGINT or SIGTERM ends the watch after the snapshot in flight and removes the shadow from each guest (--keep-shadow leaves it for the next vmi). Status goes to stderr; a closed stdout (\`vmi watch | head\`) ends the watch quietly.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --interval 100ms --only process',
    '<%= config.bin %> <%= command.id %> --guest a --guest b -o events.jsonl',
    '<%= config.bin %> <%= command.id %> --qmp /run/my-vm/qmp.sock',
  ];

  static override flags = {
    guest: Flags.string({
      char: 'g',
      description: 'lab guest to watch (default: lab, booted if needed); repeat for several',
      multiple: true,
    }),
    'all-guests': Flags.boolean({ description: 'watch every running lab guest' }),
    qmp: Flags.string({
      description: 'QMP socket of a QEMU that vmi did not start (repeatable)',
      multiple: true,
    }),
    interval: Flags.string({
      char: 'i',
      description: 'time between snapshots: 50ms to 1s (e.g. 100ms, 0.5s)',
      default: '1s',
    }),
    only: Flags.string({
      description: 'watch only these sources (repeatable; default: all)',
      options: [...SOURCE_NAMES],
      multiple: true,
    }),
    output: Flags.string({ char: 'o', description: 'append the events to this file instead of stdout' }),
    'output-mode': Flags.string({
      description: 'permissions of a file -o creates, octal (default 0600: events hold command lines)',
      default: '0600',
    }),
    'full-snapshots': Flags.boolean({
      description:
        'read every source whole at every tick (watch-processes, sockstat, lsmod, mountinfo) instead of only what changed',
    }),
    'keep-shadow': Flags.boolean({
      description: 'leave the resident shadow in each guest at the end (the next vmi reuses it)',
    }),
    transport: Flags.option({
      description: 'how batches reach the shadow: doorbell (shared RAM) or trap (VM stopped)',
      options: TRANSPORT_CHOICES,
      default: 'auto' as const,
    })(),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Watch);
    let exitCode = 0;
    try {
      const intervalMs = parseInterval(flags.interval);
      const mode = parseFileMode(flags['output-mode']);
      const specs: GuestSpec[] = [...(flags.guest ?? [])];
      if (flags['all-guests']) for (const g of await listLabGuests()) specs.push(g.name);
      for (const q of flags.qmp ?? []) specs.push({ qmp: q });
      if (specs.length === 0) specs.push(DEFAULT_LAB_NAME);
      const unique = [...new Map(specs.map((s) => [JSON.stringify(s), s])).values()];

      // Opened before any guest is attached: a path that cannot be written is a one-line
      // error with nothing attached, not an 'error' event after the baseline.
      let fd: number | undefined;
      if (flags.output !== undefined) {
        try {
          fd = openSync(flags.output, 'a', mode);
        } catch (err) {
          throw new Error(`cannot open -o ${flags.output}: ${(err as Error).message}`, { cause: err });
        }
      }
      const stream = fd !== undefined ? createWriteStream('', { fd }) : process.stdout;
      const sink: Sink = streamSink(stream);
      const stop = new AbortController();
      // A write that fails after it was accepted (EIO, ENOSPC on a file) arrives as an
      // 'error' event: the watch stops, detaches as on SIGINT, and says so.
      let outputError: Error | undefined;
      if (stream !== process.stdout)
        stream.on('error', (err) => {
          outputError ??= err;
          stop.abort();
        });
      const onSignal = (name: string) => () => {
        if (stop.signal.aborted) {
          // A second signal: leave now; the crash journal lets the next vmi clean up.
          process.exit(130);
        }
        this.progress(`${name}: detaching`);
        stop.abort();
      };
      // The watched guests are served to other vmi processes meanwhile (docs/serve.md).
      const exposed = exposeWatchedGuests(unique, {
        planner: (argv) => new PluginsRun(argv, this.config).plan(),
        keepShadow: flags['keep-shadow'],
        transport: flags.transport,
        signal: stop.signal,
        status: (m) => this.progress(m),
      });
      const onInt = onSignal('SIGINT');
      const onTerm = onSignal('SIGTERM');
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
      try {
        const result = await watchGuests({
          guests: unique,
          intervalMs,
          ...(flags.only ? { sources: flags.only as SourceName[] } : {}),
          keepShadow: flags['keep-shadow'],
          fullSnapshots: flags['full-snapshots'],
          transport: flags.transport,
          signal: stop.signal,
          emit: (e) => sink.write(eventLine(e)),
          status: (m) => this.progress(m),
        });
        if (outputError) {
          // The guests' own errors, if any, are this one's consequences (a closed stream).
          process.stderr.write(`vmi: error: writing the events to ${flags.output}: ${outputError.message}\n`);
          exitCode = 1;
        } else {
          const failed = result.outcomes.filter((o) => o.error);
          for (const o of failed) process.stderr.write(`vmi: error: guest ${o.guest}: ${o.error!.message}\n`);
          if (failed.length > 0) exitCode = failed.length === result.outcomes.length ? 1 : 3;
        }
      } finally {
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        stop.abort();
        await exposed.close();
        if (stream !== process.stdout && !stream.destroyed) await new Promise<void>((r) => stream.end(r));
      }
    } catch (err) {
      this.fail(err);
    } finally {
      if (exitCode !== 0) process.exitCode = exitCode;
    }
  }
}
