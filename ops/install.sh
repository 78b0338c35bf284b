#!/usr/bin/env bash
# Installs the Riptides daemon on a VM (systemd), or removes it. Idempotent: running it again
# with the same arguments changes nothing; with new arguments it updates the configuration and
# restarts the daemon.
#
#   install.sh --controlplane-url URL --join-token TOKEN --ca-pin sha256:HEX [options]
#   install.sh --uninstall [--purge] [--root DIR]
#
# What it does:
#   1. creates the system user `riptides` (systemd-sysusers),
#   2. installs riptides-daemon into PREFIX/bin and the units riptides-daemon.service and
#      riptides-module.service into /etc/systemd/system,
#   3. when kernel headers for the running kernel are present and dkms is installed, puts the
#      module source into /usr/src/riptides-VERSION and builds/installs it with DKMS, and the
#      daemon uses the kernel dataplane; otherwise the userspace dataplane (nftables),
#   4. writes /etc/riptides/daemon.env (mode 0600: it holds the join token),
#   5. enables the units and (re)starts the daemon.
#
# Options:
#   --controlplane-url URL   the control plane: HOST, HOST:PORT, https://HOST[:8443] or quic://HOST:PORT.
#                            The daemon dials HOST:9443/udp (QUIC; the port of a quic:// URL if given)
#                            and falls back to HOST:8001/tcp.
#   --controlplane-tunnel HOST:PORT  the TCP+TLS fallback, when it is not HOST:8001
#   --join-token TOKEN       from `riptides token create` (single use; not needed once the node has an identity)
#   --ca-pin sha256:HEX      the control plane's CA pin (printed by riptides-controlplane at start)
#   --trust-domain TD        must match the control plane's (default riptides.local)
#   --dataplane MODE         kernel|userspace|auto|none (default: kernel when DKMS installed the module, else userspace)
#   --bin-dir DIR            where riptides-daemon is (default: next to this script, else target/release)
#   --kmod-src DIR           the module source: DIR/module and DIR/include (default: ../kmod from this script)
#   --prefix DIR             install prefix for the binary (default /usr/local)
#   --kernel-release KVER    kernel to build the module for (default: uname -r)
#   --root DIR               install into DIR instead of / (an image or a test root): units are
#                            enabled with `systemctl --root`, nothing is started
#   --uninstall              stop, disable and remove everything installed; keeps the node's identity
#                            (/var/lib/riptides) and the `riptides` user unless --purge (the user is kept
#                            even then, as Debian packages do)
#   --purge                  with --uninstall: also remove /var/lib/riptides
# Environment: SYSTEMCTL, DKMS, SYSUSERS override the programs used (tests record the calls).
set -euo pipefail

SYSTEMCTL=${SYSTEMCTL:-systemctl}
DKMS=${DKMS:-dkms}
SYSUSERS=${SYSUSERS:-systemd-sysusers}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

cp_url="" tunnel="" token="" pin="" td="riptides.local" dataplane="" bin_dir="" kmod_src=""
prefix="/usr/local" kver="" root="/" mode="install" purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --controlplane-url) cp_url=${2-}; shift 2 ;;
    --controlplane-tunnel) tunnel=${2-}; shift 2 ;;
    --join-token) token=${2-}; shift 2 ;;
    --ca-pin) pin=${2-}; shift 2 ;;
    --trust-domain) td=${2-}; shift 2 ;;
    --dataplane) dataplane=${2-}; shift 2 ;;
    --bin-dir) bin_dir=${2-}; shift 2 ;;
    --kmod-src) kmod_src=${2-}; shift 2 ;;
    --prefix) prefix=${2-}; shift 2 ;;
    --kernel-release) kver=${2-}; shift 2 ;;
    --root) root=${2-}; shift 2 ;;
    --uninstall) mode="uninstall"; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$root" ] && [ -d "$root" ] || die "--root $root is not a directory"
root=$(cd "$root" && pwd)
R=${root%/}            # prefix for every path written ("" for the live system)
live=1; [ "$root" = "/" ] || live=0
kver=${kver:-$(uname -r)}
unit_dir="$R/etc/systemd/system"
etc_dir="$R/etc/riptides"
env_file="$etc_dir/daemon.env"
sysusers_file="$R/etc/sysusers.d/riptides-daemon.conf"
state_dir="$R/var/lib/riptides"
units=(riptides-module.service riptides-daemon.service)

systemctl_offline() { if [ $live -eq 1 ]; then "$SYSTEMCTL" "$@"; else "$SYSTEMCTL" --root="$root" "$@"; fi; }

