#!/bin/sh
# Builds dist/vmi-client, the native client of a vmi server (src/server/fast-client/
# vmi-client.c, docs/serve.md) with $CC (default cc). Without a C compiler it says so in
# one line and removes a stale client: the `vmi` wrapper (bin/vmi) then runs Node only.
set -eu
cd "$(dirname "$0")/.."
cc=${CC:-cc}
out=dist/vmi-client
if ! command -v "$cc" >/dev/null 2>&1; then
  rm -f "$out"
  echo "vmi: no C compiler ($cc): dist/vmi-client not built, the vmi command uses Node only"
  exit 0
fi
mkdir -p dist
# No -Werror: a newer compiler's new warning must not break an install (the unit test
# compiles with -Werror). Built next to its place and renamed: a running client is never
# overwritten mid-exec.
"$cc" -O2 -Wall -Wextra -o "$out.tmp" src/server/fast-client/vmi-client.c
mv -f "$out.tmp" "$out"
