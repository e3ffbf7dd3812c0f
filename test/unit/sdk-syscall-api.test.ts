import { describe, expect, it } from 'vitest';
import { AT_FDCWD, O_RDONLY, S_IFDIR, S_IFMT } from '../../src/abi/linux/flags.js';
import { sysno } from '../../src/abi/linux/syscalls.js';
import { isVanished, SyscallApi, SyscallError } from '../../src/sdk/index.js';
import { planChunks, READLINK_FIRST } from '../../src/sdk/limits.js';
import { FakeGuest, fakeProcGuest } from './helpers/fake-guest.js';

describe('BatchBuilder', () => {
  it('runs dependent calls in one guest entry (fd from openat reused)', async () => {
    const g = new FakeGuest().addFile('/proc/1/stat', '1 (init) S 0');
    const api = new SyscallApi(g);
    const b = api.batch();
    const fd = b.openat(AT_FDCWD, '/proc/1/stat', O_RDONLY);
    const r = b.read(fd, 4096);
    const c = b.close(fd);
    expect(() => r.result()).toThrow(/not submitted/);
    await b.submit();
    expect(g.runCount).toBe(1);
    expect(g.runs[0][1].args[0]).toEqual({ kind: 'result', index: 0 });
    expect(new TextDecoder().decode(r.result().data)).toBe('1 (init) S 0');
    expect(r.result().ret).toBe(12n);
    expect(c.ok).toBe(true);
    expect(g.openFds).toBe(0);
    await expect(b.submit()).rejects.toThrow(/already submitted/);
  });

  it('keeps going after failing calls and types their errors', async () => {
    const g = new FakeGuest()
      .addFile('/a', 'A')
      .addFile('/secret', 'S', { openErrno: 13 })
      .addFile('/c', 'C');
    const api = new SyscallApi(g);
    const b = api.batch();
    const names = ['/a', '/missing', '/secret', '/c'];
    const reads = names.map((p) => {
      const fd = b.openat(AT_FDCWD, p, O_RDONLY);
      const r = b.read(fd, 100);
      b.close(fd);
      return { fd, r };
    });
    await b.submit();
    expect(g.runCount).toBe(1);
    const txt = (i: number) => new TextDecoder().decode(reads[i].r.result().data);
    expect(txt(0)).toBe('A');
    expect(txt(3)).toBe('C');
    const e1 = reads[1].fd.result().error!;
    expect(e1).toBeInstanceOf(SyscallError);
    expect(e1.message).toBe('openat /missing: ENOENT');
    expect(e1).toMatchObject({ syscall: 'openat', errno: 2, code: 'ENOENT', path: '/missing' });
    expect(isVanished(e1)).toBe(true);
    expect(reads[2].fd.result().error!.code).toBe('EACCES');
    expect(reads[2].fd.result().errno).toBe(13);
    // The read on the failed fd ran too (kernel saw a bad fd) and failed with EBADF.
    expect(reads[1].r.result().error!.message).toBe('read /missing: EBADF');
    expect(() => reads[2].fd.check()).toThrow(SyscallError);
  });

  it('uses a CallRef of an already submitted batch as a plain integer', async () => {
    const g = new FakeGuest().addFile('/f', 'hello');
    const api = new SyscallApi(g);
    const b1 = api.batch();
    const fd = b1.openat(AT_FDCWD, '/f', O_RDONLY);
    await b1.submit();
    const b2 = api.batch();
    const r = b2.read(fd, 10);
    b2.close(fd);
    await b2.submit();
    expect(g.runs[1][0].args[0]).toEqual({ kind: 'int', value: fd.result().ret });
    expect(new TextDecoder().decode(r.result().data)).toBe('hello');
  });

  it('splits big batches at group boundaries and relocates result references', async () => {
    const g = new FakeGuest();
    for (let i = 0; i < 50; i++) g.addFile(`/f${i}`, `content ${i}`);
    const api = new SyscallApi(g, { limits: { maxCalls: 10 } });
    g.limits.maxCalls = 10;
    const b = api.batch();
    const reads = Array.from({ length: 50 }, (_, i) =>
      b.group(() => {
        const fd = b.openat(AT_FDCWD, `/f${i}`, O_RDONLY);
        const r = b.read(fd, 64);
        b.close(fd);
        return r;
      }),
    );
    await b.submit();
    // 150 calls, 3 per group, at most 10 per run → 9 per run, 17 runs.
    expect(g.runCount).toBe(17);
    expect(g.runs.every((r) => r.length % 3 === 0)).toBe(true);
    reads.forEach((r, i) => expect(new TextDecoder().decode(r.result().data)).toBe(`content ${i}`));
    expect(g.openFds).toBe(0);
    expect(api.stats).toMatchObject({ runs: 17, calls: 150 });
  });

  it('plans chunks by output bytes and runs an oversized call alone', () => {
    const e = (group: number, outBytes: number) => ({ group, outBytes, inBytes: 0 });
    const limits = { maxCalls: 100, maxOutBytes: 1000, maxInBytes: 1000 };
    expect(planChunks([e(0, 600), e(1, 600), e(2, 300)], limits)).toEqual([
      [0, 1],
      [1, 3],
    ]);
    expect(planChunks([e(0, 100), e(1, 5000), e(2, 100)], limits)).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
    expect(planChunks([], limits)).toEqual([]);
  });

  it('rejects a misbehaving executor', async () => {
    const api = new SyscallApi({ run: async () => [] });
    const b = api.batch();
    b.getpid();
    await expect(b.submit()).rejects.toThrow(/0 results for 1 calls/);
  });

  it('stops before a guest entry when aborted', async () => {
    const ac = new AbortController();
    ac.abort(new Error('interrupted'));
    const g = new FakeGuest();
    const api = new SyscallApi(g, { signal: ac.signal });
    const b = api.batch();
    b.getpid();
    await expect(b.submit()).rejects.toThrow('interrupted');
    expect(g.runCount).toBe(0);
  });
});

