#!/usr/bin/env bash
# Prints the path of a cached Debian 12 (bookworm) minbase root with systemd, nftables and kmod,
# made once with debootstrap from the Debian archive and kept as a tarball in
# $RIPTIDES_OPS_CACHE (default /var/cache/riptides-ops). Extracts a fresh copy into DIR:
#   debian-chroot.sh DIR
# The package tests install the .debs into such a copy with the chroot's own dpkg.
set -euo pipefail
dest=${1:?usage: debian-chroot.sh DIR}
cache=${RIPTIDES_OPS_CACHE:-/var/cache/riptides-ops}
mirror=${RIPTIDES_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/bookworm-minbase-systemd-kmod.tar"
mkdir -p "$cache"
command -v debootstrap >/dev/null || { echo "debian-chroot.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
(
  flock 9
  if [ ! -s "$tarball" ]; then
    tmp=$(mktemp -d "$cache/build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "debian-chroot.sh: debootstrap bookworm into $tmp (once; cached in $tarball)" >&2
    debootstrap --variant=minbase --include=systemd,nftables,kmod bookworm "$tmp/root" "$mirror" >"$tmp/log" 2>&1 \
      || { tail -20 "$tmp/log" >&2; exit 1; }
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb
    tar -C "$tmp/root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  fi
) 9>"$cache/.lock"
mkdir -p "$dest"
tar -C "$dest" -xf "$tarball"
