/**
 * samples/duckdb_containers.sql against Parquet files the renderer wrote from synthetic
 * pslist and sockstat tables with vmi's column names: every query runs, and the grouping
 * by container is right.
 */
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeOutput, type ResultTable } from '../../src/output/index.js';
import { PROCESS_NS_COLUMNS } from '../../src/sdk/processes.js';
import { sockstat } from '../../src/plugins/sockstat.js';

const D = 'docker:' + 'a'.repeat(64);
const K = 'k8s:4b3c1e2a-9f0d-4c1b-8a7e-2d5f6a7b8c9d/' + 'b'.repeat(64);

function pslistTable(): ResultTable {
  const procs: [number, string, string, string | null, bigint][] = [
    [1, 'init', '1', null, 4026531836n],
    [10, 'httpd', '10', null, 4026531836n],
    [20, 'nginx', '20 1', D, 4026532400n],
    [21, 'nginx', '21 2', D, 4026532400n],
    [30, 'redis-server', '30', K, 4026531836n],
  ];
  const rows = procs.map(([pid, comm, nspid, ctr, pidns]) =>
    PROCESS_NS_COLUMNS.map((c) => {
      switch (c.name) {
        case 'PID':
        case 'TID':
          return pid;
        case 'PPID':
          return 1;
        case 'COMM':
          return comm;
        case 'UID':
        case 'GID':
        case 'EUID':
        case 'EGID':
          return 0;
        case 'CREATION TIME':
          return new Date(Date.UTC(2026, 10, 29) + pid * 1000);
        case 'STATE':
          return 'S';
        case 'THREADS':
          return 1;
        case 'PID_NS_ID':
          return pidns;
        case 'NSPID':
          return nspid;
        case 'CGROUP':
          return ctr ? `/${ctr.replace(':', '/')}` : '/';
        case 'CONTAINER':
          return ctr;
      }
    }),
  );
  return { plugin: 'pslist', columns: [...PROCESS_NS_COLUMNS], rows, errors: [], metadata: {} };
}

function sockstatTable(): ResultTable {
  const sock = (pid: number, comm: string, inode: number, port: number, netns: bigint, state = 'LISTEN') =>
    sockstat.columns.map(
      (c) =>
        ({
          NetNS: netns,
          'Process Name': comm,
          PID: pid,
          TID: pid,
          FD: 3,
          Inode: BigInt(inode),
          Family: 'AF_INET',
          Type: 'STREAM',
          Proto: 'TCP',
          'Source Addr': '0.0.0.0',
          'Source Port': port,
          'Destination Addr': '0.0.0.0',
          'Destination Port': 0,
          State: state,
        })[c.name] ?? null,
    );
  return {
    plugin: 'sockstat',
    columns: sockstat.columns.map((c) => ({ ...c })),
    rows: [
      sock(10, 'httpd', 100, 8080, 4026531992n),
      sock(20, 'nginx', 200, 80, 4026532500n),
      sock(21, 'nginx', 200, 80, 4026532500n), // the same socket, inherited by a worker
      sock(30, 'redis-server', 300, 6379, 4026532600n),
      sock(30, 'redis-server', 301, 6379, 4026532600n, 'ESTABLISHED'),
    ],
    errors: [],
    metadata: {},
  };
}

describe('samples/duckdb_containers.sql', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmi-duckdb-ctr-'));
    await writeOutput([pslistTable(), sockstatTable()], { format: 'parquet', output: `${dir}/` });
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs every query and groups processes and listeners by container', async () => {
    const text = await readFile(new URL('../../samples/duckdb_containers.sql', import.meta.url), 'utf8');
    const queries = text
      .split(/^-- title: */m)
      .slice(1)
      .map((part) => ({
        title: part.slice(0, part.indexOf('\n')).trim(),
        sql: part.slice(part.indexOf('\n') + 1),
      }));
    expect(queries).toHaveLength(4);
    const db = await DuckDBInstance.create(':memory:');
    const con = await db.connect();
    try {
      await con.run(`SET file_search_path = '${dir}'`);
      const results: Record<string, unknown>[][] = [];
      for (const q of queries) results.push((await con.runAndReadAll(q.sql)).getRowObjectsJS());
      expect(results[0].map((r) => [r.container, Number(r.processes), Number(r.pid_namespaces)])).toEqual([
        ['(host)', 2, 1],
        [D, 2, 1],
        [K, 1, 1],
      ]);
      expect(results[1].map((r) => [r.PID, r.pid_in_container])).toEqual([
        [20, 1],
        [21, 2],
        [30, 30],
      ]);
      expect(results[2].map((r) => [r.container, Number(r.port), r.processes])).toEqual([
        ['(host)', 8080, 'httpd'],
        [D, 80, 'nginx'],
        [K, 6379, 'redis-server'],
      ]);
      expect(results[3].map((r) => [r.container, Number(r.listening_sockets)])).toEqual([
        ['(host)', 1],
        [D, 1],
        [K, 1],
      ]);
    } finally {
      con.closeSync();
    }
  });
});
