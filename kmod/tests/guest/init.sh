#!/bin/sh
# /init of the riptides.ko qemu test guest (busybox). Runs the scenarios, prints
#   RIPTIDES-KMOD <scenario> PASS|FAIL <details>
# lines and a final "RIPTIDES-KMOD-SUMMARY <N> passed, <N> failed" line, then powers off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
echo /sbin/modprobe > /proc/sys/kernel/modprobe
echo 4 > /proc/sys/kernel/printk

LOG=/tmp/results
: > "$LOG"
res() { # res <PASS|FAIL> <scenario> <details...>
  st=$1; sc=$2; shift 2
  echo "RIPTIDES-KMOD $sc $st $*" | tee -a "$LOG"
}
check() { # check <scenario> <details> <command...>
  sc=$1; det=$2; shift 2
  if "$@" >/tmp/check.out 2>&1; then res PASS "$sc" "$det"; else res FAIL "$sc" "$det: $(head -c 300 /tmp/check.out | tr '\n' ' ')"; fi
}

echo "RIPTIDES-KMOD-BOOT kernel $(uname -r)"
KO=/lib/riptides/riptides.ko
P=/sys/module/riptides/parameters

check insmod "insmod riptides.ko" sh -c "insmod $KO && test -d /sys/module/riptides"
check tls-modprobe "modprobe tls (kTLS module with its dependencies)" sh -c "modprobe tls && test -d /sys/module/tls"
check crypto-gcm-alias "modprobe crypto-gcm (the alias kTLS requests) resolves" modprobe crypto-gcm
check params "defaults and counters under $P" sh -c "test \"\$(cat $P/default_handshake_timeout_ms)\" = 10000 && test \"\$(cat $P/default_fail_mode)\" = 0 && test \"\$(cat $P/max_pending)\" = 4096 && for c in config_updates bundle_loads policy_loads cmds_rejected bundle_certs bundle_bytes policy_entries connections handshakes_requested handshakes_ok handshakes_failed handshakes_timed_out conns_no_daemon conns_passthrough conns_over_limit live_objects; do test \"\$(cat $P/\$c)\" = 0 || exit 1; done"
check params-readonly "counters refuse writes" sh -c "! (echo 5 > $P/config_updates) 2>/dev/null"
check proc-connections "/proc/riptides/connections is an empty JSON array" sh -c "test \"\$(cat /proc/riptides/connections)\" = '[]'"
check proc-stats "/proc/riptides/stats is a JSON object" sh -c "cat /proc/riptides/stats | grep -q '^{\"trust_domain\":\"\",.*\"connections\":0}\$'"

/bin/nltest all 2>&1 | tee -a "$LOG"

check params-after "counters reflect the netlink state" sh -c "test \"\$(cat $P/config_updates)\" = 1 && test \"\$(cat $P/bundle_certs)\" = 3 && test \"\$(cat $P/policy_entries)\" = 3"
check proc-stats-after "/proc/riptides/stats after the scenarios" sh -c "grep -q '\"trust_domain\":\"example.org\",\"daemon_id\":\"node-1\"' /proc/riptides/stats"
# ---- interception between two network namespaces (kttest.c) ----
# busybox sh runs its own (netns-less) ip applet for a bare "ip": use iproute2 by path.
IP=/usr/sbin/ip
netns_setup() {
  modprobe veth || return 1
  $IP netns add A && $IP netns add B || return 1
  $IP link add va type veth peer name vb || return 1
  $IP link set va netns A && $IP link set vb netns B || return 1
  $IP -n A addr add 10.99.0.1/24 dev va && $IP -n B addr add 10.99.0.2/24 dev vb || return 1
  $IP -n A addr add fd99::1/64 dev va nodad && $IP -n B addr add fd99::2/64 dev vb nodad || return 1
  for n in A B; do $IP -n $n link set lo up || return 1; done
  $IP -n A link set va up && $IP -n B link set vb up || return 1
  $IP netns exec A ping -c 1 -W 5 10.99.0.2 >/dev/null && $IP netns exec A ping -c 1 -W 5 fd99::2 >/dev/null
}
check netns-setup "namespaces A and B joined by a veth pair (10.99.0.0/24, fd99::/64)" netns_setup
/bin/kttest all 2>/tmp/kttest.err | tee -a "$LOG"
/bin/kttest rmmod $KO 2>>/tmp/kttest.err | tee -a "$LOG"
if grep -q '^RIPTIDES-KMOD .* FAIL' "$LOG"; then
  echo "---- kttest stderr"; grep -v '^agent .*: request' /tmp/kttest.err | tail -150
  echo "---- processes holding sockets"
  for p in /proc/[0-9]*; do
    n=$(ls -l $p/fd 2>/dev/null | grep -c socket)
    [ "$n" -gt 0 ] && echo "$p $(tr '\0' ' ' < $p/cmdline) sockets=$n"
  done
fi
check params-after-reload "counters start again from zero after the reload" sh -c "test \"\$(cat $P/handshakes_requested)\" = 0 && test \"\$(cat $P/live_objects)\" = 0"

check rmmod "rmmod riptides removes the family, /proc and /sys entries" sh -c "rmmod riptides && ! test -e /sys/module/riptides && ! test -e /proc/riptides"
check insmod-bad-param "insmod refuses an out-of-range parameter" sh -c "! insmod $KO default_handshake_timeout_ms=5 && ! test -e /sys/module/riptides"
check reinsmod "second insmod with parameters" sh -c "insmod $KO default_handshake_timeout_ms=2500 default_fail_mode=1 && test \"\$(cat $P/default_handshake_timeout_ms)\" = 2500 && test \"\$(cat $P/default_fail_mode)\" = 1"
check reinsmod-proc "/proc/riptides/stats after reload shows the new defaults" sh -c "grep -q '\"fail_mode\":\"open\",\"handshake_timeout_ms\":2500' /proc/riptides/stats"
/bin/nltest fresh 2>&1 | tee -a "$LOG"
check rmmod-again "second rmmod" sh -c "rmmod riptides && ! test -e /sys/module/riptides"
check tls-still-loaded "tls stays usable after riptides is gone" test -d /sys/module/tls

# ---- the daemon's end-to-end scenarios (kmod/tests/guest/e2e.sh, when present) ----
# They start with riptides.ko freshly loaded, tls loaded, and no test namespace left.
if [ -x /e2e.sh ]; then
  $IP netns del A 2>/dev/null; $IP netns del B 2>/dev/null
  check e2e-insmod "insmod riptides.ko for e2e.sh" insmod $KO
  # e2e.sh appends its own RIPTIDES-KMOD lines to $LOG.
  LOG="$LOG" /e2e.sh 2>&1
fi

dmesg > /tmp/dmesg.txt 2>/dev/null
PAT='BUG:\|Oops\|WARNING: \|Call Trace\|KASAN\|kmemleak\|refcount_t:\|general protection\|list_add corruption\|list_del corruption\|unreferenced object'
if grep -q "$PAT" /tmp/dmesg.txt; then
  res FAIL kernel-log-clean "$(grep -m5 "$PAT" /tmp/dmesg.txt | tr '\n' ' ')"
  grep -B5 -A30 -m1 "$PAT" /tmp/dmesg.txt
else
  res PASS kernel-log-clean "no BUG/Oops/WARNING/KASAN/kmemleak/refcount report in dmesg"
fi

pass=$(grep -c '^RIPTIDES-KMOD .* PASS' "$LOG")
fail=$(grep -c '^RIPTIDES-KMOD .* FAIL' "$LOG")
echo "RIPTIDES-KMOD-SUMMARY $pass passed, $fail failed"
sync
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