describe('readFiles', () => {
  it('reads many files in one batch, with per-file errors', async () => {
    const g = new FakeGuest()
      .addFile('/a', 'alpha')
      .addFile('/b', '')
      .addFile('/denied', 'x', { openErrno: 13 })
      .addFile('/eio', 'x', { readErrno: 5 });
    const api = new SyscallApi(g);
    const res = await api.readFiles(['/a', '/b', '/gone', '/denied', '/eio']);
    expect(g.runCount).toBe(1);
    expect(new TextDecoder().decode(res[0].data)).toBe('alpha');
    expect(res[1].data).toEqual(new Uint8Array(0));
    expect(res[2].error?.message).toBe('openat /gone: ENOENT');
    expect(res[3].error?.message).toBe('openat /denied: EACCES');
    expect(res[4].error?.message).toBe('read /eio: EIO');
    expect(res[2].data).toBeUndefined();
    expect(g.openFds).toBe(0);
  });

  it('reads a seq_file (one page per read) to its end, and trusts a short read only where the kernel hands the whole file over', async () => {
    const maps = Array.from(
      { length: 1000 },
      (_, i) => `${i.toString(16).padStart(12, '0')}-1000 r-xp 0 0:0 0 /lib/x${i}.so\n`,
    ).join('');
    const status = 'Name:\tx\n'.repeat(500);
    const g = new FakeGuest()
      .addFile('/proc/7/maps', maps, { maxPerRead: 4071 })
      .addFile('/proc/net/tcp', 'sl local\n', { maxPerRead: 4071 })
      .addFile('/proc/7/status', status);
    const api = new SyscallApi(g);
    const res = await api.readFiles(['/proc/7/maps', '/proc/net/tcp', '/proc/7/status']);
    expect(maps.length).toBeGreaterThan(8 * 4071);
    expect(new TextDecoder().decode(res[0].data)).toBe(maps);
    expect(res[0].truncated).toBeUndefined();
    expect(new TextDecoder().decode(res[1].data)).toBe('sl local\n');
    expect(new TextDecoder().decode(res[2].data)).toBe(status);
    // First batch: maps and net/tcp get an EOF probe (open, read, probe, close); status, a
    // single_open file, none (open, read, close).
    expect(g.runs[0].length).toBe(4 + 4 + 3);
    expect(g.openFds).toBe(0);
    expect(g.runCount).toBeLessThanOrEqual(5);
  });

  it('continues only the files that filled their buffer, in one follow-up batch', async () => {
    const big = 'x'.repeat(10_000);
    const huge = Uint8Array.from({ length: 300_000 }, (_, i) => i & 0xff);
    const g = new FakeGuest().addFile('/small', 'tiny').addFile('/big', big).addFile('/huge', huge);
    const exact = 'y'.repeat(4096);
    g.addFile('/exact', exact);
    const api = new SyscallApi(g);
    const res = await api.readFiles(['/small', '/big', '/exact', { path: '/huge', chunkSize: 100_000 }]);
    expect(new TextDecoder().decode(res[0].data)).toBe('tiny');
    expect(new TextDecoder().decode(res[1].data)).toBe(big);
    expect(new TextDecoder().decode(res[2].data)).toBe(exact);
    expect(res[3].data).toEqual(huge);
    // Second run holds only the two files longer than their first read: /small and /exact
    // ended at their EOF probe. /big is read again from 0 (open, 2 reads, probe, close);
    // /huge continues after an lseek (open, lseek, 2 reads, probe, close).
    expect(g.runs[1].length).toBe(11);
    expect(g.runCount).toBeLessThanOrEqual(4);
    expect(g.openFds).toBe(0);
  });

  it('truncates at maxSize', async () => {
    const g = new FakeGuest().addFile('/inf', 'z'.repeat(50_000));
    const res = await new SyscallApi(g).readFiles(['/inf'], { maxSize: 10_000 });
    expect(res[0].truncated).toBe(true);
    expect(res[0].data!.length).toBe(10_000);
  });

  it('readFile throws SyscallError', async () => {
    const api = new SyscallApi(new FakeGuest());
    await expect(api.readFile('/nope')).rejects.toThrow('openat /nope: ENOENT');
  });
});

