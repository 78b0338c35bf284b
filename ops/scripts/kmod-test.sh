#!/usr/bin/env bash
# Kernel tier: builds riptides.ko against Debian kernel headers and runs the module's
# scenarios in a qemu microvm guest (TCG) for each kernel, from a busybox initramfs.
#
#   ops/scripts/kmod-test.sh                  # kernels 6.1 and 6.12 (Debian 12 archive)
#   RIPTIDES_KMOD_KERNELS=6.1 ops/scripts/kmod-test.sh
#
# Idempotent; downloads (Debian packages only, through apt) are cached under
# ${RIPTIDES_KMOD_CACHE:-/var/cache/riptides-kmod}. The kernel image package is extracted
# with dpkg -x and never installed into /boot. Needs root (apt, cache directory).
# Exits non-zero if anything cannot be built, the guest does not finish, or any scenario
# fails; never skips.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${RIPTIDES_KMOD_CACHE:-/var/cache/riptides-kmod}
KERNELS=${RIPTIDES_KMOD_KERNELS:-"6.1 6.12"}
# RIPTIDES_KMOD_E2E=0 leaves the daemon's end-to-end scenarios (e2e.sh) out of the guest.
E2E=${RIPTIDES_KMOD_E2E:-1}
BOOT_TIMEOUT=${RIPTIDES_KMOD_BOOT_TIMEOUT:-900}
# Under TCG on a loaded host the kernel cannot calibrate the TSC (microvm has no HPET/PM
# timer and PIT calibration fails), marks it unstable and stalls before init. Giving it a
# TSC frequency avoids the calibration; guest clock accuracy does not matter here.
GUEST_CLOCK="tsc_early_khz=2000000 tsc=reliable"

log() { echo "kmod-test: $*" >&2; }
die() { echo "kmod-test: FAIL: $*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO mkdir -p "$CACHE/debs" "$CACHE/kernels" "$CACHE/work"
[ -w "$CACHE" ] || die "cache directory $CACHE is not writable (run as root or set RIPTIDES_KMOD_CACHE)"

# One run at a time per cache (cargo test and a manual run may overlap).
exec 9>"$CACHE/lock"
flock 9

T0=$(date +%s)

# ------------------------------------------------------------------ host tools
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
}
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v gcc >/dev/null && command -v make >/dev/null || need+=(build-essential)
for p in bc flex bison libelf-dev dwarves cpio xz-utils zstd kmod iproute2 tcpdump nftables binutils; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null || die "apt-get install ${need[*]} failed"
fi
IP_BIN=$(command -v ip || true)
[ -n "$IP_BIN" ] || IP_BIN=/usr/sbin/ip
KMOD_BIN=$(command -v kmod || echo /usr/bin/kmod)
[ -x /bin/busybox ] || die "/bin/busybox missing after installing busybox-static"

# ------------------------------------------------------------------ kernels
# Newest Debian 12 flavour (amd64) of a kernel series: 6.1 -> 6.1.0-NN-amd64, 6.12 -> 6.12.N+deb12-amd64.
resolve_kver() {
  local re
  case "$1" in
    6.1) re='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
    6.12) re='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
    *) die "unknown kernel series $1 (known: 6.1 6.12)" ;;
  esac
  apt-cache search --names-only "$re" | awk '{print $1}' | sed 's/^linux-image-//' | sort -V | tail -1
}

