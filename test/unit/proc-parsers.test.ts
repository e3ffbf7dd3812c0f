import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  parseCmdline,
  parseEnviron,
  parsePidStat,
  parsePidStatus,
  parseProcStat,
  parseUptime,
  ProcParseError,
} from '../../src/abi/linux/proc/index.js';

const fixture = (name: string) =>
  new Uint8Array(readFileSync(new URL(`./fixtures/proc/${name}`, import.meta.url)));
const text = (name: string) => new TextDecoder().decode(fixture(name));

describe('parsePidStat', () => {
  it('parses a real user process', () => {
    const s = parsePidStat(fixture('sleep-stat.txt'));
    expect(s.comm).toBe('sleep');
    expect(s.state).toBe('S');
    expect(s.pid).toBeGreaterThan(0);
    expect(s.numThreads).toBe(1);
    expect(s.starttime).toBeGreaterThan(0);
    expect(typeof s.vsize).toBe('bigint');
    expect(s.rest.length).toBeGreaterThan(20);
  });

  it('parses kernel threads (long comm with / and -)', () => {
    const k = parsePidStat(fixture('kworker-stat.txt'));
    expect(k.comm).toBe('kworker/0:0-events');
    expect(k.state).toBe('I');
    expect(k.ppid).toBe(2);
    expect(parsePidStat(fixture('kthread-stat.txt')).comm).toBe('kthreadd');
  });

  it("uses the last ')' for comm with spaces and parentheses", () => {
    const s = parsePidStat(fixture('paren-comm-stat.txt'));
    expect(s.pid).toBe(4242);
    expect(s.comm).toBe('evil) name) (x');
    expect(s.state).toBe('R');
    expect(s.starttime).toBe(5000);
  });

  it('throws ProcParseError with a one-line message naming the file', () => {
    const cases = [
      '',
      'garbage',
      '12 (x',
      '12 (x) S 1 2',
      'abc (x) S' + ' 1'.repeat(30),
      '1 (x) SS' + ' 1'.repeat(30),
    ];
    for (const c of cases) {
      let err: unknown;
      try {
        parsePidStat(c, '/proc/12/stat');
      } catch (e) {
        err = e;
      }
      expect(err, c).toBeInstanceOf(ProcParseError);
      expect((err as Error).message).toMatch(/^\/proc\/12\/stat: /);
      expect((err as Error).message).not.toContain('\n');
    }
  });
});

describe('parsePidStatus', () => {
  it('parses a real status file', () => {
    const s = parsePidStatus(fixture('sleep-status.txt'));
    expect(s.name).toBe('sleep');
    expect(s.state).toBe('S');
    expect(s.uid).toBeDefined();
    expect(s.gid).toBeDefined();
    expect(s.threads).toBe(1);
    expect(s.fields.get('VmRSS')).toMatch(/kB$/);
    expect(parsePidStatus(fixture('kthread-status.txt')).name).toBe('kthreadd');
  });

  it('reads real and effective ids in kernel order', () => {
    const s = parsePidStatus('Name:\ta\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n');
    expect(s.uid).toEqual({ real: 1, effective: 2, saved: 3, fs: 4 });
    expect(s.gid).toEqual({ real: 5, effective: 6, saved: 7, fs: 8 });
  });

  it('undoes name escapes', () => {
    // From the guest's bytes; a backslash of the name is `\x5c` in byte text.
    expect(parsePidStatus(Buffer.from('Name:\ta\\nb\\\\c\n')).name).toBe('a\nb\\x5cc');
  });

  it('rejects garbage and malformed ids', () => {
    for (const c of ['', '\n', 'no colon here\n', 'Uid:\t1\t2\n', 'Uid:\ta\tb\tc\td\n', 'Pid:\t-\n']) {
      expect(() => parsePidStatus(c), JSON.stringify(c)).toThrow(ProcParseError);
    }
  });
});

