/**
 * mountinfo: the mounts of every mount namespace (Volatility's linux.mountinfo), from
 * /proc/PID/mountinfo, as seen from that process's root. The namespaces are found through
 * the processes that live in them (the /proc/PID/ns/mnt link of every process): the
 * guest's init's (PID 1) first, then the others in the order of their first process,
 * each read once, through that process. A namespace that no process is in (kept alive
 * only by a bind mount of its nsfs file or an open descriptor) is not found: Volatility
 * walks the kernel's list and would show it. The shadow's own private namespace (a copy
 * of init's with its own /proc mounted, src/shadow/root-context.ts) is left out: it is
 * not the guest's. The namespace id is the inode number in the link (`mnt:[4026531840]`).
 */
import { parseMountInfo } from '../abi/linux/proc/index.js';
import {
  CONTAINER_OPTION,
  definePlugin,
  isVanished,
  pidsInContainers,
  ProcFs,
  unreadable,
  type Row,
  type RowValue,
} from '../sdk/index.js';

const columns = [
  { name: 'MNT_NS_ID', type: 'int64', description: 'Mount namespace id (inode of /proc/PID/ns/mnt)' },
  { name: 'MOUNT ID', type: 'int32', description: 'Unique id of the mount' },
  { name: 'PARENT_ID', type: 'int32', description: 'Id of the parent mount' },
  { name: 'MAJOR:MINOR', type: 'utf8', description: 'st_dev of files on this filesystem' },
  { name: 'ROOT', type: 'utf8', description: 'Root of the mount within its filesystem' },
  { name: 'MOUNT_POINT', type: 'utf8', description: "Mount point, relative to the process's root" },
  { name: 'MOUNT_OPTIONS', type: 'utf8', description: 'Per-mount options' },
  { name: 'FIELDS', type: 'utf8', description: 'Optional fields (shared:N, master:N...), space-separated' },
  { name: 'FSTYPE', type: 'utf8', description: 'Filesystem type' },
  { name: 'MOUNT_SRC', type: 'utf8', description: 'Filesystem-specific source (device, or none)' },
  { name: 'SB_OPTIONS', type: 'utf8', description: 'Per-superblock options' },
] as const;

const NS_RE = /^mnt:\[(\d{1,20})\]$/;

export const mountinfo = definePlugin({
  name: 'mountinfo',
  volatilityName: 'linux.mountinfo',
  description: 'Lists the mounts of the guest (of its mount namespaces)',
  version: '1.0.0',
  columns,
  options: {
    pid: {
      type: 'integer',
      multiple: true,
      description: 'Mounts as these processes see them (repeatable); default: every mount namespace',
    },
    'mnt-ns': {
      type: 'string',
      multiple: true,
      description: 'Only these mount namespaces (MNT_NS_ID, repeatable)',
    },
    container: {
      ...CONTAINER_OPTION,
      description: 'Only the mount namespaces of the processes of these containers (see pslist --container)',
    },
  },
  async run(ctx) {
    const { pid, container } = ctx.options;
    const onlyNs = new Set(ctx.options['mnt-ns'].map((n) => n.trim()));
    // 1 batch for the listing (none with --pid), 1 for the cgroups with --container, 1 for
    // every namespace link, 1 (+ follow-up) for every namespace's mountinfo.
    let who: number[] = pid.length > 0 ? await ctx.proc.selectPids(pid) : await ctx.proc.listPids();
    who = await pidsInContainers(ctx, who, container);
    // The guest's root view first: init's namespace is the one Volatility lists first too.
    if (pid.length === 0) who = [...who.filter((p) => p === 1), ...who.filter((p) => p !== 1)];
    const links = await ctx.sys.readlinks([...who.map((p) => `/proc/${p}/ns/mnt`), '/proc/self/ns/mnt']);
    const own = links.pop()!.target;
    // One reader per namespace (the first process found in it), unless --pid names them.
    const readers: number[] = [];
    const readerLinks: typeof links = [];
    const seenNs = new Set<string>();
    who.forEach((p, i) => {
      const t = links[i].target;
      if (isVanished(links[i].error)) return;
      if (pid.length === 0 && t !== undefined) {
        if (t === own || seenNs.has(t)) return;
        seenNs.add(t);
      }
      const m = t !== undefined ? NS_RE.exec(t) : null;
      if (onlyNs.size > 0 && !(m && onlyNs.has(m[1]))) return;
      readers.push(p);
      readerLinks.push(links[i]);
    });
    who = readers;
    const files = await ctx.sys.readFiles(
      who.map((p) => ({ path: `/proc/${p}/mountinfo`, chunkSize: ProcFs.chunkFor('mountinfo') })),
    );
    const rows: Row<typeof columns>[] = [];
    const seen = new Set<string>();
    who.forEach((p, i) => {
      const f = files[i];
      if (isVanished(f.error) && p !== 1) return;
      const link = readerLinks[i];
      let ns: RowValue;
      const m = link.target !== undefined ? NS_RE.exec(link.target) : null;
      if (m) ns = BigInt(m[1]);
      else {
        const why = link.error
          ? link.error.message
          : `not a mount namespace link: ${JSON.stringify(link.target)}`;
        ctx.warn(`${link.path}: ${why}`);
        ns = unreadable(why);
      }
      // Processes that share a namespace (and see it from the same root) list the same mounts: once is enough.
      const key = typeof ns === 'bigint' ? ns.toString() : `?${p}`;
      if (seen.has(key)) return;
      seen.add(key);
      if (f.error) {
        ctx.warn(`${f.path}: ${f.error.message}`);
        return;
      }
      const { entries, errors } = parseMountInfo(f.data!, f.path);
      for (const e of errors) ctx.warn(e.message);
      for (const e of entries) {
        rows.push({
          MNT_NS_ID: ns,
          'MOUNT ID': e.mountId,
          PARENT_ID: e.parentId,
          'MAJOR:MINOR': `${e.major}:${e.minor}`,
          ROOT: e.root,
          MOUNT_POINT: e.mountPoint,
          MOUNT_OPTIONS: e.mountOptions,
          FIELDS: e.fields.join(' '),
          FSTYPE: e.fsType,
          MOUNT_SRC: e.source,
          SB_OPTIONS: e.superOptions,
        });
      }
    });
    return rows;
  },
});
