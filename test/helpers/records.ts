import type { RowValue } from '../../src/output/columns.js';
import type { ResultTable } from '../../src/output/table.js';

/** Rows of a table as objects keyed by column name (what tests compare against the guest). */
export function records(t: ResultTable): Record<string, RowValue>[] {
  return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c.name, r[i]])));
}