describe('directories, links, stat, system', () => {
  it('lists /proc in one batch', async () => {
    const g = fakeProcGuest(300);
    const api = new SyscallApi(g);
    const entries = await api.listDir('/proc');
    expect(g.runCount).toBe(1);
    expect(entries.filter((e) => /^\d+$/.test(e.name))).toHaveLength(300);
    expect(entries.some((e) => e.name === '.' || e.name === '..')).toBe(false);
    expect(entries.find((e) => e.name === 'self')?.type).toBe(10);
    expect(g.openFds).toBe(0);
  });

  it('resumes a directory that did not fit, without repeats', async () => {
    const g = new FakeGuest();
    for (let i = 0; i < 500; i++) g.addFile(`/d/file-${String(i).padStart(4, '0')}`, '');
    const api = new SyscallApi(g);
    const entries = await api.listDir('/d', { bufferSize: 1024 });
    expect(entries.map((e) => e.name)).toEqual(
      Array.from({ length: 500 }, (_, i) => `file-${String(i).padStart(4, '0')}`),
    );
    expect(g.runCount).toBeGreaterThan(1);
    expect(g.runs[1].some((c) => c.nr === sysno('lseek'))).toBe(true);
  });

  it('lists many directories in one batch with per-directory errors', async () => {
    const g = fakeProcGuest(5);
    const api = new SyscallApi(g);
    const res = await api.listDirs(['/proc/1/task', '/proc/99/task', '/proc/stat']);
    expect(g.runCount).toBe(1);
    expect(res[0].entries!.map((e) => e.name)).toEqual(['1']);
    expect(res[1].error).toMatchObject({ code: 'ENOENT' });
    expect(res[2].error).toMatchObject({ code: 'ENOTDIR' });
    await expect(api.listDir('/proc/99')).rejects.toThrow(SyscallError);
  });

  it('readlinks and statx', async () => {
    const g = fakeProcGuest(1);
    const api = new SyscallApi(g);
    const links = await api.readlinks(['/proc/self', '/proc/stat', '/nope']);
    expect(links[0].target).toBe('4242');
    expect(links[1].error?.code).toBe('EINVAL');
    expect(links[2].error?.code).toBe('ENOENT');
    const st = await api.statx(['/proc', '/proc/stat', '/nope']);
    expect(st[0].stat!.mode & S_IFMT).toBe(S_IFDIR);
    expect(st[1].stat!.size).toBeGreaterThan(0n);
    expect(st[2].error).toMatchObject({ code: 'ENOENT' });
    expect(g.runCount).toBe(2);
  });

  it('readlinks reads a link that fills its first buffer again, whole', async () => {
    const g = fakeProcGuest(1);
    const long = `/${'d'.repeat(READLINK_FIRST - 1)}/${'x'.repeat(200)}`;
    const exact = `/${'e'.repeat(READLINK_FIRST - 1)}`;
    g.addLink('/proc/1/cwd', long);
    g.addLink('/proc/1/root', exact);
    const api = new SyscallApi(g);
    const links = await api.readlinks(['/proc/self', '/proc/1/cwd', '/nope', '/proc/1/root']);
    expect(links.map((l) => l.target ?? l.error?.code)).toEqual(['4242', long, 'ENOENT', exact]);
    // One batch with short buffers, one follow-up for the two that filled theirs.
    expect(g.runCount).toBe(2);
    expect((await api.readlinks(['/proc/self'])).map((l) => l.target)).toEqual(['4242']);
    expect(g.runCount).toBe(3);
  });

  it('readLinksAndFiles puts the links in the first batch of the files', async () => {
    const g = fakeProcGuest(2);
    const long = `/${'l'.repeat(300)}`;
    g.addLink('/proc/2/cwd', long);
    const api = new SyscallApi(g);
    const r = await api.readLinksAndFiles(
      ['/proc/1/ns/pid', '/proc/2/cwd', '/nope'],
      ['/proc/1/stat', '/nope'],
    );
    expect(r.links.map((l) => l.target ?? l.error?.code)).toEqual([
      (await api.readlinks(['/proc/1/ns/pid']))[0].target,
      long,
      'ENOENT',
    ]);
    expect(new TextDecoder().decode(r.files[0].data)).toMatch(/^1 \(proc1\) /);
    expect(r.files[1].error).toMatchObject({ code: 'ENOENT' });
    // links and files in one batch, the long link again in a second; readlinks: one.
    expect(g.runCount).toBe(3);
    const none = await api.readLinksAndFiles(['/proc/1/ns/pid'], []);
    expect(none.files).toEqual([]);
    expect(none.links[0].target).toMatch(/^pid:\[\d+\]$/);
    expect(g.runCount).toBe(4);
  });

  it('uname and sysinfo', async () => {
    const api = new SyscallApi(new FakeGuest());
    expect(await api.uname()).toMatchObject({ sysname: 'Linux', release: '6.1.0-fake', machine: 'x86_64' });
    expect(await api.sysinfo()).toMatchObject({
      uptime: 1234,
      loads: [1, 0, 0],
      totalram: 4096000n,
      procs: 42,
    });
    // The fake has no syslog: ENOSYS comes back as a typed error.
    await expect(api.syslogRead()).rejects.toThrow('syslog: ENOSYS');
  });
});
