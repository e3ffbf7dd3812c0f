import { describe, expect, it } from 'vitest';
import { builtinPlugins } from '../../src/plugins/index.js';
import { runPluginsOnGuest } from '../../src/runner/run-plugins.js';
import {
  assertWriteAllowed,
  BatchBuilder,
  checkCall,
  definePlugin,
  flags,
  PolicyExecutor,
  PolicyViolationError,
  runPlugin,
  sysno,
  type Call,
  type CallResult,
  type SyscallExecutor,
} from '../../src/sdk/index.js';
import { snapshotCalls } from '../../src/sdk/policy.js';
import { addFakeProcess, fakeProcGuest, type FakeGuest } from './helpers/fake-guest.js';

/** Records calls; answers every call with 0 and zeroed out buffers. */
class Recorder implements SyscallExecutor {
  runs: Call[][] = [];
  async run(calls: readonly Call[]): Promise<CallResult[]> {
    this.runs.push([...calls]);
    return calls.map((c) => ({
      ret: 0n,
      out: c.args.filter((a) => a.kind === 'out').map((a) => new Uint8Array(a.kind === 'out' ? a.size : 0)),
    }));
  }
}

function calls(record: (b: BatchBuilder) => void): Call[] {
  const rec: Call[] = [];
  const b = new BatchBuilder({
    run: async (c) => {
      rec.push(...c);
      return new Recorder().run(c);
    },
  });
  record(b);
  // submit() hands the calls to the executor synchronously, before its first await.
  void b.submit();
  return rec;
}

const P = { plugin: 'probe' };

describe('checkCall', () => {
  it('allows read-only opens and refuses write flags, naming plugin, syscall and flags', () => {
    const [ro] = calls((b) => b.openat(flags.AT_FDCWD, '/proc/1/stat', flags.O_RDONLY | flags.O_CLOEXEC));
    expect(checkCall(ro, P)).toBeUndefined();
    const [dir] = calls((b) => b.openat(flags.AT_FDCWD, '/proc', flags.O_DIRECTORY | flags.O_PATH));
    expect(checkCall(dir, P)).toBeUndefined();
    for (const [f, text] of [
      [flags.O_WRONLY, 'O_WRONLY'],
      [flags.O_RDWR, 'O_RDWR'],
      [flags.O_CREAT | flags.O_WRONLY, 'O_WRONLY|O_CREAT'],
      [flags.O_TRUNC, 'O_RDONLY|O_TRUNC'],
      [flags.O_APPEND | flags.O_WRONLY, 'O_WRONLY|O_APPEND'],
      [0o20000000 | flags.O_DIRECTORY | flags.O_RDWR, 'O_RDWR|O_TMPFILE'],
    ] as const) {
      const [c] = calls((b) => b.openat(flags.AT_FDCWD, '/tmp/x', f, 0o644));
      const v = checkCall(c, P);
      expect(v, text).toBeInstanceOf(PolicyViolationError);
      expect(v!.syscall).toBe('openat');
      expect(v!.flags).toBe(text);
      expect(v!.message).toContain(`plugin 'probe'`);
      expect(v!.message).toContain('"/tmp/x"');
      expect(v!.message).not.toContain('\n');
    }
  });

  it('checks open(2) flags in the second argument', () => {
    const ok: Call = {
      nr: sysno('open'),
      args: [
        { kind: 'in', data: new Uint8Array([47, 0]) },
        { kind: 'int', value: 0n },
      ],
    };
    expect(checkCall(ok, P)).toBeUndefined();
    const bad: Call = {
      nr: sysno('open'),
      args: [ok.args[0], { kind: 'int', value: BigInt(flags.O_CREAT) }],
    };
    expect(checkCall(bad, P)?.flags).toBe('O_RDONLY|O_CREAT');
  });

  it('refuses open flags it cannot see (taken from an earlier result)', () => {
    const c: Call = {
      nr: sysno('openat'),
      args: [
        { kind: 'int', value: -100n },
        { kind: 'in', data: new Uint8Array([47, 0]) },
        { kind: 'result', index: 0 },
      ],
    };
    expect(checkCall(c, P)).toBeInstanceOf(PolicyViolationError);
  });

  it('syslog: READ_ALL and SIZE_BUFFER only (READ consumes, CLEAR empties)', () => {
    const [all, size] = calls((b) => {
      b.syslog(3, 4096);
      b.syslog(10, 0);
    });
    expect(checkCall(all, P)).toBeUndefined();
    expect(checkCall(size, P)).toBeUndefined();
    for (const action of [2, 4, 5, 1, 0, 8]) {
      const [c] = calls((b) => b.syslog(action, 16));
      expect(checkCall(c, P), `action ${action}`).toBeInstanceOf(PolicyViolationError);
    }
  });

  it('refuses anything off the list, and names it', () => {
    for (const name of ['unlink', 'kill', 'write', 'mmap', 'execve', 'ioctl', 'unlinkat', 'prctl'] as const) {
      const v = checkCall({ nr: sysno(name), args: [] }, P);
      expect(v?.syscall, name).toBe(name);
      expect(v?.message).toContain(`to call ${name}`);
    }
    expect(checkCall({ nr: 100000, args: [] }, P)?.syscall).toBe('syscall_100000');
  });

  it('a grant allows the declared extras only', () => {
    const grant = { plugin: 'w', grant: { syscalls: ['unlink'], writeFiles: true } };
    expect(checkCall({ nr: sysno('unlink'), args: [] }, grant)).toBeUndefined();
    expect(checkCall({ nr: sysno('kill'), args: [] }, grant)).toBeInstanceOf(PolicyViolationError);
    const [c] = calls((b) => b.openat(flags.AT_FDCWD, '/tmp/x', flags.O_CREAT | flags.O_WRONLY));
    expect(checkCall(c, grant)).toBeUndefined();
  });
});