# Writes stdin to $1 with mode $2 only when the content differs; says what happened.
put() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat > "$tmp"
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    chmod "$mode" "$dest"; rm -f "$tmp"; say "unchanged ${dest#"$R"}"
  else
    install -m "$mode" "$tmp" "$dest"; rm -f "$tmp"; say "wrote ${dest#"$R"}"
    changed=1
  fi
}

uninstall() {
  local version
  if [ $live -eq 1 ]; then
    "$SYSTEMCTL" disable --now "${units[@]}" || true
  else
    "$SYSTEMCTL" --root="$root" disable "${units[@]}" || true
  fi
  for u in "${units[@]}"; do rm -f "$unit_dir/$u"; done
  rm -rf "$unit_dir/riptides-daemon.service.d"
  if [ $live -eq 1 ]; then "$SYSTEMCTL" daemon-reload || true; fi
  for d in "$R"/usr/src/riptides-*/; do
    [ -d "$d" ] || continue
    version=$(basename "$d"); version=${version#riptides-}
    if command -v "$DKMS" >/dev/null 2>&1; then
      "$DKMS" remove "riptides/$version" --all || true
    fi
    rm -rf "$d"
  done
  rm -f "$R$prefix/bin/riptides-daemon" "$env_file" "$sysusers_file"
  rmdir "$etc_dir" 2>/dev/null || true
  if [ $purge -eq 1 ]; then rm -rf "$state_dir"; say "removed ${state_dir#"$R"} (the node's identity)"; fi
  say "uninstalled (the system user riptides is kept)"
}

if [ "$mode" = "uninstall" ]; then uninstall; exit 0; fi

# --- arguments -----------------------------------------------------------------------------
[ -n "$cp_url" ] || die "--controlplane-url is required"
[ -n "$pin" ] || die "--ca-pin is required (riptides-controlplane prints 'CA pin sha256:...' at start)"
[[ "$pin" =~ ^sha256:[0-9a-f]{64}$ ]] || die "--ca-pin must be sha256: followed by 64 lowercase hex digits"
[[ "$td" =~ ^[a-z0-9._-]+$ ]] || die "--trust-domain $td is not a valid trust domain"
if [ -z "$token" ] && [ ! -s "$state_dir/daemon.json" ] && [ ! -s "$env_file" ]; then
  die "--join-token is required for a node that has no identity yet (riptides token create --daemon-id NAME)"
fi
case "$token" in *[[:space:]]*) die "--join-token contains whitespace" ;; esac

