import { describe, expect, it } from 'vitest';
import {
  RspParser,
  checksum,
  escape,
  framePacket,
  fromHex,
  hexToString,
  isStopReply,
  normalizeThreadId,
  parseErrorReply,
  parseStopReply,
  parseSupported,
  parseThreadInfo,
  stringToHex,
  toHex,
  unescape,
  type RspEvent,
} from '../../src/qemu/gdb-rsp.js';

const feedAll = (p: RspParser, chunks: Uint8Array[]): RspEvent[] => chunks.flatMap((c) => p.feed(c));
const packets = (evs: RspEvent[]): string[] =>
  evs.filter((e) => e.type === 'packet').map((e) => (e as { data: Buffer }).data.toString('latin1'));

describe('framing', () => {
  it('checksums and frames', () => {
    expect(checksum('OK')).toBe(0x9a);
    expect(framePacket('OK').toString()).toBe('$OK#9a');
    expect(framePacket('g').toString()).toBe('$g#67');
    expect(framePacket('qSupported:multiprocess+').toString()).toMatch(
      /^\$qSupported:multiprocess\+#[0-9a-f]{2}$/,
    );
  });

  it('escapes $ # } * and unescapes them back', () => {
    const data = Buffer.from([0x24, 0x23, 0x7d, 0x2a, 0x41, 0x00, 0xff]);
    const esc = escape(data);
    expect([...esc]).toEqual([0x7d, 0x04, 0x7d, 0x03, 0x7d, 0x5d, 0x7d, 0x0a, 0x41, 0x00, 0xff]);
    expect(unescape(esc).equals(data)).toBe(true);
    const frame = framePacket(data);
    const evs = new RspParser().feed(frame);
    expect(evs).toHaveLength(1);
    expect(evs[0]!.type).toBe('packet');
    expect((evs[0] as { data: Buffer }).data.equals(data)).toBe(true);
  });

  it('decodes run-length encoding', () => {
    expect(unescape('0* ').toString()).toBe('0000'); // ' ' = 32 → 3 more
    expect(unescape('a*"b').toString()).toBe('aaaaaab'); // '"' = 34 → 5 more
    expect(unescape('x*\x1d').toString()).toBe('x'); // 29 → 0 more
    expect(() => unescape('*!')).toThrow(/preceding/);
    expect(() => unescape('a*')).toThrow(/count/);
    expect(() => unescape('ab}')).toThrow(/dangling/);
    // RLE inside a real frame (checksum over the encoded bytes)
    const body = '0* 1';
    const frame = `$${body}#${checksum(body).toString(16).padStart(2, '0')}`;
    expect(packets(new RspParser().feed(Buffer.from(frame)))).toEqual(['00001']);
  });

  it('hex helpers', () => {
    expect(toHex(Buffer.from([0, 1, 0xab]))).toBe('0001ab');
    expect(toHex(new Uint8Array([1, 2, 3]).subarray(1))).toBe('0203');
    expect(fromHex('0001AB')).toEqual(Buffer.from([0, 1, 0xab]));
    expect(() => fromHex('abc')).toThrow(/invalid hex/);
    expect(() => fromHex('zz')).toThrow(/invalid hex/);
    expect(hexToString(stringToHex('info status\n'))).toBe('info status\n');
  });
});

