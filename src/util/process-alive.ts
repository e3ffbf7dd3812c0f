/**
 * Whether a host process exists (it may belong to another user: EPERM still means alive).
 * Only positive integers are pids here: kill(0) and kill(-1) would probe process groups.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