describe('cmdline and environ', () => {
  it('splits NUL-separated strings', () => {
    expect(parseCmdline(fixture('sshd-cmdline.bin'))).toEqual([
      '/usr/sbin/sshd',
      '-D',
      '-o',
      'LogLevel=INFO',
    ]);
    expect(parseCmdline(new Uint8Array(0))).toEqual([]);
    expect(parseCmdline('no-trailing-nul')).toEqual(['no-trailing-nul']);
    expect(parseCmdline('a\0\0b\0')).toEqual(['a', '', 'b']);
  });

  it('parses environ entries, keeping odd ones', () => {
    expect(parseEnviron(fixture('environ.bin'))).toEqual([
      { key: 'PATH', value: '/usr/bin:/bin' },
      { key: 'HOME', value: '/root' },
      { key: 'LANG', value: 'C.UTF-8' },
      { key: 'EMPTY', value: '' },
      { key: 'NOEQUALS', value: '' },
      { key: 'A', value: 'b=c' },
    ]);
  });
});

describe('/proc/stat and /proc/uptime', () => {
  it('parses real samples', () => {
    const st = parseProcStat(fixture('stat.txt'));
    expect(st.btime).toBeGreaterThan(1_000_000_000);
    expect(st.processes).toBeGreaterThan(0);
    const up = parseUptime(fixture('uptime.txt'));
    expect(up.uptime).toBeGreaterThan(0);
  });

  it('rejects missing btime and bad uptime', () => {
    expect(() => parseProcStat('cpu 1 2 3\n')).toThrow(ProcParseError);
    expect(() => parseProcStat('btime x\n')).toThrow(ProcParseError);
    expect(() => parseUptime('1.0')).toThrow(ProcParseError);
    expect(() => parseUptime('1.0 NaN')).toThrow(ProcParseError);
  });
});

describe('fuzz: parsers return or throw ProcParseError, never anything else, never hang', () => {
  // Deterministic PRNG so failures reproduce.
  let seed = 0x9e3779b9;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const parsers: Array<[string, (b: Uint8Array) => unknown]> = [
    ['stat', (b) => parsePidStat(b)],
    ['status', (b) => parsePidStatus(b)],
    ['procstat', (b) => parseProcStat(b)],
    ['uptime', (b) => parseUptime(b)],
    ['cmdline', (b) => parseCmdline(b)],
    ['environ', (b) => parseEnviron(b)],
  ];
  const samples = [
    'sleep-stat.txt',
    'kworker-stat.txt',
    'paren-comm-stat.txt',
    'sleep-status.txt',
    'kthread-status.txt',
    'stat.txt',
    'uptime.txt',
    'sshd-cmdline.bin',
    'environ.bin',
  ].map(fixture);

  const check = (name: string, parse: (b: Uint8Array) => unknown, input: Uint8Array) => {
    try {
      parse(input);
    } catch (e) {
      if (!(e instanceof ProcParseError)) {
        throw new Error(
          `${name} threw ${String(e)} on ${JSON.stringify(Array.from(input.subarray(0, 64)))}`,
          {
            cause: e,
          },
        );
      }
      expect(e.message).not.toMatch(/[\r\n]/);
      expect(e.message.length).toBeLessThan(300);
    }
  };

  it('survives every truncation of the real samples', () => {
    for (const s of samples) {
      for (let n = 0; n <= s.length; n++) for (const [name, p] of parsers) check(name, p, s.subarray(0, n));
    }
  });

  it('survives random bytes and random mutations', () => {
    const alphabet = new TextEncoder().encode('0123456789 ()-:\t\n\0abcSRZ');
    for (let i = 0; i < 2000; i++) {
      const len = Math.floor(rand() * 400);
      const buf = new Uint8Array(len);
      const biased = rand() < 0.5;
      for (let j = 0; j < len; j++) {
        buf[j] = biased ? alphabet[Math.floor(rand() * alphabet.length)] : Math.floor(rand() * 256);
      }
      for (const [name, p] of parsers) check(name, p, buf);
    }
    for (let i = 0; i < 2000; i++) {
      const s = samples[i % samples.length].slice();
      for (let k = 0; k < 4; k++) s[Math.floor(rand() * s.length)] = Math.floor(rand() * 256);
      for (const [name, p] of parsers) check(name, p, s);
    }
  });

  it('is fast on a huge hostile input', () => {
    const big = new TextEncoder().encode('1 (' + '('.repeat(200_000) + ') ' + 'x '.repeat(200_000));
    const t0 = performance.now();
    for (const [name, p] of parsers) check(name, p, big);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

it('text fixture sanity', () => {
  expect(text('stat.txt')).toMatch(/^btime \d+$/m);
});
