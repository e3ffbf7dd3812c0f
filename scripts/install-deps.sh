#!/usr/bin/env bash
# Installs what vmi needs on a fresh Debian 12 machine: QEMU, busybox for the lab guest's
# userland, tools to unpack kernels and build the lab's helper programs, and npm packages.
# Idempotent; needs root for apt-get (as on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(qemu-system-x86 busybox-static cpio xz-utils zstd kmod binutils xxd gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vmi setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "vmi setup: installing npm packages" >&2
  npm ci --no-audit --no-fund >&2
fi
npm run build >&2
