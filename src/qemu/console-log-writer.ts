/**
 * The serial console's log, capped. QEMU writes the console into a FIFO (its chardev
 * `logfile=`); this small process, started before QEMU and detached from vmi, copies it
 * into console.log and, when that reaches the cap, renames it to console.log.1 (replacing
 * the previous one) and starts a new one: at most twice the cap on disk, whatever the
 * guest prints. It holds the FIFO open for reading and writing, so QEMU never blocks
 * opening it and a writer's exit is no end-of-file; it exits once QEMU (pid file) is gone.
 *
 * QEMU writes its console log synchronously: once the FIFO's 64 KiB are full, the guest's
 * console (and QEMU's main loop) wait for this reader. So reading never waits for the
 * disk: chunks are queued (at most MAX_PENDING bytes) and written asynchronously; what
 * does not fit is dropped and a line in the log says how much. A failed write (ENOSPC,
 * EIO) drops its chunk the same way instead of ending the writer. Measured: with this
 * process stopped (SIGSTOP) the guest's console stalls until it resumes; with it killed,
 * QEMU's log writes fail (EPIPE) and the guest goes on (test/unit/console-log-writer.test.ts).
 *
 *     node console-log-writer.js FIFO LOG CAP_BYTES QEMU_PID_FILE
 *
 * No imports beyond node: (it runs as a file of its own, from src/ or dist/).
 */
import {
  closeSync,
  constants,
  createReadStream,
  openSync,
  readFileSync,
  renameSync,
  write as fsWrite,
} from 'node:fs';

const [fifo, log, capText, pidFile] = process.argv.slice(2);
const cap = Number(capText);
if (!fifo || !log || !Number.isSafeInteger(cap) || cap <= 0 || !pidFile) {
  process.stderr.write('usage: console-log-writer FIFO LOG CAP_BYTES QEMU_PID_FILE\n');
  process.exit(2);
}

let outFd = openSync(log, 'a', 0o600);
let size = 0;
let seenQemu = false;

function rotate(): void {
  closeSync(outFd);
  renameSync(log, `${log}.1`);
  outFd = openSync(log, 'w', 0o600);
  size = 0;
}

/** Bytes read from the FIFO and not yet in the log; beyond it, output is dropped. */
const MAX_PENDING = 8 << 20;
const queue: Buffer[] = [];
let pending = 0;
let dropped = 0;
let writing = false;

function take(chunk: Buffer): void {
  if (pending + chunk.length > MAX_PENDING) {
    dropped += chunk.length;
    return;
  }
  queue.push(chunk);
  pending += chunk.length;
  pump();
}

/** Writes the queue head (with a note of what was dropped before it), one write at a time. */
function pump(): void {
  if (writing) return;
  const head = queue.shift();
  if (!head) return;
  writing = true;
  const note =
    dropped > 0
      ? Buffer.from(`\n[vmi: ${dropped} bytes of console output dropped: the log could not keep up]\n`)
      : undefined;
  dropped = 0;
  const chunk = note ? Buffer.concat([note, head]) : head;
  let off = 0;
  const next = (): void => {
    if (off >= chunk.length) {
      pending -= head.length;
      writing = false;
      pump();
      return;
    }
    fsWrite(outFd, chunk, off, Math.min(cap - size, chunk.length - off), null, (err, n) => {
      if (err) {
        // The disk refused it (full, failing): drop this chunk, keep reading.
        dropped += chunk.length - off;
        off = chunk.length;
      } else {
        off += n;
        size += n;
        if (size >= cap) rotate();
      }
      next();
    });
  };
  next();
}

// O_RDWR: opening a FIFO this way never blocks, and QEMU closing it is no EOF.
const fd = openSync(fifo, constants.O_RDWR);
createReadStream('', { fd, highWaterMark: 64 << 10 }).on('data', (c) => take(c as Buffer));

/** QEMU's pid from its pid file; exit when it has come and gone (or never came in 60 s). */
const started = Date.now();
let goneAt: number | undefined;
setInterval(() => {
  let pid = 0;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    // not written yet, or removed with the run dir
  }
  let alive = false;
  if (pid > 0) {
    try {
      process.kill(pid, 0);
      alive = true;
    } catch {
      alive = false;
    }
  }
  if (alive) seenQemu = true;
  if ((seenQemu && !alive) || (!seenQemu && Date.now() - started > 60_000)) {
    // Write what is queued first (at most 10 s more). process.exit() would wait for the
    // thread-pool thread blocked in read(2) on the FIFO, forever; end it outright.
    goneAt ??= Date.now();
    if ((queue.length > 0 || writing) && Date.now() - goneAt < 10_000) return;
    closeSync(outFd);
    process.kill(process.pid, 'SIGKILL');
  }
}, 1000);