fetch_deb() { # fetch_deb <package> -> path of the cached .deb
  local pkg=$1 f
  f=$(ls "$CACHE/debs/${pkg}"_*.deb 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$f" ]; then
    log "downloading $pkg"
    (cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>&1) \
      || { apt_update_once; (cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>&1); } \
      || die "apt-get download $pkg failed"
    f=$(ls "$CACHE/debs/${pkg}"_*.deb | sort -V | tail -1)
  fi
  echo "$f"
}

# Extracts image + headers + kbuild into $CACHE/kernels/<kver>/root and makes vmlinux.
prepare_kernel() {
  local kver=$1 kdir="$CACHE/kernels/$1" pkgs deb off magic tmp
  if [ ! -f "$kdir/.extracted" ]; then
    pkgs="linux-image-$kver linux-headers-$kver"
    pkgs="$pkgs $(apt-cache depends "linux-headers-$kver" | awk '/Depends: linux-(headers|kbuild)-/{print $2}' | sort -u | tr '\n' ' ')"
    rm -rf "$kdir" && mkdir -p "$kdir/root"
    for p in $pkgs; do
      deb=$(fetch_deb "$p")
      dpkg -x "$deb" "$kdir/root" || die "dpkg -x $deb failed"
    done
    # The flavour's Makefile includes the common tree by absolute path: point it at the
    # extracted copy.
    sed -i "s|/usr/src/linux-headers-|$kdir/root/usr/src/linux-headers-|g" \
      "$kdir/root/usr/src/linux-headers-$kver/Makefile"
    echo "$pkgs" > "$kdir/.extracted"
  fi
  [ -f "$kdir/root/usr/src/linux-headers-$kver/Makefile" ] || die "headers tree for $kver missing"
  if [ ! -f "$kdir/vmlinux" ]; then
    local bz="$kdir/root/boot/vmlinuz-$kver"
    [ -f "$bz" ] || die "$bz missing"
    tmp="$kdir/vmlinux.tmp"
    # microvm boots an uncompressed ELF vmlinux: cut the bzImage at the xz or zstd magic.
    for magic in xz zstd; do
      case $magic in
        xz) pat='\xfd\x37\x7a\x58\x5a\x00' ;;
        zstd) pat='\x28\xb5\x2f\xfd' ;;
      esac
      for off in $(LC_ALL=C grep -obUaP "$pat" "$bz" | cut -d: -f1); do
        # Both decompressors complain about the bytes after the stream; keep the output.
        tail -c +$((off + 1)) "$bz" | { $magic -dcq 2>/dev/null || true; } > "$tmp" || true
        if [ "$(head -c 4 "$tmp" | od -An -tx1 | tr -d ' ')" = "7f454c46" ]; then
          mv "$tmp" "$kdir/vmlinux"
          break 2
        fi
      done
    done
    rm -f "$tmp"
    [ -f "$kdir/vmlinux" ] || die "could not extract vmlinux from $bz"
  fi
}

build_module() { # build_module <kver> <workdir> ; warnings are errors
  local kver=$1 work=$2 hdr="$CACHE/kernels/$1/root/usr/src/linux-headers-$1" out
  rm -rf "$work/src" && mkdir -p "$work/src"
  cp -a "$REPO/kmod/module" "$REPO/kmod/include" "$work/src/"
  out="$work/build.log"
  if ! make -C "$hdr" M="$work/src/module" modules >"$out" 2>&1; then
    cat "$out" >&2
    die "module build against $kver failed"
  fi
  if grep -qi 'warning' "$out"; then
    cat "$out" >&2
    die "module build against $kver produced warnings"
  fi
  [ -f "$work/src/module/riptides.ko" ] || die "riptides.ko not produced for $kver"
}

copy_with_libs() { # copy_with_libs <rootfs> <binary> <dest path in rootfs>
  local root=$1 bin=$2 dest=$3 lib
  mkdir -p "$root/$(dirname "$dest")"
  cp -L "$bin" "$root/$dest"
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -f "$lib" ] || continue
    mkdir -p "$root/$(dirname "$lib")"
    cp -L "$lib" "$root/$lib"
  done
}

