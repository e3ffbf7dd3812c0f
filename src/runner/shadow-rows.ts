/**
 * vmi leaves itself out of the evidence. The shadow is a real guest process while vmi is
 * attached: pslist, psaux (with the argv of the task it was forked from, so it looks like
 * a second copy of that task), envars, lsof, maps and sockstat would all list it, and on a
 * replayed capture it is a process that was never in the image. The runner knows its PID,
 * so this is done once here, for built-in and pack plugins alike, on every table that has
 * a `PID` column (the process, file, memory and socket tables): by default the shadow's
 * rows are dropped; with `--include-shadow` they stay and a VMI_SHADOW column marks them.
 * Either way the table metadata names the PID (`shadow.pid`) and what was done
 * (`shadow.rows`).
 */
import type { ColumnSpec, RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';

/** The column that identifies a process's rows (Volatility's name; every per-process table has it). */
export const PID_COLUMN = 'PID';

/** Added with `--include-shadow`: true on the shadow's own rows. */
export const SHADOW_COLUMN: ColumnSpec = {
  name: 'VMI_SHADOW',
  type: 'bool',
  description: "True on the rows of vmi's own shadow process (shown with --include-shadow)",
};

function isPid(v: RowValue, pid: number): boolean {
  return v === pid || (typeof v === 'bigint' && v === BigInt(pid));
}

/**
 * Drops (or, with `include`, marks) the rows of the processes in `shadowPids` in `table`,
 * in place, and records it in the metadata. In a tree table a dropped row takes its
 * subtree with it (the shadow has no children of its own: init adopted it). A table
 * without a PID column only gets the metadata. `shadowPids` empty or only 0 (no shadow,
 * e.g. a fake session): nothing changes.
 */
export function applyShadowRows(table: ResultTable, shadowPids: readonly number[], include: boolean): void {
  const pids = shadowPids.filter((p) => p > 0);
  if (pids.length === 0) return;
  const col = table.columns.findIndex((c) => c.name === PID_COLUMN);
  const mine = (row: RowValue[]): boolean => col >= 0 && pids.some((p) => isPid(row[col], p));
  let count = 0;
  if (col >= 0 && include) {
    table.columns = [...table.columns, SHADOW_COLUMN];
    table.rows = table.rows.map((row) => {
      const m = mine(row);
      if (m) count++;
      return [...row, m];
    });
  } else if (col >= 0) {
    const rows: RowValue[][] = [];
    const depths: number[] = [];
    let skipBelow = -1; // depth of a dropped row whose subtree is being skipped
    table.rows.forEach((row, i) => {
      const d = table.depths?.[i] ?? 0;
      if (skipBelow >= 0 && d > skipBelow) return;
      skipBelow = -1;
      if (mine(row)) {
        count++;
        skipBelow = d;
        return;
      }
      rows.push(row);
      depths.push(d);
    });
    table.rows = rows;
    if (table.depths) table.depths = depths;
  }
  table.metadata = {
    ...table.metadata,
    'shadow.pid': pids.join(','),
    'shadow.rows':
      col < 0
        ? 'none (no PID column)'
        : include
          ? `included, marked in ${SHADOW_COLUMN.name} (${count})`
          : `excluded (${count})`,
  };
}
