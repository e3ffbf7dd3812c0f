-- DuckDB queries over vmi's Parquet output.
--
--   vmi plugins run pslist psaux -r parquet -o out/
--   duckdb -cmd "SET file_search_path = 'out'" < samples/duckdb_pslist.sql
--   node samples/duckdb_pslist.mjs out/          (the same queries from Node)
--
-- File names are relative: DuckDB looks them up in file_search_path (here out/).
-- Each query is preceded by a `-- title:` line, which duckdb_pslist.mjs prints.

-- title: processes and kernel threads
SELECT count(*) AS processes,
       count(*) FILTER (WHERE STATE = 'Z') AS zombies,
       max(PID) AS max_pid
FROM 'pslist.parquet';

-- title: processes per COMM
SELECT COMM, count(*) AS n
FROM 'pslist.parquet'
GROUP BY COMM
ORDER BY n DESC, COMM
LIMIT 10;

-- title: newest processes, with their command lines (pslist joined with psaux on PID)
SELECT p.PID, p.PPID, p.COMM, p."CREATION TIME", a.ARGS
FROM 'pslist.parquet' AS p
LEFT JOIN 'psaux.parquet' AS a USING (PID)
ORDER BY p."CREATION TIME" DESC NULLS LAST, p.PID DESC
LIMIT 10;

-- title: processes started in the last minute before the newest one
SELECT p.PID, p.COMM, a.ARGS
FROM 'pslist.parquet' AS p
JOIN 'psaux.parquet' AS a USING (PID)
WHERE p."CREATION TIME" >= (SELECT max("CREATION TIME") FROM 'pslist.parquet') - INTERVAL 1 MINUTE
ORDER BY p.PID;

-- title: command line differs from COMM (renamed processes, or a shadow's borrowed argv)
SELECT p.PID, p.COMM, a.ARGS
FROM 'pslist.parquet' AS p
JOIN 'psaux.parquet' AS a USING (PID)
WHERE a.ARGS IS NOT NULL
  AND a.ARGS NOT LIKE '[%]'
  -- comm is argv[0]'s base name cut to 15 bytes, so compare prefixes
  AND NOT starts_with(ltrim(regexp_replace(split_part(a.ARGS, ' ', 1), '^.*/', ''), '-'), p.COMM)
ORDER BY p.PID;

-- title: names with bytes that are not UTF-8, and the exact bytes
-- vmi writes guest text as byte text: valid UTF-8 as is, \xNN for any other byte, \x5c
-- for a backslash; this turns it back into the guest's bytes (a BLOB).
SELECT PID, COMM, hex(replace(encode(COMM)::VARCHAR, '\x5Cx', '\x')::BLOB) AS comm_bytes
FROM 'pslist.parquet'
WHERE contains(COMM, '\')
ORDER BY PID;

-- title: vmi metadata of pslist.parquet
SELECT decode(key) AS key, decode(value) AS value
FROM parquet_kv_metadata('pslist.parquet')
WHERE decode(key) LIKE 'vmi.%'
ORDER BY key;