build_initramfs() { # build_initramfs <kver> <workdir>
  local kver=$1 work=$2 kroot="$CACHE/kernels/$1/root" r="$2/rootfs" a d
  rm -rf "$r" && mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib/riptides,proc,sys,dev,tmp,etc,var,run}
  ln -s /run "$r/var/run"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do
    case "$a" in
      busybox|modprobe|insmod|rmmod|lsmod|depmod|modinfo|ip) ;;
      *) ln -sf /bin/busybox "$r/bin/$a" ;;
    esac
  done
  # kmod (modprobe resolves aliases and compressed modules like the real system does).
  copy_with_libs "$r" "$KMOD_BIN" /usr/bin/kmod
  for a in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf /usr/bin/kmod "$r/sbin/$a"; done
  copy_with_libs "$r" "$IP_BIN" /usr/sbin/ip
  # Kernel modules: tls and every crypto module kTLS may request on demand.
  local mroot="$kroot/lib/modules/$kver"
  mkdir -p "$r/lib/modules/$kver/kernel"
  # (netfilter and sock_diag for the userspace node of the daemon's e2e.sh)
  for d in net/tls crypto arch/x86/crypto lib net/netfilter net/ipv4/netfilter \
           net/ipv6/netfilter; do
    if [ -d "$mroot/kernel/$d" ]; then
      mkdir -p "$r/lib/modules/$kver/kernel/$(dirname "$d")"
      cp -a "$mroot/kernel/$d" "$r/lib/modules/$kver/kernel/$(dirname "$d")/"
    fi
  done
  for f in net/ipv4/inet_diag net/ipv4/tcp_diag net/ipv6/netfilter net/core/sock_diag; do
    for m in "$mroot/kernel/$f".ko*; do
      [ -f "$m" ] || continue
      mkdir -p "$r/lib/modules/$kver/kernel/$(dirname "$f")"
      cp "$m" "$r/lib/modules/$kver/kernel/$(dirname "$f")/"
    done
  done
  # veth for the two-namespace scenarios.
  local veth
  veth=$(find "$mroot/kernel/drivers/net" -maxdepth 1 -name 'veth.ko*' | head -1)
  [ -n "$veth" ] || die "veth module not found in the $kver image"
  mkdir -p "$r/lib/modules/$kver/kernel/drivers/net"
  cp "$veth" "$r/lib/modules/$kver/kernel/drivers/net/"
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    [ -f "$mroot/$f" ] && cp "$mroot/$f" "$r/lib/modules/$kver/"
  done
  depmod -b "$r" "$kver" || die "depmod -b for $kver failed"
  [ -n "$(find "$r/lib/modules/$kver/kernel/net/tls" -name 'tls.ko*' 2>/dev/null)" ] || die "tls.ko not found in the $kver image"
  cp "$work/src/module/riptides.ko" "$r/lib/riptides/riptides.ko"
  cp "$work/nltest" "$r/bin/nltest"
  cp "$work/kttest" "$r/bin/kttest"
  # The daemon's end-to-end tier (owned by the daemon side), when it has been built.
  local b
  # Users: tcpdump drops privileges to "tcpdump" (mapped to root here: the capture file
  # lives in a root-owned directory); e2e.sh adds nobody itself.
  printf 'root:x:0:0:root:/root:/bin/sh\ntcpdump:x:0:0:tcpdump:/:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\ntcpdump:x:0:\n' > "$r/etc/group"
  if [ "$E2E" = 1 ] && [ -f "$REPO/kmod/tests/guest/e2e.sh" ]; then
    copy_with_libs "$r" "$(command -v tcpdump)" /usr/bin/tcpdump
    copy_with_libs "$r" "$(command -v nft)" /usr/sbin/nft
  fi
  for b in riptides-daemon riptides-controlplane riptides; do
    [ "$E2E" = 1 ] || continue
    if [ -x "$REPO/target/debug/$b" ]; then
      copy_with_libs "$r" "$REPO/target/debug/$b" "/usr/bin/$b"
      objcopy --strip-debug "$REPO/target/debug/$b" "$r/usr/bin/$b" || die "objcopy $b failed"
    fi
  done
  if [ "$E2E" = 1 ] && [ -f "$REPO/kmod/tests/guest/e2e.sh" ]; then
    cp "$REPO/kmod/tests/guest/e2e.sh" "$r/e2e.sh"
    chmod 755 "$r/e2e.sh"
  fi
  cp "$REPO/kmod/tests/guest/init.sh" "$r/init"
  chmod 755 "$r/init"
  (cd "$r" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"
}

