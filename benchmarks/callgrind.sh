#!/bin/sh
# Instruction counts under valgrind's callgrind, repeatable across runs and
# machines' load (this machine has no hardware performance counters):
#   - one canary step     (scale_bench --only canary: 6 steps per canary)
#   - one rolling instance-step (scale_bench --only rolling: 4 per replacement)
#   - one blue-green probe      (scale_bench --only blue_green: 1 per probe)
# Each figure is the difference between two sizes divided by the difference in
# steps, so start-up and one-off costs cancel out. Then (not with --smoke) the
# compiler's instructions for compile_bench's Asio-only and umbrella TUs.
#
# Usage: benchmarks/callgrind.sh [--smoke] [path/to/scale_bench]
set -eu

smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
bench="${1:-build/release/benchmarks/scale_bench}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (cmake/install-deps.sh installs it)"; exit 1; }
[ -x "$bench" ] || { echo "callgrind.sh: $bench is not built"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# measure <scenario> <size>: sets $ir (instructions of one run) and $steps (its instance-steps)
measure() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" --only "$1" --size "$2" --runs 1 >"$tmp/out" 2>"$tmp/err"
  ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err" | tail -1)
  steps=$(awk -F'|' '{gsub(/ /, "", $7); print $7}' "$tmp/out" | tail -1)
}

# row <scenario> <small> <large> <unit>
row() {
  measure "$1" "$2"; a=$ir; sa=$steps
  measure "$1" "$3"; b=$ir; sb=$steps
  echo "| $1 | $2 -> $3 $4 | $sa -> $sb | $a | $b | $(( (b - a) / (sb - sa) )) |"
}

if [ "$smoke" = 1 ]; then
  c1=5; c2=10; r1=20; r2=40; g1=1; g2=2
else
  c1=100; c2=200; r1=1000; r2=2000; g1=5; g2=10
fi
echo "Instructions per step under callgrind ($(valgrind --version), $bench)"
echo "| scenario | sizes | instance-steps | instructions (small) | instructions (large) | instructions per step |"
echo "|---|---|---|---|---|---|"
row canary "$c1" "$c2" canaries
row rolling "$r1" "$r2" instances
row blue_green "$g1" "$g2" "switches of 100"
echo "(canary: per plan step or promotion; rolling: per created/ready/retiring/retired transition; blue_green: per probe)"

# The compiler's own instructions for the Asio-only TU and the umbrella TU
# (compile_bench's first two rows): CPU seconds of a 2-second compile move by
# +-15% on this VM, these do not. Skipped with --smoke (about 80 s per TU).
if [ "$smoke" -eq 0 ]; then
  cxx="${CXX:-g++}"
  include="$(cd "$(dirname "$0")/../include" && pwd)"
  cc1plus=$("$cxx" -print-prog-name=cc1plus)
  # compile_ir <source>: sets $ir (cc1plus instructions for the preprocessed TU)
  compile_ir() {
    printf '%s\nint main() {}\n' "$1" >"$tmp/tu.cpp"
    "$cxx" -std=c++20 -O0 -DBOOST_PROCESS_USE_STD_FS=1 -DBOOST_ASIO_NO_DEPRECATED -I"$include" -E "$tmp/tu.cpp" -o "$tmp/tu.ii"
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$cc1plus" -quiet -std=c++20 -O0 -fpreprocessed "$tmp/tu.ii" \
      -o /dev/null 2>"$tmp/err"
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err" | tail -1)
  }
  echo
  echo "Compiler instructions under callgrind ($("$cxx" --version | head -1), -O0 -std=c++20, cc1plus on the preprocessed TU)"
  echo "| TU | instructions | ratio to <boost/asio.hpp> |"
  echo "|---|---|---|"
  compile_ir '#include <boost/asio.hpp>'; base=$ir
  echo "| <boost/asio.hpp> only | $base | 1.00x |"
  compile_ir '#include <rollout/rollout.hpp>'
  echo "| <rollout/rollout.hpp> (umbrella) | $ir | $(awk -v a="$ir" -v b="$base" 'BEGIN { printf "%.2fx", a / b }') |"
  echo "Target: the umbrella TU within 1.3x of the Asio TU"
fi
