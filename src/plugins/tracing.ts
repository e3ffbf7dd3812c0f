/**
 * tracing: kernel functions with ftrace callbacks attached and registered kprobes, each
 * attributed to the module that owns it (closest to Volatility's linux.tracing.ftrace,
 * which walks ftrace_ops with a profile; kprobes have no Volatility plugin). Current LKM
 * rootkits hook through ftrace (an IPMODIFY callback that diverts a syscall or seq_show)
 * or kprobes; a hook whose callback belongs to no listed module is flagged.
 *
 * Sources (guest kernel: a rootkit that hooks these seq files defeats this plugin):
 * - tracefs `enabled_functions`: each function with callbacks, its flags (R regs,
 *   I may change the IP, D direct call) and, per callback, its trampoline and the ops'
 *   function as %pS (`thunk+0x0/0x60 [vmi_testkit]`). The kernel symbolises through its
 *   module address tree (kernel/module/main.c, __module_address), which a module that
 *   list_del'ed itself stays in: its name shows here while /proc/modules lacks it.
 *   `touched_functions` (6.4+): functions that had callbacks since boot, listed too.
 * - debugfs `kprobes/list`: every registered kprobe and kretprobe, the probed place and
 *   the module of that place (the kernel does not name a kprobe's owner); tracefs
 *   `kprobe_events`: the dynamic probe events (made through tracefs or perf).
 * - /proc/modules (listed modules and their ranges), /proc/kallsyms (core text, symbols
 *   of bare addresses).
 *
 * Mounts: vmi never changes the guest's mounts. A tracefs/debugfs the guest has mounted
 * (its mountinfo, seen from the shadow's private copy of init's mount namespace) is read
 * where it is; otherwise the shadow makes a detached read-only mount (fsopen, fsconfig
 * CMD_CREATE, fsmount with MOUNT_ATTR_RDONLY: attached to no namespace, gone with its fd;
 * the read-only policy allows exactly that shape, src/sdk/policy.ts) and reads through
 * openat on its fd. A source that cannot be read is a row of Kind `unavailable` saying
 * why (e.g. a kernel without tracefs), never a silently empty table.
 *
 * Cost (lab 6.1 guest: ~8 batches): modules, filesystems and mountinfo; /proc/kallsyms
 * read to its end (2 rounds and a close); one batch of the two detached mounts; the
 * tracing files read to their ends (one round each when small) and the closes.
 */
import {
  definePlugin,
  flags,
  inBytes,
  cPath,
  notAvailable,
  proc as procParsers,
  readKallsyms,
  type PluginContext,
  type Row,
} from '../sdk/index.js';

/** include/uapi/linux/mount.h */
const FSOPEN_CLOEXEC = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;
const MOUNT_ATTR_RO_NOSUID_NODEV_NOEXEC = 0x1 | 0x2 | 0x4 | 0x8;

const columns = [
  {
    name: 'Kind',
    type: 'utf8',
    description:
      'ftrace (callbacks attached now), ftrace-touched, kprobe, kretprobe, kprobe_event, unavailable',
  },
  { name: 'Function', type: 'utf8', description: 'The hooked function (guest kernel: tracefs/debugfs)' },
  {
    name: 'Function Module',
    type: 'utf8',
    description: "Module of the hooked function ('kernel' for the core image)",
  },
  { name: 'Flags', type: 'utf8', description: 'ftrace: R I D O M; kprobes: GONE DISABLED OPTIMIZED FTRACE' },
  {
    name: 'Callback',
    type: 'utf8',
    description: "The ops' function (%pS, as the guest kernel printed it); the trampoline after '@'",
  },
  {
    name: 'Callback Address',
    type: 'hex64',
    description: 'Address of the callback (printed bare, or its symbol looked up in /proc/kallsyms)',
  },
  {
    name: 'Module',
    type: 'utf8',
    description:
      "Owner of the hook: the callback's module (the kernel's own %pS name, else by address in /proc/modules); 'kernel'; '?' for none",
  },
  { name: 'Source', type: 'utf8', description: 'File read, and whether through a detached mount' },
  {
    name: 'HOOKED',
    type: 'bool',
    description: 'A hook owned by no listed module (hidden module or loose code)',
  },
  { name: 'EVIDENCE', type: 'utf8', description: 'Why it is flagged, or why a source is unavailable' },
] as const;

type TracingRow = Row<typeof columns>;

interface FsDir {
  fd?: number;
  /** How the directory was reached, for the Source column. */
  how: string;
  /** Why it could not be. */
  error?: string;
}

