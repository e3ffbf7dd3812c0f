/**
 * mountinfo: the mounts of a mount namespace (Volatility's linux.mountinfo), from
 * /proc/PID/mountinfo, as seen from that process's root. Without --pid: the namespace of
 * the guest's init (/proc/1), i.e. the guest's root view; the shadow itself lives in a
 * private copy of it with its own /proc mounted (src/shadow/root-context.ts), which is
 * not the guest's. The namespace id is the inode number in the /proc/PID/ns/mnt link
 * (`mnt:[4026531840]`).
 */
import { parseMountInfo } from '../abi/linux/proc/index.js';
import { definePlugin, isVanished, ProcFs, unreadable, type Row, type RowValue } from '../sdk/index.js';

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
  description: 'Lists the mounts of the guest (of its mount namespaces)',
  version: '1.0.0',
  columns,
  options: {
    pid: {
      type: 'integer',
      multiple: true,
      description: "Mounts as these processes see them (repeatable); default: the guest's init (PID 1)",
    },
  },
  async run(ctx) {
    const who: number[] = ctx.options.pid.length > 0 ? [...new Set(ctx.options.pid)] : [1];
    // 1 batch for every namespace link, 1 (+ follow-up) for every mountinfo.
    const links = await ctx.sys.readlinks(who.map((p) => `/proc/${p}/ns/mnt`));
    const files = await ctx.sys.readFiles(
      who.map((p) => ({ path: `/proc/${p}/mountinfo`, chunkSize: ProcFs.chunkFor('mountinfo') })),
    );
    const rows: Row<typeof columns>[] = [];
    const seen = new Set<string>();
    who.forEach((p, i) => {
      const f = files[i];
      if (isVanished(f.error) && p !== 1) return;
      const link = links[i];
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
