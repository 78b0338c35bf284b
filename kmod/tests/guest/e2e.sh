#!/bin/sh
# needs: riptides-controlplane riptides-daemon riptides (with their shared libraries, on PATH)
# needs: ip (iproute2, netns support) tcpdump (+libpcap) nft (+libnftables and its libraries)
# needs: kernel modules: drivers/net/veth.ko, net/netfilter/ net/ipv4/netfilter/ net/ipv6/netfilter/
#        (nf_tables, nft_redir, nft_chain_nat, nf_nat, nf_conntrack, nft_socket... for the userspace node),
#        net/ipv4/inet_diag.ko net/ipv4/tcp_diag.ko (optional: sock_diag for the userspace node)
# needs: riptides.ko loaded and tls modprobe-able (init.sh does both before calling this script)
#
# End-to-end scenarios of the kernel path in the qemu guest (busybox sh), run by init.sh after
# the module scenarios. Prints one line per scenario:
#   RIPTIDES-KMOD e2e-<scenario> PASS|FAIL <details>
# and "E2E-LOG ..." lines with log tails when something fails.
#
# Topology: the root namespace runs the control plane and routes between three namespaces,
# each linked to it by a veth pair (10.0.N.2 inside, 10.0.N.1 in the root namespace):
#   a (10.0.1.2): riptides-daemon --dataplane kernel, the client workload (busybox nc, "frontend")
#   b (10.0.2.2): riptides-daemon --dataplane kernel, the server workload (busybox nc -l, "orders")
#   c (10.0.3.2): riptides-daemon --dataplane userspace (nftables), interop in both directions
# The workloads are unmodified plaintext programs; everything they send crosses the link as
# TLS records (checked with tcpdump on the root side of b's link).

export PATH=${E2E_PATH:+$E2E_PATH:}/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/bin
TD=example.com
# For a dry run outside the guest (e.g. `unshare -n sh e2e.sh` on a host without the module):
# E2E_PREFIX names the namespaces apart, E2E_DATAPLANE replaces `kernel` for nodes a and b.
P=${E2E_PREFIX:-}
# iproute2's ip (netns support) by path: busybox sh may prefer its own `ip` applet.
IP=/usr/sbin/ip
[ -x "$IP" ] || IP=/sbin/ip
[ -x "$IP" ] || IP=/bin/ip
DP=${E2E_DATAPLANE:-kernel}
W=/tmp/e2e
rm -rf "$W"; mkdir -p "$W"
LOG=${LOG:-/tmp/results}
# A write to the FIFO of a client that already exited must fail, not kill the script.
trap '' PIPE