# URL -> QUIC endpoint HOST:PORT (and the tunnel default HOST:8001)
rest=$cp_url scheme=""
case "$rest" in *://*) scheme=${rest%%://*}; rest=${rest#*://} ;; esac
rest=${rest%%/*}
case "$rest" in
  \[*\]:*) host=${rest%:*}; port=${rest##*:} ;;
  \[*\]) host=$rest; port="" ;;
  *:*) host=${rest%:*}; port=${rest##*:} ;;
  *) host=$rest; port="" ;;
esac
[ -n "$host" ] || die "--controlplane-url $cp_url has no host"
case "$scheme" in
  ""|quic) quic_port=${port:-9443} ;;
  https) quic_port=9443 ;;   # an API URL: its port (8443) is not the daemon endpoint
  *) die "--controlplane-url scheme $scheme:// not understood (use HOST, https:// or quic://)" ;;
esac
[[ "$quic_port" =~ ^[0-9]+$ ]] || die "--controlplane-url $cp_url: bad port"
controlplane="$host:$quic_port"
tunnel=${tunnel:-$host:8001}

# --- binaries ------------------------------------------------------------------------------
if [ -z "$bin_dir" ]; then
  for d in "$here" "$here/../target/release"; do [ -x "$d/riptides-daemon" ] && { bin_dir=$d; break; }; done
fi
[ -n "$bin_dir" ] && [ -x "$bin_dir/riptides-daemon" ] || die "riptides-daemon not found (build it or pass --bin-dir)"
version=$("$bin_dir/riptides-daemon" --version | awk '{print $2}')
[ -n "$version" ] || die "cannot read the version of $bin_dir/riptides-daemon"
changed=0

sysusers_root=(); [ $live -eq 1 ] || sysusers_root=(--root="$root")
"$SYSUSERS" "${sysusers_root[@]}" --inline "$(grep -v '^#' "$here/systemd/riptides-daemon.sysusers.conf")" \
  || die "cannot create the riptides user"
put "$sysusers_file" 0644 < "$here/systemd/riptides-daemon.sysusers.conf"
put "$R$prefix/bin/riptides-daemon" 0755 < "$bin_dir/riptides-daemon"
exec_path="$prefix/bin/riptides-daemon"
put "$unit_dir/riptides-daemon.service" 0644 \
  < <(sed "s|^ExecStart=/usr/bin/riptides-daemon |ExecStart=$exec_path |" "$here/systemd/riptides-daemon.service")
put "$unit_dir/riptides-module.service" 0644 < "$here/systemd/riptides-module.service"

# --- kernel module (DKMS) or userspace -----------------------------------------------------
module=0
headers="$R/lib/modules/$kver/build"
if [ -e "$headers/Makefile" ] && command -v "$DKMS" >/dev/null 2>&1; then
  kmod_src=${kmod_src:-$here/../kmod}
  [ -d "$kmod_src/module" ] && [ -d "$kmod_src/include" ] || die "module source not found in $kmod_src (pass --kmod-src)"
  src="$R/usr/src/riptides-$version"
  mkdir -p "$src/module" "$src/include"
  for f in "$kmod_src"/module/*.c "$kmod_src"/module/*.h "$kmod_src/module/Kbuild" "$kmod_src/module/Makefile"; do
    if [ -e "$f" ]; then put "$src/module/$(basename "$f")" 0644 < "$f"; fi
  done
  while IFS= read -r f; do
    put "$src/include/${f#"$kmod_src/include/"}" 0644 < "$f"
  done < <(find "$kmod_src/include" -type f)
  put "$src/dkms.conf" 0644 < <(sed "s/@VERSION@/$version/" "$here/systemd/dkms.conf")
  dkms_tree=()
  [ $live -eq 1 ] || dkms_tree=(--sourcetree "$R/usr/src" --dkmstree "$R/var/lib/dkms" --installtree "$R/lib/modules")
  if "$DKMS" status "riptides/$version" -k "$kver" "${dkms_tree[@]}" 2>/dev/null | grep -q installed; then
    say "riptides/$version already installed by DKMS for $kver"
  else
    "$DKMS" add "riptides/$version" "${dkms_tree[@]}" 2>/dev/null || true   # "already added" is fine
    "$DKMS" build "riptides/$version" -k "$kver" "${dkms_tree[@]}" || die "DKMS could not build riptides.ko for $kver"
    "$DKMS" install "riptides/$version" -k "$kver" "${dkms_tree[@]}" || die "DKMS could not install riptides.ko"
    changed=1
  fi
  module=1
elif [ -e "$headers/Makefile" ]; then
  say "kernel headers found but dkms is not installed (apt-get install dkms): using the userspace dataplane"
else
  say "no kernel headers for $kver (${headers#"$R"}): using the userspace dataplane"
fi
if [ -z "$dataplane" ]; then
  if [ $module -eq 1 ]; then dataplane=kernel; else dataplane=userspace; fi
fi
case "$dataplane" in kernel|userspace|auto|none) ;; *) die "--dataplane $dataplane: expected kernel, userspace, auto or none" ;; esac

# --- configuration -------------------------------------------------------------------------
old_token=""
if [ -z "$token" ] && [ -f "$env_file" ]; then
  old_token=$(sed -n 's/^RIPTIDES_JOIN_TOKEN=//p' "$env_file")
fi
put "$env_file" 0600 < <(
  echo "# Written by ops/install.sh; read by riptides-daemon.service."
  echo "RIPTIDES_DAEMON_ARGS=--controlplane $controlplane --controlplane-tunnel $tunnel --trust-domain $td --ca-pin $pin --dataplane $dataplane"
  echo "RIPTIDES_JOIN_TOKEN=${token:-$old_token}"
)
chmod 0755 "$etc_dir"

# --- services ------------------------------------------------------------------------------
if [ $live -eq 1 ]; then
  "$SYSTEMCTL" daemon-reload
  "$SYSTEMCTL" enable "${units[@]}"
  if [ $module -eq 1 ]; then "$SYSTEMCTL" start riptides-module.service; fi
  if [ $changed -eq 1 ]; then
    "$SYSTEMCTL" restart riptides-daemon.service
  else
    "$SYSTEMCTL" start riptides-daemon.service
  fi
  say "riptides-daemon $version installed ($dataplane dataplane), control plane $controlplane; status: systemctl status riptides-daemon"
else
  systemctl_offline enable "${units[@]}"
  say "riptides-daemon $version installed into $root ($dataplane dataplane); services enabled, not started (--root)"
fi
