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
check params "defaults and counters under $P" sh -c "test \"\$(cat $P/default_handshake_timeout_ms)\" = 10000 && test \"\$(cat $P/default_fail_mode)\" = 0 && for c in config_updates bundle_loads policy_loads cmds_rejected bundle_certs bundle_bytes policy_entries connections; do test \"\$(cat $P/\$c)\" = 0 || exit 1; done"
check params-readonly "counters refuse writes" sh -c "! (echo 5 > $P/config_updates) 2>/dev/null"
check proc-connections "/proc/riptides/connections is an empty JSON array" sh -c "test \"\$(cat /proc/riptides/connections)\" = '[]'"
check proc-stats "/proc/riptides/stats is a JSON object" sh -c "cat /proc/riptides/stats | grep -q '^{\"trust_domain\":\"\",.*\"connections\":0}\$'"

/bin/nltest all 2>&1 | tee -a "$LOG"

check params-after "counters reflect the netlink state" sh -c "test \"\$(cat $P/config_updates)\" = 1 && test \"\$(cat $P/bundle_certs)\" = 3 && test \"\$(cat $P/policy_entries)\" = 3"
check proc-stats-after "/proc/riptides/stats after the scenarios" sh -c "grep -q '\"trust_domain\":\"example.org\",\"daemon_id\":\"node-1\"' /proc/riptides/stats"
check rmmod "rmmod riptides removes the family, /proc and /sys entries" sh -c "rmmod riptides && ! test -e /sys/module/riptides && ! test -e /proc/riptides"
check insmod-bad-param "insmod refuses an out-of-range parameter" sh -c "! insmod $KO default_handshake_timeout_ms=5 && ! test -e /sys/module/riptides"
check reinsmod "second insmod with parameters" sh -c "insmod $KO default_handshake_timeout_ms=2500 default_fail_mode=1 && test \"\$(cat $P/default_handshake_timeout_ms)\" = 2500 && test \"\$(cat $P/default_fail_mode)\" = 1"
check reinsmod-proc "/proc/riptides/stats after reload shows the new defaults" sh -c "grep -q '\"fail_mode\":\"open\",\"handshake_timeout_ms\":2500' /proc/riptides/stats"
/bin/nltest fresh 2>&1 | tee -a "$LOG"
check rmmod-again "second rmmod" sh -c "rmmod riptides && ! test -e /sys/module/riptides"
check tls-still-loaded "tls stays usable after riptides is gone" test -d /sys/module/tls
dmesg > /tmp/dmesg.txt 2>/dev/null
if grep -q 'BUG:\|Oops\|WARNING: \|Call Trace' /tmp/dmesg.txt; then
  res FAIL kernel-log-clean "$(grep -m3 'BUG:\|Oops\|WARNING: \|Call Trace' /tmp/dmesg.txt | tr '\n' ' ')"
else
  res PASS kernel-log-clean "no BUG/Oops/WARNING in dmesg"
fi

pass=$(grep -c '^RIPTIDES-KMOD .* PASS' "$LOG")
fail=$(grep -c '^RIPTIDES-KMOD .* FAIL' "$LOG")
echo "RIPTIDES-KMOD-SUMMARY $pass passed, $fail failed"
sync
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
