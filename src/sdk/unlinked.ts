/**
 * Whether an open or mapped file is unlinked is a fact about its inode, not about the text
 * of its path. The kernel's d_path() appends ` (deleted)` to the path of a dentry that was
 * unlinked, so a file really named `r (deleted)` and an unlinked file `r` read the same
 * (`/tmp/r (deleted)`). The link count tells them apart: statx through the magic link
 * (/proc/PID/fd/N, /proc/PID/map_files/START-END) reaches the open inode even after the
 * unlink, and st_nlink is 0 exactly when no name is left.
 *
 * Limit: a file with other hard links whose opened name was removed has st_nlink > 0 and
 * the kernel's suffix all the same; it shows as not unlinked, with the suffix kept in the
 * path (its inode does still have a name).
 */
import { STATX_NLINK } from '../abi/linux/flags.js';
import type { Statx } from '../abi/linux/structs.js';

/** What d_path() appends to the path of an unlinked dentry (fs/d_path.c prepend_unreachable… `" (deleted)"`). */
export const DELETED_SUFFIX = ' (deleted)';

/** A path split into the file's name and the fact of its unlinking. */
export interface UnlinkedPath {
  /** The path without the kernel's suffix when the file is unlinked; as given otherwise. */
  path: string;
  /** True when st_nlink is 0; undefined when the link count is not known. */
  deleted: boolean | undefined;
}

/**
 * The path of an open or mapped file (byte text, as the kernel printed it) and whether its
 * inode is unlinked, from `stat` (statx of the magic link; its mask must hold
 * STATX_NLINK). Only an unlinked file loses one ` (deleted)`: `r (deleted) (deleted)`
 * unlinked is `r (deleted)`, and `r (deleted)` still linked keeps its name.
 */
export function unlinkedPath(text: string, stat: Statx | undefined): UnlinkedPath {
  if (!stat || (stat.mask & STATX_NLINK) === 0) return { path: text, deleted: undefined };
  if (stat.nlink !== 0) return { path: text, deleted: false };
  return {
    path: text.endsWith(DELETED_SUFFIX) ? text.slice(0, -DELETED_SUFFIX.length) : text,
    deleted: true,
  };
}
