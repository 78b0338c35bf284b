#!/usr/bin/env bash
# Reproduces every benchmark figure and rewrites BENCHMARKS.md (needs root: namespaces).
#   ./ops/scripts/bench.sh           full mode (tens of minutes; run on a quiet machine)
#   ./ops/scripts/bench.sh --quick   seconds per figure (what CI runs through the tests)
# Each figure is printed with the baseline measured in the same run (direct TCP, stunnel4).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=()
[ "${1:-}" = "--quick" ] && mode=(--quick)
command -v stunnel4 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4; }
# --ha-propagation starts a three-member etcd cluster (Debian's etcd-server, as the tests).
command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }
cargo build --release --bins
out=$(mktemp -d)
./target/release/riptides-bench-dataplane "${mode[@]}" --out "$out/dataplane.md"
./target/release/riptides-bench-controlplane "${mode[@]}" --out "$out/controlplane.md"
# Policy propagation, one replica (redb) vs three replicas on etcd, in the same run (issue 10).
if [ "${mode[*]}" = "--quick" ]; then
  ha=(--sizes 100 --small-runs 1 --ha-applies 3)
else
  ha=(--sizes 500 --small-runs 3 --ha-applies 10)
fi
./target/release/riptides-bench-controlplane --ha-propagation "${ha[@]}" --out "$out/controlplane-ha.md"
{
  echo "# Benchmarks"
  echo
  echo "Reproduce: \`sudo ./ops/scripts/bench.sh${mode:+ ${mode[*]}}\` (this file is rewritten by it)."
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%Y-%m-%d)."
  echo "Load average at the end of the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes absolute numbers noisy; compare the ratios)."
  echo
  cat "$out/dataplane.md"
  echo
  cat "$out/controlplane.md"
  echo
  echo "## Policy propagation: one replica vs three replicas on etcd (issue 10)"
  echo
  echo "\`./target/release/riptides-bench-controlplane --ha-propagation ${ha[*]}\` (method:"
  echo "\`chaos-tests/bench/results/controlplane-ha.md\`; the goal is the same bound, within noise, with three replicas as with one)."
  echo
  cat "$out/controlplane-ha.md"
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
