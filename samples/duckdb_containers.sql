-- DuckDB queries: processes and listening sockets grouped by container.
--
-- vmi names a process's container from its cgroup path (pslist's CONTAINER column:
-- docker:<id>, k8s:<pod uid>/<id>, podman:<id>, nspawn:<name>, lxc:<name>; NULL outside
-- any container). sockstat has no CONTAINER column: its rows join pslist on PID.
--
--   vmi plugins run pslist sockstat -r parquet -o out/
--   duckdb -cmd "SET file_search_path = 'out'" < samples/duckdb_containers.sql
--
-- One container's tables only: `vmi plugins run pslist --container docker:3f4e ...`.
-- Each query is preceded by a `-- title:` line (as in duckdb_pslist.sql).

-- title: processes per container
SELECT coalesce(CONTAINER, '(host)') AS container,
       count(*) AS processes,
       count(DISTINCT PID_NS_ID) AS pid_namespaces,
       string_agg(DISTINCT COMM, ', ' ORDER BY COMM) AS commands,
       min(CGROUP) AS cgroup
FROM 'pslist.parquet'
GROUP BY ALL
ORDER BY processes DESC, container;

-- title: each container's processes with their PIDs inside it (NSpid's last level)
SELECT CONTAINER AS container,
       PID,
       CAST(split_part(NSPID, ' ', -1) AS INTEGER) AS pid_in_container,
       COMM,
       STATE
FROM 'pslist.parquet'
WHERE CONTAINER IS NOT NULL
ORDER BY container, pid_in_container;

-- title: listening sockets per container (sockstat joined with pslist on PID)
SELECT coalesce(p.CONTAINER, '(host)') AS container,
       s.Proto AS proto,
       s."Source Addr" AS address,
       s."Source Port" AS port,
       s.NetNS AS netns,
       string_agg(DISTINCT s."Process Name", ', ') AS processes
FROM 'sockstat.parquet' AS s
JOIN 'pslist.parquet' AS p USING (PID)
WHERE s.State = 'LISTEN'
GROUP BY ALL
ORDER BY container, proto, port;

-- title: listeners per container, counted
SELECT coalesce(p.CONTAINER, '(host)') AS container,
       count(DISTINCT s.Inode) AS listening_sockets,
       count(DISTINCT s.NetNS) AS network_namespaces
FROM 'sockstat.parquet' AS s
JOIN 'pslist.parquet' AS p USING (PID)
WHERE s.State = 'LISTEN'
GROUP BY ALL
ORDER BY listening_sockets DESC, container;