/** Opens a directory of `fsType`: a guest mount if one exists, else a detached read-only mount. */
async function openFs(
  ctx: PluginContext,
  fsType: 'tracefs' | 'debugfs',
  known: ReadonlySet<string>,
  mounts: readonly procParsers.MountInfo[],
): Promise<FsDir> {
  if (!known.has(fsType))
    return { how: fsType, error: `${fsType} is not in /proc/filesystems (kernel without it)` };
  const existing = mounts.find((m) => m.fsType === fsType && /^\/[\w./-]{0,200}$/.test(m.mountPoint));
  const b = ctx.sys.batch();
  if (existing) {
    const open = b.openat(
      flags.AT_FDCWD,
      existing.mountPoint,
      flags.O_RDONLY | flags.O_DIRECTORY | flags.O_CLOEXEC,
    );
    await b.submit();
    const r = open.result();
    if (r.error) return { how: existing.mountPoint, error: `${existing.mountPoint}: ${r.error.message}` };
    return { fd: Number(r.ret), how: `${fsType} at ${existing.mountPoint}` };
  }
  // A new tracefs mount of a kernel that reconfigures an existing superblock would
  // re-apply default options; with no guest mount there is none to change.
  // One group: the policy allows fsconfig/fsmount only on an fsopen of the same batch.
  const { fs, conf, mnt } = b.group(() => {
    const fs = b.call('fsopen', [inBytes(cPath(fsType)), FSOPEN_CLOEXEC]);
    const conf = b.call('fsconfig', [fs, FSCONFIG_CMD_CREATE, 0, 0, 0]);
    const mnt = b.call('fsmount', [fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RO_NOSUID_NODEV_NOEXEC]);
    b.close(fs);
    return { fs, conf, mnt };
  });
  await b.submit();
  for (const [ref, what] of [
    [fs, 'fsopen'],
    [conf, 'fsconfig'],
    [mnt, 'fsmount'],
  ] as const) {
    const e = ref.result().error;
    if (e) return { how: `${fsType} (detached mount)`, error: `${what}(${fsType}): ${e.message}` };
  }
  return { fd: Number(mnt.result().ret), how: `${fsType} (detached read-only mount)` };
}