# ------------------------------------------------------------------ run
overall=0
summary=()
for series in $KERNELS; do
  kver=$(resolve_kver "$series")
  if [ -z "$kver" ]; then
    apt_update_once
    kver=$(resolve_kver "$series")
  fi
  [ -n "$kver" ] || die "no Debian kernel package found for series $series"
  log "kernel $series -> $kver"
  prepare_kernel "$kver"
  work="$CACHE/work/$kver"
  mkdir -p "$work"
  build_module "$kver" "$work"
  log "$kver: riptides.ko built without warnings"
  gcc -static -O2 -Wall -Wextra -Werror -Wno-unused-parameter -I"$REPO/kmod/include/uapi" \
    -o "$work/nltest" "$REPO/kmod/tests/guest/nltest.c" || die "nltest build failed"
  gcc -static -O2 -Wall -Wextra -Werror -Wno-unused-parameter -pthread -I"$REPO/kmod/include/uapi" \
    -o "$work/kttest" "$REPO/kmod/tests/guest/kttest.c" || die "kttest build failed"
  build_initramfs "$kver" "$work"

  serial="$work/serial.log"
  b0=$(date +%s.%N)
  set +e
  timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg -machine microvm -cpu max -smp 1 -m 2G \
    -nographic -no-reboot -kernel "$CACHE/kernels/$kver/vmlinux" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet $GUEST_CLOCK" </dev/null >"$serial" 2>&1
  qrc=$?
  set -e
  b1=$(date +%s.%N)
  secs=$(echo "$b1 - $b0" | bc)
  tr -d '\r' < "$serial" > "$serial.txt"
  grep '^RIPTIDES-KMOD' "$serial.txt" | sed "s/^/[$kver] /" || true
  line=$(grep '^RIPTIDES-KMOD-SUMMARY' "$serial.txt" | tail -1 || true)
  if [ "$qrc" = 124 ]; then
    log "$kver: guest did not finish within ${BOOT_TIMEOUT}s; last serial lines:"
    tail -20 "$serial.txt" >&2
    overall=1; summary+=("$kver: TIMEOUT"); continue
  fi
  if [ -z "$line" ]; then
    log "$kver: guest finished without a summary (qemu exit $qrc); last serial lines:"
    tail -30 "$serial.txt" >&2
    overall=1; summary+=("$kver: NO SUMMARY"); continue
  fi
  passed=$(echo "$line" | awk '{print $2}')
  failed=$(echo "$line" | awk '{print $4}')
  log "$kver: ${line#RIPTIDES-KMOD-SUMMARY } (guest wall time ${secs}s)"
  if [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
    overall=1
  fi
  summary+=("$kver: $passed passed, $failed failed, ${secs}s")
done

log "total time $(( $(date +%s) - T0 ))s"
for s in "${summary[@]}"; do log "result $s"; done
# Repeated last, so that a truncated log still names what failed.
for series in $KERNELS; do
  kver=$(resolve_kver "$series")
  [ -n "$kver" ] && [ -f "$CACHE/work/$kver/serial.log.txt" ] || continue
  grep '^RIPTIDES-KMOD .* FAIL' "$CACHE/work/$kver/serial.log.txt" | sed "s/^/kmod-test: failed [$kver] /" >&2 || true
done
[ "$overall" = 0 ] || die "scenarios failed (serial logs under $CACHE/work/<kver>/serial.log.txt)"
log "all kernels passed"
