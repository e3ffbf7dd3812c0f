#!/usr/bin/env node
/**
 * Runs samples/duckdb_pslist.sql with DuckDB's Node API (@duckdb/node-api) against vmi's
 * Parquet output and prints each result:
 *
 *   vmi plugins run pslist psaux -r parquet -o out/
 *   node samples/duckdb_pslist.mjs out/            # tables
 *   node samples/duckdb_pslist.mjs out/ --json     # one JSON object per query
 *
 * Outside this repository: `npm install @duckdb/node-api` (the DuckDB library ships in
 * the npm package; nothing is downloaded at run time).
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath, URL } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';

const args = process.argv.slice(2);
const json = args.includes('--json');
const dir = resolve(args.find((a) => !a.startsWith('--')) ?? 'out');
const sqlFile = fileURLToPath(new URL('./duckdb_pslist.sql', import.meta.url));

/** The queries of the .sql file: [{ title, sql }], split on `-- title:` lines. */
function queries(text) {
  const out = [];
  for (const part of text.split(/^-- title: */m).slice(1)) {
    const nl = part.indexOf('\n');
    out.push({ title: part.slice(0, nl).trim(), sql: part.slice(nl + 1).trim() });
  }
  return out;
}

/** JSON-friendly cells: BigInt as number when exact, timestamps as ISO strings. */
function plain(value) {
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : String(value);
  if (value instanceof Date) return value.toISOString();
  return value;
}

const instance = await DuckDBInstance.create(':memory:');
const db = await instance.connect();
try {
  // Relative file names in the .sql ('pslist.parquet') are looked up in `dir`.
  await db.run(`SET file_search_path = '${dir.replaceAll("'", "''")}'`);
  for (const { title, sql } of queries(await readFile(sqlFile, 'utf8'))) {
    const reader = await db.runAndReadAll(sql);
    const rows = reader
      .getRowObjectsJS()
      .map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, plain(v)])));
    if (json) {
      process.stdout.write(`${JSON.stringify({ title, rows })}\n`);
    } else {
      console.log(`\n== ${title} (${rows.length} row${rows.length === 1 ? '' : 's'})`);
      if (rows.length) console.table(rows);
    }
  }
} finally {
  db.closeSync();
  instance.closeSync();
}
