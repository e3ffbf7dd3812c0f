/**
 * The layout of a vmi data lake: Hive-partitioned Parquet that DuckDB, Spark and Trino read
 * as one table per plugin.
 *
 *   DIR/plugin=NAME/host=HOST/guest=GUEST/date=YYYY-MM-DD/<time>-<id>.parquet
 *
 * - `<time>` is the round's collection time, UTC, `YYYYMMDDTHHMMSSmmmZ` (sorts as it reads);
 *   `<id>` is 8 random hex digits, so two collectors on one host never clash.
 * - A file is written under a hidden temporary name (`.<name>.tmp`, in the same directory)
 *   and renamed when complete: rename(2) within a directory is atomic, so a reader sees a
 *   whole file or none. The temporary name both starts with `.` (Spark's and Trino's
 *   Hive readers skip hidden files; Hadoop's FileInputFormat skips `.` and `_`) and does
 *   not end in `.parquet` (the `*.parquet` globs of DuckDB and of these docs do not match
 *   it): a collector killed mid-write leaves a file no reader sees.
 * - Partition values are escaped as Hive escapes them (FileUtils.escapePathName: `%XX`
 *   for `/`, `=`, `%`, `:` and control characters...), so a host or guest name never adds
 *   a directory level or a bogus `key=value`.
 * - Retention deletes whole `date=` partitions older than N days (by their name's date).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/** One file's place in the lake. */
export interface PartitionKey {
  plugin: string;
  host: string;
  guest: string;
  /** Collection time (the round's). */
  at: Date;
}

/** Characters Hive escapes in partition values (FileUtils.charToEscape), plus space. */
// eslint-disable-next-line no-control-regex
const HIVE_ESCAPE = /[\u0000-\u001f"#%'*/:=?\\\u007f{[\]^ ]/g;

/** A partition value as Hive writes it in a path: `a/b` → `a%2Fb`. Empty → `__HIVE_DEFAULT_PARTITION__`. */
export function escapePartitionValue(value: string): string {
  if (value === '') return '__HIVE_DEFAULT_PARTITION__';
  return value.replace(HIVE_ESCAPE, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** `YYYY-MM-DD` of a time, UTC. */
export function utcDate(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/** `YYYYMMDDTHHMMSSmmmZ` of a time, UTC: file names that sort by time. */
export function compactTime(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace('.', '');
}

/** The partition directory of a file, relative to the lake's root. */
export function partitionDir(key: PartitionKey): string {
  return join(
    `plugin=${escapePartitionValue(key.plugin)}`,
    `host=${escapePartitionValue(key.host)}`,
    `guest=${escapePartitionValue(key.guest)}`,
    `date=${utcDate(key.at)}`,
  );
}

/** A new file's name: `<time>-<id>.parquet`. */
export function dataFileName(at: Date, id: string = randomBytes(4).toString('hex')): string {
  return `${compactTime(at)}-${id}.parquet`;
}

/** The temporary name a data file is written under before its rename. */
export function tempFileName(finalName: string): string {
  return `.${finalName}.tmp`;
}

/** Whether a file name is one of the collector's temporary files (left behind by a kill). */
export function isTempFileName(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp');
}

/** Whether a file name is a complete data file that readers should see. */
export function isDataFileName(name: string): boolean {
  return !name.startsWith('.') && !name.startsWith('_') && name.endsWith('.parquet');
}

/**
 * The `date=` partition values to delete under retention of `days` days at time `now`:
 * those whose date is before the first day kept (today, UTC, and the `days - 1` days
 * before it are kept, so `days = 1` keeps today only). Names that are not a date are kept.
 */
export function expiredDates(dates: readonly string[], days: number, now: Date): string[] {
  if (!Number.isInteger(days) || days < 1)
    throw new RangeError(`retention must be a whole number of days ≥ 1, got ${days}`);
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const firstKept = utcDate(new Date(today - (days - 1) * 86_400_000));
  return dates.filter((d) => /^\d{4}-\d{2}-\d{2}$/.test(d) && !Number.isNaN(Date.parse(d)) && d < firstKept);
}

/** The glob of one plugin's data files under `root`, for read_parquet. */
export function pluginGlob(root: string, plugin: string): string {
  return join(root, `plugin=${escapePartitionValue(plugin)}`, '*', '*', '*', '*.parquet');
}

/** Parses `--interval` text: `30s`, `5m`, `1h`, `500ms`, or plain seconds. Milliseconds. */
export function parseInterval(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new RangeError(`interval must be a number with ms, s, m or h (e.g. 30s), got '${text}'`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000);
  if (ms < 100) throw new RangeError(`interval must be at least 100ms, got '${text}'`);
  return ms;
}
