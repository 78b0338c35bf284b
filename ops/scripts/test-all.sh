#!/usr/bin/env bash
# Runs every test of the workspace. Installs what a fresh Debian 12 machine lacks first:
# Debian packages the tests use as real peers (kubectl, openssl, nftables, iproute2) and
# cargo-nextest if it is missing. Nothing is downloaded outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_pkgs=()
command -v kubectl >/dev/null || need_pkgs+=(kubernetes-client)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v stunnel4 >/dev/null || need_pkgs+=(stunnel4)
command -v ss >/dev/null || need_pkgs+=(iproute2)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v npm >/dev/null || need_pkgs+=(nodejs npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Namespace tests must run (as root), never skip.
export RIPTIDES_NETNS_REQUIRED=1

# A whole-workspace run gains nothing from incremental state but pays for it in disk (it
# doubled target/ here, to ~30 GB): CI's disk is shared and has run out mid-build. Override by
# setting CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | sed 's/^/disk: /'

# The end-to-end tests start the real binaries of every package.
cargo build --workspace --bins

# The web UI's dependencies (npm lockfile), type check and build: cp/tests/graphql_browser.rs
# drives it in headless Chromium.
(cd frontend && npm ci --no-audit --no-fund && npm run check && npm run build)

# Unit, integration and multi-process tests (doctests run separately: nextest skips them).
cargo nextest run --workspace --no-fail-fast "$@"
cargo test --workspace --doc

# The web UI's browser test against the real controlplane and frontend binaries built above.
(cd frontend && npm run test:browser)
