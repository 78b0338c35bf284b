#!/usr/bin/env bash
# Builds the Debian packages from already built binaries:
#   riptides-daemon_<v>_<arch>.deb        riptides-daemon, its units (daemon + module loading),
#                                         the `riptides` system user (sysusers.d)
#   riptides-controlplane_<v>_<arch>.deb  riptides-controlplane, its unit and user
#   riptides-dkms_<v>_all.deb             the kernel module source for DKMS (kmod/module + UAPI)
#
#   build-debs.sh [--bin-dir DIR] [--out DIR] [--version V]
#     --bin-dir  where riptides-daemon and riptides-controlplane are (default target/release)
#     --out      output directory (default target/debian)
#     --version  package version (default: riptides-daemon --version)
# Needs dpkg-deb only (no debhelper); run as root or under fakeroot so files are owned by root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir="$repo/target/release" out="$repo/target/debian" version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) echo "build-debs.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
for b in riptides-daemon riptides-controlplane; do
  [ -x "$bin_dir/$b" ] || { echo "build-debs.sh: $bin_dir/$b not found (cargo build --release --bins)" >&2; exit 1; }
done
version=${version:-$("$bin_dir/riptides-daemon" --version | awk '{print $2}')}
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
maint="Riptides maintainers <riptides@example.invalid>"

# control NAME ARCH DEPENDS DESCRIPTION [EXTRA] -> DEBIAN/control of $work/NAME
control() {
  local name=$1 pkg_arch=$2 depends=$3 desc=$4 extra=${5:-}
  mkdir -p "$work/$name/DEBIAN"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $pkg_arch"
    echo "Maintainer: $maint"
    echo "Section: net"
    echo "Priority: optional"
    [ -n "$depends" ] && echo "Depends: $depends"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$work/$name" | cut -f1)"
    echo "Description: $desc"
  } > "$work/$name/DEBIAN/control"
}

script() { install -m 0755 /dev/stdin "$work/$1/DEBIAN/$2"; }

build() {
  local name=$1 pkg_arch=$2
  find "$work/$name" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group --build "$work/$name" "$out/${name}_${version}_${pkg_arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${pkg_arch}.deb"
}

# --- riptides-daemon ---------------------------------------------------------------------
p="$work/riptides-daemon"
install -D -m 0755 "$bin_dir/riptides-daemon" "$p/usr/bin/riptides-daemon"
install -D -m 0644 "$repo/ops/systemd/riptides-daemon.service" "$p/lib/systemd/system/riptides-daemon.service"
install -D -m 0644 "$repo/ops/systemd/riptides-module.service" "$p/lib/systemd/system/riptides-module.service"
install -D -m 0644 "$repo/ops/systemd/riptides-daemon.sysusers.conf" "$p/usr/lib/sysusers.d/riptides-daemon.conf"
install -D -m 0644 /dev/stdin "$p/usr/share/doc/riptides-daemon/daemon.env.example" <<'ENV'
# Copy to /etc/riptides/daemon.env (mode 0600), fill in, then: systemctl restart riptides-daemon
RIPTIDES_DAEMON_ARGS=--controlplane cp.example.com:9443 --trust-domain example.com --ca-pin sha256:HEX --dataplane userspace
RIPTIDES_JOIN_TOKEN=
ENV
control riptides-daemon "$arch" "nftables, kmod" "Riptides daemon: workload identity and transparent mTLS
 Attests to the Riptides control plane, keeps workload SVIDs current and enforces
 identity-based policy with the kernel module (riptides-dkms) or the userspace
 dataplane (nftables). Configure /etc/riptides/daemon.env, then it starts." \
  "Recommends: riptides-dkms"
script riptides-daemon postinst <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-sysusers riptides-daemon.conf 2>/dev/null || \
    getent passwd riptides >/dev/null || \
    useradd --system --home-dir /var/lib/riptides --no-create-home --shell /usr/sbin/nologin riptides
  mkdir -p /etc/riptides
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable riptides-module.service riptides-daemon.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload
      if [ -f /etc/riptides/daemon.env ]; then systemctl restart riptides-daemon.service || true; fi
    fi
  fi
fi
exit 0
SH
script riptides-daemon prerm <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then systemctl stop riptides-daemon.service || true; fi
  systemctl disable riptides-daemon.service riptides-module.service >/dev/null 2>&1 || true
