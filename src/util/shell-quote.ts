/** One POSIX shell word for `s` (single-quoted), e.g. for QEMU's `exec:` migration URIs. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