res() { # res <PASS|FAIL> <scenario> <details...>
  st=$1; sc=$2; shift 2
  echo "RIPTIDES-KMOD e2e-$sc $st $*" | tee -a "$LOG"
}
logtail() { # logtail <file> [lines]
  [ -f "$1" ] && tail -n "${2:-25}" "$1" | sed "s|^|E2E-LOG $(basename "$1"): |"
}
wait_for() { # wait_for <seconds> <command...>: polls every 0.5 s
  t=$(( $1 * 2 )); shift
  while [ "$t" -gt 0 ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5; t=$((t - 1))
  done
  return 1
}
nsx() { ns=$1; shift; "$IP" netns exec "$P$ns" "$@"; }
listening() { "$IP" netns exec "$P$1" netstat -ltn 2>/dev/null | grep -q ":$2 "; }
# transfer <tag> <server ns> <port> <client ns> <dst> [client command prefix...]: busybox nc on
# both ends, each sending "<S|C>-<tag>" and keeping its stdin open a while (busybox nc stops at
# stdin EOF). Returns 0 when both sides received the other's line.
transfer() {
  tag=$1; sns=$2; port=$3; cns=$4; dst=$5; shift 5
  ( (echo "S-$tag"; sleep 25) | "$IP" netns exec "$P$sns" timeout 40 nc -l -p "$port" > "$W/$tag.srv" 2>&1 ) &
  wait_for 10 listening "$sns" "$port"
  ( (echo "C-$tag"; sleep 20) | "$IP" netns exec "$P$cns" timeout 40 "$@" nc "$dst" "$port" > "$W/$tag.cli" 2>&1 ) &
  wait_for 45 sh -c "grep -q C-$tag $W/$tag.srv && grep -q S-$tag $W/$tag.cli"
}
admin() { nsx "$1" wget -qO- "http://127.0.0.1:15000$2" 2>/dev/null; }

# ------------------------------------------------------------------ prerequisites
missing=""
for b in riptides-controlplane riptides-daemon riptides "$IP"; do
  command -v "$b" >/dev/null 2>&1 || missing="$missing $b"
done
if [ -n "$missing" ]; then
  res FAIL setup "prerequisites missing in the initramfs:$missing"
  exit 0
fi
test -d /sys/module/riptides || insmod /lib/riptides/riptides.ko 2>/dev/null
modprobe tls 2>/dev/null
modprobe veth 2>/dev/null
mkdir -p /run/netns /var/run

# ------------------------------------------------------------------ topology
topo_ok=1
echo 1 > /proc/sys/net/ipv4/ip_forward
"$IP" link set lo up
for n in 1 2 3; do
  ns=$(echo x a b c | cut -d' ' -f$((n + 1)))
  "$IP" netns add "$P$ns" || topo_ok=0
  "$IP" link add "v$ns" type veth peer name eth0 netns "$P$ns" || topo_ok=0
  "$IP" addr add "10.0.$n.1/24" dev "v$ns" && "$IP" link set "v$ns" up || topo_ok=0
  "$IP" -n "$P$ns" link set lo up || topo_ok=0
  "$IP" -n "$P$ns" addr add "10.0.$n.2/24" dev eth0 && "$IP" -n "$P$ns" link set eth0 up || topo_ok=0
  "$IP" -n "$P$ns" route add default via "10.0.$n.1" || topo_ok=0
done
if [ "$topo_ok" = 1 ] && wait_for 15 nsx a ping -c1 -W1 10.0.2.2; then
  res PASS topology "namespaces a, b, c routed through the root namespace"
else
  res FAIL topology "could not build the namespaces/veth links (veth module? iproute2 ip netns?)"
  exit 0
fi
A=10.0.1.2; B=10.0.2.2; C=10.0.3.2

# ------------------------------------------------------------------ control plane
CP=$W/cp
riptides-controlplane --data-dir "$CP" --trust-domain $TD --api-addr 0.0.0.0:8443 --quic-addr 0.0.0.0:9443 \
  --tunnel-addr 0.0.0.0:8001 --health-addr 0.0.0.0:8080 --advertise-url https://127.0.0.1:8443 \
  > "$W/cp.log" 2>&1 &
CP_PID=$!
pin=""
if wait_for 120 grep -q 'pin sha256:' "$W/cp.log"; then
  pin=$(tr ' ' '\n' < "$W/cp.log" | grep -m1 '^sha256:')
fi
ctl() { riptides --kubeconfig "$CP/admin.kubeconfig" "$@"; }
if [ -n "$pin" ] && wait_for 30 test -f "$CP/admin.kubeconfig"; then
  res PASS controlplane "control plane up (embedded store), CA pin $pin"
else
  res FAIL controlplane "the control plane did not start"; logtail "$W/cp.log"; exit 0
fi

cat > "$W/policy.yaml" <<EOF
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  labels:
    tier: backend
  addresses:
    - address: $B
      port: 8000
    - address: $B
      port: 8001
    - address: $B
      port: 8002
---
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata:
  name: ledger
spec:
  labels:
    tier: backend
  addresses:
    - address: $C
      port: 9000
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: orders
spec:
  workloadID: orders-service
  scope:
    daemon:
      id: node-b
  selectors:
    - process:name: nc
  ingress:
    - port: 8000
      allowedSPIFFEIDs:
        - "spiffe://$TD/frontend"
        - "spiffe://$TD/legacy-client"
    - port: 8001
      allowedSPIFFEIDs:
        - "spiffe://$TD/frontend"
        - "spiffe://$TD/legacy-client"
    - port: 8002
      allowedSPIFFEIDs:
        - "spiffe://$TD/frontend"
        - "spiffe://$TD/legacy-client"
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: frontend
spec:
  workloadID: frontend
  scope:
    daemon:
      id: node-a
  selectors:
    - process:name: nc
  egress:
    - selectors:
        - tier: backend
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - "spiffe://$TD/orders-service"
        - "spiffe://$TD/legacy-client"
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: intruder
spec:
  workloadID: intruder
  scope:
    daemon:
      id: node-a
  selectors:
    - process:name: nc
      process:uid: "65534"
  egress:
    - selectors:
        - tier: backend
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - "spiffe://$TD/orders-service"
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: legacy-client
spec:
  workloadID: legacy-client
  scope:
    daemon:
      id: node-c
  selectors:
    - process:name: nc
  egress:
    - selectors:
        - tier: backend
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - "spiffe://$TD/orders-service"
  ingress:
    - port: 9000
      allowedSPIFFEIDs:
        - "spiffe://$TD/frontend"
EOF
if ctl ctl apply -f - < "$W/policy.yaml" > "$W/apply.log" 2>&1; then
  res PASS policy "policy applied with riptides ctl apply"
else
  res FAIL policy "riptides ctl apply failed: $(head -c 300 "$W/apply.log" | tr '\n' ' ')"; exit 0
fi

# ------------------------------------------------------------------ daemons
start_daemon() { # start_daemon <ns> <node-id> <dataplane> <cp address>
  ns=$1; id=$2; dp=$3; cpa=$4
  tok=$(ctl token create --ttl 10m --daemon-id "$id" 2>>"$W/token.log")
  RUST_LOG=info,riptides_node::kernel=debug NO_COLOR=1 "$IP" netns exec "$P$ns" riptides-daemon \
    --controlplane "$cpa:9443" --controlplane-tunnel "$cpa:8001" --trust-domain $TD --ca-pin "$pin" \
    --join-token "$tok" --data-dir "$W/$ns-data" --admin-addr 127.0.0.1:15000 --dataplane "$dp" \
    >> "$W/daemon-$ns.log" 2>&1 &
  eval "DAEMON_$ns=\$!"
}
daemon_ready() { # daemon_ready <ns> <dataplane> <spiffe path>
  admin "$1" /readyz | grep -q "dataplane: $2" && admin "$1" /config_dump | grep -q "spiffe://$TD/$3"
}
start_daemon a node-a $DP 10.0.1.1
start_daemon b node-b $DP 10.0.2.1
for x in "a frontend" "b orders-service"; do
  set -- $x
  if wait_for 240 daemon_ready "$1" $DP "$2"; then
    res PASS "daemon-$1" "node-$1 ready on the kernel dataplane with the SVID of $2 (/readyz says dataplane: kernel)"
  else
    res FAIL "daemon-$1" "node-$1 not ready: $(admin "$1" /readyz | tr '\n' ' ')"; logtail "$W/daemon-$1.log" 40
  fi
done
if grep -q 'kernel: registered as the handshake agent' "$W/daemon-a.log" && grep -q 'interception table loaded' "$W/daemon-a.log"; then
  res PASS daemon-registered "node-a registered with riptides.ko and loaded its interception table"
else
  res FAIL daemon-registered "no registration/table load in node-a's log"; logtail "$W/daemon-a.log"
fi

# ------------------------------------------------------------------ plaintext client/server through kernel mTLS
CAPTURE=0
if command -v tcpdump >/dev/null 2>&1; then
  tcpdump -i vb -s 0 -U -w "$W/link.pcap" "tcp port 8000" > "$W/tcpdump.log" 2>&1 &
  TCPDUMP=$!
  CAPTURE=1
  sleep 2
fi
if transfer PLAINTEXT-MARKER-1 b 8000 a $B; then
  res PASS plaintext-through-ktls "busybox nc a -> b: both directions delivered"
else
  res FAIL plaintext-through-ktls "b got [$(head -c 80 "$W/PLAINTEXT-MARKER-1.srv")], a got [$(head -c 80 "$W/PLAINTEXT-MARKER-1.cli")]"
  logtail "$W/daemon-a.log"; logtail "$W/daemon-b.log"
fi
if admin a /connections | grep -q 'orders-service' && admin a /connections | grep -q 'kTLS'; then
  res PASS connection-table "node-a's /connections shows the kTLS connection with peer orders-service"
elif grep -q 'mTLS established, kTLS installed' "$W/daemon-a.log"; then
  res PASS connection-table "node-a logged the kTLS connection (row already closed)"
else
  res FAIL connection-table "no kTLS connection recorded by node-a: $(admin a /connections | head -c 200)"
fi
if [ "$CAPTURE" = 1 ]; then
  sleep 1; kill "$TCPDUMP" 2>/dev/null; wait "$TCPDUMP" 2>/dev/null
  hexcap=$(od -An -tx1 -v "$W/link.pcap" | tr -d ' \n')
  if grep -q PLAINTEXT-MARKER "$W/link.pcap"; then
    res FAIL link-is-tls "a plaintext marker crossed the link"
  elif echo "$hexcap" | grep -q '1703030'; then
    res PASS link-is-tls "tcpdump on b's link: TLS application_data records (17 03 03), no plaintext marker"
  else
    res FAIL link-is-tls "no TLS record seen on the link ($(wc -c < "$W/link.pcap") bytes captured)"; logtail "$W/tcpdump.log"
  fi
else
  res FAIL link-is-tls "tcpdump is not in the initramfs: cannot check the bytes on the link"
fi

# ------------------------------------------------------------------ an unlisted identity is refused
# The intruder: the same nc, run as uid 65534 (busybox has no setpriv --reuid: su).
grep -q '^nobody:' /etc/passwd 2>/dev/null || echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd
printf '#!/bin/sh\nexec su -s /bin/sh nobody -c "exec $*"\n' > "$W/as-nobody"
chmod 755 "$W/as-nobody"
transfer INTRUDER-MARKER b 8001 a $B "$W/as-nobody"
if grep -q C-INTRUDER "$W/INTRUDER-MARKER.srv" || grep -q S-INTRUDER "$W/INTRUDER-MARKER.cli"; then
  res FAIL unlisted-identity "bytes crossed for spiffe://$TD/intruder"
elif grep -q 'intruder' "$W/daemon-a.log" "$W/daemon-b.log"; then
  res PASS unlisted-identity "spiffe://$TD/intruder (nc as uid 65534) refused in the handshake, nothing delivered either way"
else
  res FAIL unlisted-identity "no bytes crossed, but neither daemon handled the intruder"; logtail "$W/daemon-a.log"
fi

# ------------------------------------------------------------------ killing the daemons keeps established kTLS connections
mkfifo "$W/feed"
(sleep 200 | nsx b timeout 200 nc -l -p 8002 > "$W/b-long" 2>&1) &
wait_for 10 listening b 8002
(nsx a timeout 200 nc $B 8002 < "$W/feed" > "$W/a-long" 2>&1) &
exec 3>"$W/feed"
echo "LINE-BEFORE-KILL" >&3
if wait_for 20 grep -q LINE-BEFORE-KILL "$W/b-long"; then
  eval "kill -9 \$DAEMON_a \$DAEMON_b"
  sleep 2
  echo "LINE-AFTER-KILL" >&3
  if wait_for 20 grep -q LINE-AFTER-KILL "$W/b-long"; then
    res PASS daemon-kill "both daemons killed (-9); the established kTLS connection still carries data"
  else
    res FAIL daemon-kill "no data after the daemons were killed"
  fi
  # Unloading the module with the connection live: the kTLS socket no longer points at it.
  if rmmod riptides 2>"$W/rmmod.err"; then
    echo "LINE-AFTER-RMMOD" >&3
    if wait_for 20 grep -q LINE-AFTER-RMMOD "$W/b-long"; then
      res PASS rmmod-live "rmmod riptides with a live kTLS connection; it still carries data"
    else
      res FAIL rmmod-live "no data after rmmod"
    fi
    insmod /lib/riptides/riptides.ko 2>/dev/null
  else
    res FAIL rmmod-live "rmmod refused: $(cat "$W/rmmod.err")"
  fi
else
  res FAIL daemon-kill "the long-lived connection did not carry its first line"; logtail "$W/a-long"; logtail "$W/daemon-a.log"
fi
exec 3>&-

# ------------------------------------------------------------------ kernel path <-> userspace path
# Restart the kernel daemons (same data dirs: identity kept, no new token needed).
for ns in a b; do
  RUST_LOG=info NO_COLOR=1 "$IP" netns exec "$P$ns" riptides-daemon --controlplane "10.0.$([ $ns = a ] && echo 1 || echo 2).1:9443" \
    --trust-domain $TD --data-dir "$W/$ns-data" --admin-addr 127.0.0.1:15000 --dataplane $DP \
    >> "$W/daemon-$ns.log" 2>&1 &
  eval "DAEMON_$ns=\$!"
done
if ! command -v nft >/dev/null 2>&1 || ! modprobe nf_tables 2>/dev/null; then
  res FAIL interop "nft or the nf_tables modules are not in the initramfs: the userspace node cannot run here"
else
  start_daemon c node-c userspace 10.0.3.1
  ok=1
  wait_for 240 daemon_ready c userspace legacy-client || ok=0
  wait_for 120 daemon_ready a $DP frontend || ok=0
  wait_for 120 daemon_ready b $DP orders-service || ok=0
  if [ "$ok" = 0 ]; then
    res FAIL interop "daemons not ready: c=[$(admin c /readyz | tr '\n' ' ')] a=[$(admin a /readyz | tr '\n' ' ')]"
    logtail "$W/daemon-c.log"
  else
    # userspace client (c) -> kernel server (b)
    if transfer INTEROP-U2K b 8000 c $B; then
      res PASS interop-userspace-to-kernel "node-c (userspace) -> node-b (kernel): mTLS, both directions delivered"
    else
      res FAIL interop-userspace-to-kernel "b got [$(head -c 60 "$W/INTEROP-U2K.srv")], c got [$(head -c 60 "$W/INTEROP-U2K.cli")]"
      logtail "$W/daemon-c.log"; logtail "$W/daemon-b.log"
    fi
    # kernel client (a) -> userspace server (c)
    if transfer INTEROP-K2U c 9000 a $C; then
      res PASS interop-kernel-to-userspace "node-a (kernel) -> node-c (userspace): mTLS, both directions delivered"
    else
      res FAIL interop-kernel-to-userspace "c got [$(head -c 60 "$W/INTEROP-K2U.srv")], a got [$(head -c 60 "$W/INTEROP-K2U.cli")]"
      logtail "$W/daemon-a.log"; logtail "$W/daemon-c.log"
    fi
  fi
fi

# ------------------------------------------------------------------ cleanup
for p in $DAEMON_a $DAEMON_b $DAEMON_c $CP_PID; do kill "$p" 2>/dev/null; done
sleep 1
for ns in a b c; do "$IP" netns del "$P$ns" 2>/dev/null; done
exit 0