export const tracing = definePlugin({
  name: 'tracing',
  volatilityName: 'linux.tracing.ftrace',
  description:
    'Lists functions with ftrace hooks and registered kprobes, each with its owning module; flags hooks no listed module owns',
  version: '1.0.0',
  columns,
  async run(ctx) {
    const [modulesFile, fsFile, mountsFile] = await ctx.sys.readFiles(
      ['/proc/modules', '/proc/filesystems', '/proc/self/mountinfo'],
      { chunkSize: 16384 },
    );
    const modules = modulesFile?.data ? procParsers.parseModules(modulesFile.data).entries : [];
    const listed = new Set(modules.map((m) => m.name));
    const known = new Set(
      new TextDecoder()
        .decode(fsFile?.data ?? new Uint8Array())
        .split('\n')
        .map((l) => l.trim().split(/\s+/).pop() ?? ''),
    );
    const mounts = mountsFile?.data ? procParsers.parseMountInfo(mountsFile.data).entries : [];
    const ks = await readKallsyms(ctx);
    const byName = new procParsers.KallsymsIndex(ks.symbols);
    const byAddr = new procParsers.SymbolIndex(ks.symbols);
    const stext = byName.lookup('_stext')?.address;
    const etext = byName.lookup('_etext')?.address;

    /** Owner of a %pS rendering: [module, why-flagged]. */
    const owner = (s: procParsers.PrintedSymbol): { module: string; address?: bigint; why: string } => {
      if (s.module !== undefined) {
        const address = s.name !== undefined ? byName.lookup(s.name, s.module)?.address : undefined;
        const at = address !== undefined ? { address: address + (s.offset ?? 0n) } : {};
        if (procParsers.isPseudoModule(s.module) || listed.has(s.module))
          return { module: s.module, ...at, why: '' };
        return {
          module: s.module,
          ...at,
          why: `callback in module ${s.module}, which /proc/modules does not list (a hidden module)`,
        };
      }
      if (s.name !== undefined) {
        const sym = byName.lookup(s.name);
        return { module: 'kernel', ...(sym ? { address: sym.address + (s.offset ?? 0n) } : {}), why: '' };
      }
      if (s.address !== undefined) {
        const a = s.address;
        if (stext !== undefined && etext !== undefined && a >= stext && a < etext)
          return { module: 'kernel', address: a, why: '' };
        const mod = modules.find((m) => m.offset !== 0n && a >= m.offset && a < m.offset + BigInt(m.size));
        if (mod) return { module: mod.name, address: a, why: '' };
        const hit = byAddr.lookup(a);
        if (hit?.symbol.module && procParsers.isPseudoModule(hit.symbol.module))
          return { module: hit.symbol.module, address: a, why: '' };
        return {
          module: '?',
          address: a,
          why: 'callback at an address the kernel could not symbolise, in no listed module nor the kernel text',
        };
      }
      return {
        module: '?',
        why: `callback not named by the kernel (${JSON.stringify(s.text.slice(0, 60))})`,
      };
    };

    const rows: TracingRow[] = [];
    const unavailable = (source: string, why: string): void => {
      rows.push({
        Kind: 'unavailable',
        Function: notAvailable(why),
        'Function Module': '',
        Flags: '',
        Callback: '',
        'Callback Address': notAvailable(why),
        Module: '',
        Source: source,
        HOOKED: false,
        EVIDENCE: why,
      });
    };
    const read = async (dir: FsDir, file: string): Promise<string | undefined> => {
      const source = `${dir.how}: ${file}`;
      if (dir.fd === undefined) {
        unavailable(source, dir.error ?? 'not reachable');
        return undefined;
      }
      try {
        // seq_file reads return about a page each: 16 KiB buffers make ~190 reads a round
        // instead of ~750, and these files are usually a few lines.
        const data = await ctx.sys.readToEnd(file, { dirfd: dir.fd, maxSize: 16 << 20, readSize: 16384 });
        return new TextDecoder().decode(data);
      } catch (e) {
        unavailable(source, (e as Error).message);
        return undefined;
      }
    };

    const trace = await openFs(ctx, 'tracefs', known, mounts);
    const debug = await openFs(ctx, 'debugfs', known, mounts);
    try {
      const seenNow = new Set<string>();
      for (const [file, kind] of [
        ['enabled_functions', 'ftrace'],
        ['touched_functions', 'ftrace-touched'],
      ] as const) {
        // touched_functions is 6.4+: its absence on older kernels is no gap of this view.
        if (kind === 'ftrace-touched') {
          if (trace.fd === undefined) continue;
          const b = ctx.sys.batch();
          const probe = b.statx(trace.fd, file, 0, 0);
          await b.submit();
          if (probe.result().error) continue;
        }
        const text = await read(trace, file);
        if (text === undefined) continue;
        const parsed = procParsers.parseFtraceFunctions(text, file);
        for (const e of parsed.errors) ctx.warn(e.message);
        for (const r of parsed.entries) {
          const key = `${r.function}\0${r.module ?? ''}`;
          if (kind === 'ftrace') seenNow.add(key);
          else if (seenNow.has(key)) continue;
          const base = {
            Kind: kind,
            Function: r.function,
            'Function Module': r.module ?? 'kernel',
            Flags: r.flags.join(' '),
            Source: `${trace.how}: ${file}`,
          };
          const callbacks = r.callbacks.filter((c) => c.func.text !== '');
          if (callbacks.length === 0) {
            // Several callbacks share the list function: the kernel names none of them.
            const via = r.direct ?? r.calls;
            const o = via ? owner(via) : undefined;
            const why =
              kind === 'ftrace' && r.flags.includes('I') && (!o || o.why)
                ? `an IP-modifying hook with no owner the kernel names${o?.why ? ` (${o.why})` : ''}`
                : (o?.why ?? '');
            rows.push({
              ...base,
              Callback: via ? `${r.direct ? 'direct ' : ''}${via.text}` : `${r.count} callbacks, not named`,
              'Callback Address': o?.address ?? notAvailable('not printed by the kernel'),
              Module: o?.module ?? '?',
              HOOKED: kind === 'ftrace' && why !== '',
              EVIDENCE: why,
            });
            continue;
          }
          for (const c of callbacks) {
            const o = owner(c.func);
            rows.push({
              ...base,
              Callback: `${c.func.text} @${c.kind === 'ops' ? 'ops ' : ''}${c.holder.text}`,
              'Callback Address': o.address ?? notAvailable('symbol not in /proc/kallsyms'),
              Module: o.module,
              // A hook that was removed is history, not a live hook: listed, never flagged.
              HOOKED: kind === 'ftrace' && o.why !== '',
              EVIDENCE: o.why,
            });
          }
        }
      }

      const list = await read(debug, 'kprobes/list');
      if (list !== undefined) {
        const parsed = procParsers.parseKprobeList(list);
        for (const e of parsed.errors) ctx.warn(e.message);
        for (const k of parsed.entries) {
          const mod = k.module ?? k.where.module;
          const hidden = mod !== undefined && !listed.has(mod) && !procParsers.isPseudoModule(mod);
          const why = hidden ? `probes module ${mod}, which /proc/modules does not list` : '';
          rows.push({
            Kind: k.kind,
            Function: k.where.text,
            'Function Module': mod ?? 'kernel',
            Flags: k.flags.join(' '),
            Callback: notAvailable('kprobes/list does not name the handler'),
            'Callback Address': k.address !== 0n ? k.address : notAvailable('address hidden'),
            Module: notAvailable('the kernel does not name a kprobe’s owner'),
            Source: `${debug.how}: kprobes/list`,
            HOOKED: hidden,
            EVIDENCE: why,
          });
        }
      }
      const events = await read(trace, 'kprobe_events');
      if (events !== undefined) {
        const parsed = procParsers.parseKprobeEvents(events);
        for (const e of parsed.errors) ctx.warn(e.message);
        for (const k of parsed.entries)
          rows.push({
            Kind: 'kprobe_event',
            Function: k.target,
            'Function Module': k.target.includes(':') ? k.target.split(':')[0]! : 'kernel',
            Flags: k.kind,
            Callback: k.event,
            'Callback Address': notAvailable('a trace event'),
            Module: 'kernel',
            Source: `${trace.how}: kprobe_events`,
            HOOKED: false,
            EVIDENCE: '',
          });
      }
    } finally {
      const b = ctx.sys.batch();
      for (const d of [trace, debug]) if (d.fd !== undefined) b.close(d.fd);
      if (b.length > 0) await b.submit().catch(() => undefined);
    }
    return rows;
  },
});