describe('RspParser', () => {
  const cs = (b: string): string => checksum(b).toString(16).padStart(2, '0');
  const stream = Buffer.from(
    '+$OK#9a+$T05thread:p01.01;#' + cs('T05thread:p01.01;') + '-%Stop:T05#' + cs('Stop:T05'),
  );

  it('yields acks, packets, nacks and notifications', () => {
    const evs = new RspParser().feed(stream);
    expect(evs.map((e) => e.type)).toEqual(['ack', 'packet', 'ack', 'packet', 'nack', 'notification']);
    expect(packets(evs)).toEqual(['OK', 'T05thread:p01.01;']);
  });

  it('gives the same events fed byte by byte and in random chunks', () => {
    const whole = new RspParser().feed(stream);
    const p1 = new RspParser();
    const bytes = feedAll(
      p1,
      [...stream].map((b) => Buffer.from([b])),
    );
    expect(bytes).toEqual(whole);
    for (let seed = 1; seed < 50; seed++) {
      let x = seed;
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length;) {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        const n = 1 + (x % 7);
        chunks.push(stream.subarray(i, i + n));
        i += n;
      }
      expect(feedAll(new RspParser(), chunks)).toEqual(whole);
    }
  });

  it('reports bad checksums as error events (with nack) and recovers', () => {
    const evs = new RspParser().feed(Buffer.from('$OK#00$OK#9a$OK#zz$OK#9a'));
    expect(evs.map((e) => e.type)).toEqual(['error', 'packet', 'error', 'packet']);
    expect(evs[0]).toMatchObject({ type: 'error', nack: true });
    expect((evs[0] as { message: string }).message).toMatch(/bad checksum/);
    expect((evs[2] as { message: string }).message).toMatch(/malformed checksum/);
  });

  it('skips garbage between packets and reports a truncated packet', () => {
    const p = new RspParser();
    const evs = p.feed(Buffer.from('garbage\r\n$O$OK#9ajunk+'));
    expect(evs.map((e) => e.type)).toEqual(['error', 'packet', 'ack']);
    expect((evs[0] as { message: string }).message).toMatch(/truncated/);
    expect(p.garbageBytes).toBeGreaterThan(0);
  });

  it('keeps a partial packet across chunks and reports undecodable bodies', () => {
    const p = new RspParser();
    expect(p.feed(Buffer.from('$O'))).toEqual([]);
    expect(packets(p.feed(Buffer.from('K#9a')))).toEqual(['OK']);
    const body = 'ab}';
    const evs = p.feed(Buffer.from(`$${body}#${checksum(body).toString(16).padStart(2, '0')}`));
    expect(evs[0]).toMatchObject({ type: 'error' });
    expect(p.feed(Buffer.from([0x03]))).toEqual([{ type: 'interrupt' }]);
  });
});

describe('reply parsers', () => {
  it('parses stop replies', () => {
    expect(parseStopReply('S05')).toMatchObject({ kind: 'signal', signal: 5 });
    const t = parseStopReply('T05thread:p01.02;swbreak:;');
    expect(t).toMatchObject({ kind: 'signal', signal: 5, thread: 'p1.2' });
    expect(t.pairs).toEqual({ thread: 'p01.02', swbreak: '' });
    expect(parseStopReply('T02thread:01;')).toMatchObject({ signal: 2, thread: '1' });
    expect(parseStopReply('W00')).toMatchObject({ kind: 'exited', code: 0 });
    expect(parseStopReply('W01;process:1')).toMatchObject({
      kind: 'exited',
      code: 1,
      pairs: { process: '1' },
    });
    expect(parseStopReply('X09')).toMatchObject({ kind: 'terminated', signal: 9 });
    expect(() => parseStopReply('OK')).toThrow();
    expect(() => parseStopReply('S05junk')).toThrow();
    expect(isStopReply('T05thread:p01.01;')).toBe(true);
    expect(isStopReply('S05')).toBe(true);
    expect(isStopReply('OK')).toBe(false);
    expect(isStopReply('E22')).toBe(false);
    expect(isStopReply('0123abcd')).toBe(false);
  });

  it('parses thread lists and thread ids', () => {
    expect(parseThreadInfo('mp01.01,p01.02')).toEqual({ ids: ['p1.1', 'p1.2'], done: false });
    expect(parseThreadInfo('m1,2')).toEqual({ ids: ['1', '2'], done: false });
    expect(parseThreadInfo('l')).toEqual({ ids: [], done: true });
    expect(() => parseThreadInfo('OK')).toThrow();
    expect(normalizeThreadId('p0a.10')).toBe('pa.10');
    expect(normalizeThreadId('-1')).toBe('-1');
    expect(() => normalizeThreadId('pxx.1')).toThrow();
  });

  it('parses errors and qSupported', () => {
    expect(parseErrorReply('E22')).toBe(0x22);
    expect(parseErrorReply('E.bad thing')).toBe('bad thing');
    expect(parseErrorReply('OK')).toBeUndefined();
    expect(parseSupported('PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+;foo-')).toEqual(
      {
        PacketSize: '1000',
        'qXfer:features:read': true,
        vContSupported: true,
        multiprocess: true,
        foo: false,
      },
    );
  });
});
