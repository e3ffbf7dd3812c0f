#!/usr/bin/env bash
# Installs what vmi needs on a fresh Debian 12 machine: QEMU, busybox for the lab guest's
# userland, tools to unpack kernels and build the lab's helper programs, tools to build the
# debian lab flavour's disk image without loop devices (debootstrap, sfdisk from fdisk,
# mkfs.fat from dosfstools, mtools, syslinux, mkfs.ext4 from e2fsprogs, qemu-img for the
# per-guest overlay), a supported Node when the system's is older (vmi's private copy of
# the LTS, in vmi's cache), and npm packages. Idempotent; needs root for apt-get (as on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(qemu-system-x86 busybox-static cpio xz-utils zstd kmod binutils xxd gcc libc6-dev make libelf1
  debootstrap fdisk dosfstools mtools syslinux syslinux-common e2fsprogs qemu-utils)
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
# The system's Node too old (Debian 12: 20)? Install the pinned LTS into vmi's cache
# (nothing if it is there) and run npm and the build on it: PATH changes for this script only.
node_bin=$(node scripts/private-node.mjs install --if-old lts)
if [ -n "$node_bin" ]; then
  export PATH="$node_bin:$PATH"
  echo "vmi setup: using vmi's private Node $(node --version) ($node_bin/node); the system's stays as it is" >&2
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "vmi setup: installing npm packages" >&2
  npm ci --no-audit --no-fund >&2
fi
npm run build >&2
