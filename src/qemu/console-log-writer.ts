/**
 * The serial console's log, capped. QEMU writes the console into a FIFO (its chardev
 * `logfile=`); this small process, started before QEMU and detached from vmi, copies it
 * into console.log and, when that reaches the cap, renames it to console.log.1 (replacing
 * the previous one) and starts a new one: at most twice the cap on disk, whatever the
 * guest prints. It holds the FIFO open for reading and writing, so QEMU never blocks
 * opening it and a writer's exit is no end-of-file; it exits once QEMU (pid file) is gone.
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
  writeSync,
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

function write(chunk: Buffer): void {
  let off = 0;
  while (off < chunk.length) {
    const n = writeSync(outFd, chunk, off, Math.min(cap - size, chunk.length - off));
    off += n;
    size += n;
    if (size >= cap) rotate();
  }
}

// O_RDWR: opening a FIFO this way never blocks, and QEMU closing it is no EOF.
const fd = openSync(fifo, constants.O_RDWR);
createReadStream('', { fd, highWaterMark: 64 << 10 }).on('data', (c) => write(c as Buffer));

/** QEMU's pid from its pid file; exit when it has come and gone (or never came in 60 s). */
const started = Date.now();
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
    // Every chunk was written synchronously: nothing is pending. process.exit() would wait
    // for the thread-pool thread blocked in read(2) on the FIFO, forever; end it outright.
    closeSync(outFd);
    process.kill(process.pid, 'SIGKILL');
  }
}, 1000);