fi
exit 0
SH
script riptides-daemon postrm <<'SH'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /var/lib/riptides
  rm -f /etc/riptides/daemon.env
  rmdir /etc/riptides 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
SH
build riptides-daemon "$arch"

# --- riptides-controlplane ---------------------------------------------------------------
p="$work/riptides-controlplane"
install -D -m 0755 "$bin_dir/riptides-controlplane" "$p/usr/bin/riptides-controlplane"
install -D -m 0644 "$repo/ops/systemd/riptides-controlplane.service" "$p/lib/systemd/system/riptides-controlplane.service"
install -D -m 0644 "$repo/ops/systemd/riptides-controlplane.sysusers.conf" "$p/usr/lib/sysusers.d/riptides-controlplane.conf"
install -D -m 0644 /dev/stdin "$p/etc/riptides/controlplane.env" <<'ENV'
# Read by riptides-controlplane.service. Changing the trust domain after daemons attested
# means re-attesting every daemon.
RIPTIDES_TRUST_DOMAIN=riptides.local
RIPTIDES_CONTROLPLANE_ARGS=
ENV
mkdir -p "$p/DEBIAN"; echo "/etc/riptides/controlplane.env" > "$p/DEBIAN/conffiles"
control riptides-controlplane "$arch" "" "Riptides control plane
 Resource API (8443/tcp), SPIFFE CA, daemon endpoint (9443/udp QUIC, 8001/tcp),
 health and Prometheus metrics (8080/tcp), on an embedded store."
script riptides-controlplane postinst <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-sysusers riptides-controlplane.conf 2>/dev/null || \
    getent passwd riptides-cp >/dev/null || \
    useradd --system --home-dir /var/lib/riptides-controlplane --no-create-home --shell /usr/sbin/nologin riptides-cp
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable riptides-controlplane.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload
      systemctl restart riptides-controlplane.service || true
    fi
  fi
fi
exit 0
SH
script riptides-controlplane prerm <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then systemctl stop riptides-controlplane.service || true; fi
  systemctl disable riptides-controlplane.service >/dev/null 2>&1 || true
fi
exit 0
SH
script riptides-controlplane postrm <<'SH'
#!/bin/sh
set -e
# The store and the CA keys are kept on purge too unless asked: losing the CA re-attests every daemon.
if [ "$1" = purge ] && [ "${RIPTIDES_PURGE_STATE:-0}" = 1 ]; then rm -rf /var/lib/riptides-controlplane /var/lib/private/riptides-controlplane; fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
SH
build riptides-controlplane "$arch"

# --- riptides-dkms ------------------------------------------------------------------------
p="$work/riptides-dkms"
src="$p/usr/src/riptides-$version"
mkdir -p "$src/module"
for f in "$repo"/kmod/module/*.c "$repo"/kmod/module/*.h "$repo/kmod/module/Kbuild" "$repo/kmod/module/Makefile"; do
  [ -e "$f" ] && install -m 0644 "$f" "$src/module/"
done
(cd "$repo/kmod" && find include -type f -exec install -D -m 0644 {} "$src/{}" \;)
sed "s/@VERSION@/$version/" "$repo/ops/systemd/dkms.conf" > "$src/dkms.conf"
control riptides-dkms all "dkms (>= 2.1.0.0)" "Riptides kernel module (DKMS source)
 Source of riptides.ko, built by DKMS for every installed kernel with headers.
 riptides-module.service (in riptides-daemon) loads it." \
  "Recommends: riptides-daemon"
# shellcheck disable=SC2016
script riptides-dkms postinst <<SH
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  dkms add -m riptides -v $version >/dev/null 2>&1 || true
  # Build for the running kernel when its headers are there; DKMS' autoinstall handles later kernels.
  if [ -e "/lib/modules/\$(uname -r)/build" ]; then
    dkms build -m riptides -v $version -k "\$(uname -r)" && dkms install -m riptides -v $version -k "\$(uname -r)" || \
      echo "riptides-dkms: the module did not build for \$(uname -r); the daemon will use the userspace dataplane" >&2
  fi
fi
exit 0
SH
script riptides-dkms prerm <<SH
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ]; then
  dkms remove -m riptides -v $version --all >/dev/null 2>&1 || true
fi
exit 0
SH
build riptides-dkms all
