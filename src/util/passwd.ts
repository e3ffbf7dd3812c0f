/**
 * Host user accounts from /etc/passwd (no NSS lookups: the unprivileged users vmi runs
 * isolated packs and replay clones as are local system users such as `nobody`).
 */
import { readFileSync } from 'node:fs';

/** A local user: name, uid and primary gid. */
export interface HostUser {
  name: string;
  uid: number;
  gid: number;
}

/** uid/gid of `name` from `passwd` (default /etc/passwd); undefined when absent or unreadable. */
export function passwdUser(name: string, passwd = '/etc/passwd'): HostUser | undefined {
  let text: string;
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 4 && /^\d+$/.test(f[2]) && /^\d+$/.test(f[3])) {
      return { name, uid: Number(f[2]), gid: Number(f[3]) };
    }
  }
  return undefined;
}
