import { Writable } from 'node:stream';
import type { Table } from 'apache-arrow';
import { expect } from 'vitest';
import {
  NOT_AVAILABLE,
  UNREADABLE,
  unreadable,
  type ResultTable,
  type Sink,
} from '../../src/output/index.js';

/** A sink that keeps everything written, as bytes. */
export class MemorySink implements Sink {
  private chunks: Buffer[] = [];
  async write(chunk: string | Uint8Array): Promise<void> {
    this.chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
  text(): string {
    return this.bytes().toString('utf8');
  }
}

/** A Writable that collects output; `isTTY` can be faked. */
export class CollectingStream extends Writable {
  chunks: Buffer[] = [];
  isTTY = false;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    cb();
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

export const T0 = new Date(Date.UTC(2026, 10, 25, 10, 0, 0, 0));
export const T1 = new Date(Date.UTC(2026, 10, 25, 10, 0, 1, 250));

/** pslist-like table with nulls, markers, unicode and awkward strings. */
export function sampleTable(): ResultTable {
  return {
    plugin: 'pslist',
    columns: [
      { name: 'PID', type: 'int32', description: 'process id' },
      { name: 'PPID', type: 'int32' },
      { name: 'COMM', type: 'utf8' },
      { name: 'RSS', type: 'int64' },
      { name: 'OFFSET', type: 'hex64' },
      { name: 'CREATION TIME', type: 'timestamp_ms' },
      { name: 'KTHREAD', type: 'bool' },
      { name: 'CPU', type: 'float64' },
    ],
    rows: [
      [1, 0, 'init', 1234n, 0xffff888000000000n, T0, false, 0.5],
      [2, 0, 'kthreadd', null, NOT_AVAILABLE, T1, true, 0],
      [42, 1, 'a,b "c"\nd\te', UNREADABLE, 16, unreadable('ESRCH'), null, -1.25],
      [43, 1, 'héllo 世界 🚀', 9007199254740993n, 0n, null, false, null],
    ],
    errors: ['row for pid 99 lost: batch failed (EFAULT)'],
    metadata: { 'guest.name': 'lab1', 'vmi.kernel.release': '6.1.0-56-amd64' },
  };
}

/** The values of sampleTable() as any Arrow reader (IPC, Parquet) must give them back. */
export function expectSampleValues(t: Table): void {
  expect(t.numRows).toBe(4);
  expect(t.getChild('PID')?.toArray()).toEqual(new Int32Array([1, 2, 42, 43]));
  expect([...(t.getChild('COMM') ?? [])]).toEqual(['init', 'kthreadd', 'a,b "c"\nd\te', 'héllo 世界 🚀']);
  expect([...(t.getChild('RSS') ?? [])]).toEqual([1234n, null, null, 9007199254740993n]);
  expect([...(t.getChild('OFFSET') ?? [])]).toEqual([0xffff888000000000n, null, 16n, 0n]);
  expect([...(t.getChild('CREATION TIME') ?? [])]).toEqual([T0.getTime(), T1.getTime(), null, null]);
  expect([...(t.getChild('KTHREAD') ?? [])]).toEqual([false, true, null, false]);
  expect([...(t.getChild('CPU') ?? [])]).toEqual([0.5, 0, -1.25, null]);
}
