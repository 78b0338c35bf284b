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
cargo build --release --bins
out=$(mktemp -d)
./target/release/riptides-bench-dataplane "${mode[@]}" --out "$out/dataplane.md"
./target/release/riptides-bench-controlplane "${mode[@]}" --out "$out/controlplane.md"
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
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