describe('PolicyExecutor', () => {
  it('rejects a whole run before any of it reaches the inner executor', async () => {
    const inner = new Recorder();
    const ex = new PolicyExecutor(inner, { plugin: 'sneaky' });
    await expect(
      ex.run([
        { nr: sysno('getpid'), args: [] },
        {
          nr: sysno('kill'),
          args: [
            { kind: 'int', value: 1n },
            { kind: 'int', value: 9n },
          ],
        },
      ]),
    ).rejects.toThrow(/plugin 'sneaky' is not allowed to call kill/);
    expect(inner.runs).toHaveLength(0);
    await ex.run([{ nr: sysno('getpid'), args: [] }]);
    expect(inner.runs).toHaveLength(1);
  });

  it('copies calls without running a setter or an iterator planted on the built-ins', () => {
    const input: Call[] = [
      { nr: sysno('getpid'), args: [] },
      {
        nr: sysno('openat'),
        args: [
          { kind: 'int', value: -100n },
          { kind: 'in', data: new TextEncoder().encode('/proc/self/stat\0') },
          { kind: 'int', value: 0n },
        ],
      },
      {
        nr: sysno('read'),
        args: [
          { kind: 'result', index: 1 },
          { kind: 'out', size: 64, keep: 'ret' },
          { kind: 'int', value: 64n },
        ],
      },
    ];
    // A plugin shares the built-ins: what it plants on them must not see the copy (it could
    // keep a copied buffer and change it after the check) nor shape it (an iterator
    // deciding the copy's length would drop checked calls).
    const seen: unknown[] = [];
    const keys = ['0', '1', '2', '3'];
    const iter = Object.getOwnPropertyDescriptor(Object.prototype, Symbol.iterator);
    for (const k of keys)
      Object.defineProperty(Array.prototype, k, {
        configurable: true,
        set(v: unknown) {
          seen.push(v);
          Object.defineProperty(this, k, { value: v, writable: true, enumerable: true, configurable: true });
        },
      });
    Object.defineProperty(Object.prototype, Symbol.iterator, {
      configurable: true,
      writable: true,
      value() {
        seen.push('iterator');
        return { next: () => ({ done: true, value: undefined }) };
      },
    });
    let copy: Call[];
    try {
      copy = snapshotCalls(input);
    } finally {
      for (const k of keys) delete (Array.prototype as unknown as Record<string, unknown>)[k];
      if (iter) Object.defineProperty(Object.prototype, Symbol.iterator, iter);
      else delete (Object.prototype as unknown as Record<symbol, unknown>)[Symbol.iterator];
    }
    expect(seen).toEqual([]);
    expect(copy).toEqual(input);
    expect(Object.isFrozen(copy) && copy.every((c) => Object.isFrozen(c) && Object.isFrozen(c.args))).toBe(
      true,
    );
    expect((copy[1].args[1] as { data: Uint8Array }).data).not.toBe(
      (input[1].args[1] as { data: Uint8Array }).data,
    );
  });

  it('a plugin making an undeclared call fails as a typed error', async () => {
    const sneaky = definePlugin({
      name: 'sneaky',
      description: 'tries to unlink',
      version: '1.0.0',
      columns: [{ name: 'X', type: 'int32' }] as const,
      async run(ctx) {
        const b = ctx.sys.batch();
        b.call('unlink', [{ in: new TextEncoder().encode('/tmp/x\0') }]);
        await b.submit();
        return [];
      },
    });
    const inner = new Recorder();
    const err = await runPlugin(sneaky, { executor: new PolicyExecutor(inner, { plugin: 'sneaky' }) }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(PolicyViolationError);
    expect(err).toMatchObject({ plugin: 'sneaky', syscall: 'unlink' });
    expect(inner.runs).toHaveLength(0);
  });
});

describe('declared needs', () => {
  const writer = definePlugin({
    name: 'writer',
    description: 'removes a file',
    version: '1.0.0',
    columns: [{ name: 'X', type: 'int32' }] as const,
    needs: { syscalls: ['unlink'] },
    async run() {
      return [];
    },
  });

  it('definePlugin keeps needs and checks the syscall names', () => {
    expect(writer.needs).toEqual({ syscalls: ['unlink'] });
    expect(() =>
      definePlugin({
        name: 'typo',
        description: 'd',
        version: '1.0.0',
        columns: [{ name: 'X', type: 'int32' }] as const,
        needs: { syscalls: ['unlnk'] },
        async run() {
          return [];
        },
      }),
    ).toThrow(/unknown syscall 'unlnk'/);
  });

  it('without --allow-write a declaring plugin is refused up front, naming plugin and syscall', () => {
    expect(() => assertWriteAllowed(writer, false)).toThrow(
      "plugin 'writer' changes the guest (it declares unlink): pass --allow-write to run it",
    );
    expect(() => assertWriteAllowed(writer, true)).not.toThrow();
    expect(() => assertWriteAllowed(builtinPlugins[0], false)).not.toThrow();
  });

  it('runPluginsOnGuest refuses before attaching (nothing reaches the guest)', async () => {
    // No QEMU behind these endpoints: reaching attach would fail differently.
    const guest = { name: 'none', qmpSocket: '/nonexistent/qmp', gdbSocket: '/nonexistent/gdb' } as never;
    await expect(runPluginsOnGuest(guest, [{ plugin: writer, options: {} }])).rejects.toThrow(
      /plugin 'writer' changes the guest/,
    );
  });
});

/** A guest with everything the built-ins read. */
function richGuest(): FakeGuest {
  const g = fakeProcGuest(5);
  addFakeProcess(g, 7, 'threads', [7, 8, 9]);
  for (const pid of [1, 2, 3, 4, 5, 7]) {
    g.addFile(`/proc/${pid}/environ`, 'HOME=/root\0A=b\0');
    g.addFile(`/proc/${pid}/mountinfo`, '1 0 0:2 / / rw - rootfs none rw\n');
    g.addLink(`/proc/${pid}/ns/mnt`, 'mnt:[4026531840]');
    g.addFile(`/proc/${pid}/cgroup`, '0::/\n');
    g.addFile(`/proc/${pid}/comm`, 'x\n');
    g.addFile(`/proc/${pid}/maps`, '00400000-00401000 r-xp 00000000 00:02 5 /bin/x\n');
    g.addDir(`/proc/${pid}/fd`);
    g.addLink(`/proc/${pid}/fd/0`, '/dev/null');
    g.addLink(`/proc/${pid}/exe`, '/bin/x');
    g.addLink(`/proc/${pid}/cwd`, '/');
  }
  g.addFile('/proc/self/mountinfo', '1 0 0:2 / / rw - rootfs none rw\n');
  g.addLink('/proc/self/ns/mnt', 'mnt:[4026531840]');
  g.addFile('/proc/modules', 'dummy 16384 0 - Live 0xffffffffc0000000\n');
  g.addFile('/proc/version', 'Linux version 6.1.0-fake (gcc) #1 SMP\n');
  for (const f of ['tcp', 'tcp6', 'udp', 'udp6', 'unix', 'raw', 'raw6', 'netlink', 'packet'])
    g.addFile(`/proc/net/${f}`, '');
  return g;
}

/** Options a plugin cannot run without (the scans need something to look for). */
const REQUIRED_OPTIONS: Record<string, Record<string, unknown>> = {
  vmaregexscan: { pattern: 'needle' },
  vmayarascan: { 'yara-string': 'rule r { strings: $a = "needle" condition: $a }' },
};

describe('every built-in plugin passes the read-only policy', () => {
  for (const plugin of builtinPlugins) {
    it(plugin.name, async () => {
      const guest = richGuest();
      const ex = new PolicyExecutor(guest, { plugin: plugin.name });
      try {
        await runPlugin(plugin, { executor: ex, options: REQUIRED_OPTIONS[plugin.name] });
      } catch (err) {
        // The fake guest may lack what a plugin reads; only a policy refusal fails here.
        if (err instanceof PolicyViolationError) throw err;
      }
      expect(guest.runCount, 'the plugin reached the guest').toBeGreaterThan(0);
      expect(plugin.needs, 'built-ins declare no write needs').toBeUndefined();
    });
  }
});
