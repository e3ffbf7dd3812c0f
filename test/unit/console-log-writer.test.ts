/**
 * The console log writer (src/qemu/console-log-writer.ts, run from dist/ as vmi runs it)
 * with a log that does not keep up: its log is a FIFO this test holds open and does not
 * read, so every write of the writer's past the pipe's 64 KiB waits. QEMU writes its
 * console log synchronously, so a writer that stopped reading its input FIFO would stall
 * the guest's console: the test plays QEMU and checks that its writes into the input FIFO
 * still complete (the writer keeps reading, queues, then drops with a note), and that the
 * note and the newest output arrive once the log is read again.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBuilt, ROOT } from '../integration/helpers/cli.js';

const WRITER = join(ROOT, 'dist/qemu/console-log-writer.js');

describe('console log writer with a log that does not keep up', () => {
  let dir = '';
  let writer: ChildProcess | undefined;
  let input: FileHandle | undefined;
  let logReader: FileHandle | undefined;

  beforeAll(async () => {
    requireBuilt('dist/qemu/console-log-writer.js');
    dir = await mkdtemp(join(tmpdir(), 'vmi-conwriter-'));
    for (const f of ['in.fifo', 'log.fifo']) {
      const r = spawnSync('mkfifo', ['-m', '600', join(dir, f)]);
      expect(r.status).toBe(0);
    }
    // The "QEMU" whose pid file the writer watches: this test process.
    await writeFile(join(dir, 'qemu.pid'), `${process.pid}\n`);
    // The log's read end, open but not read: the writer's writes block once it is full.
    logReader = await open(join(dir, 'log.fifo'), constants.O_RDONLY | constants.O_NONBLOCK);
    writer = spawn(
      process.execPath,
      [WRITER, join(dir, 'in.fifo'), join(dir, 'log.fifo'), String(1 << 30), join(dir, 'qemu.pid')],
      { stdio: 'ignore' },
    );
    // The writer holds the input FIFO open for reading (O_RDWR); wait until it has.
    const t0 = Date.now();
    for (;;) {
      try {
        input = await open(join(dir, 'in.fifo'), constants.O_WRONLY | constants.O_NONBLOCK);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || Date.now() - t0 > 10_000) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  afterAll(async () => {
    if (writer?.pid) writer.kill('SIGKILL');
    await input?.close();
    await logReader?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Writes all of `buf` into the input FIFO as QEMU would (waiting when it is full); false after `ms`. */
  async function feed(buf: Buffer, ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    let off = 0;
    while (off < buf.length) {
      try {
        off += (await input!.write(buf, off, Math.min(65536, buf.length - off))).bytesWritten;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        if (Date.now() > until) return false;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    return true;
  }

  it('keeps reading while its log is stuck, drops beyond its queue with a note, and delivers the newest output', async () => {
    // 12 MiB: more than the pipes (2 × 64 KiB) and the writer's 8 MiB queue together.
    expect(await feed(Buffer.alloc(12 << 20, 0x78), 20_000)).toBe(true);
    // Now read the log (the queued output, then the note), and write a line once it flows again.
    let text = '';
    const buf = Buffer.alloc(1 << 20);
    const readUntil = async (what: string | RegExp): Promise<void> => {
      const t0 = Date.now();
      const seen = () => (typeof what === 'string' ? text.includes(what) : what.test(text));
      while (!seen() && Date.now() - t0 < 30_000) {
        try {
          const { bytesRead } = await logReader!.read(buf, 0, buf.length, null);
          // The filler collapsed, to keep the string small.
          text += buf.subarray(0, bytesRead).toString('latin1').replace(/x+/g, 'x');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    await readUntil(/dropped: the log could not keep up\]/);
    expect(await feed(Buffer.from('\nnewest-line-42\n'), 5_000)).toBe(true);
    await readUntil('newest-line-42');
    expect(text).toMatch(/\[vmi: \d+ bytes of console output dropped: the log could not keep up\]/);
    expect(text).toContain('newest-line-42');
    expect(writer!.exitCode).toBeNull();
  }, 90_000);
});
