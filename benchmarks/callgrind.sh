#!/bin/sh
# Instruction counts under valgrind's callgrind, repeatable across runs and
# machines' load (this machine has no hardware performance counters):
#   - one canary step     (scale_bench --only canary: 6 steps per canary)
#   - one rolling instance-step (scale_bench --only rolling: 4 per replacement),
#     with a wait_ready call per start-up, and through a readiness watch (rolling_watch)
#   - one blue-green probe      (scale_bench --only blue_green: 1 per probe)
#   - one HttpProbe check against examples/sample_service (probe_bench
#     --probes), kept-alive one at a time and 128 at a time, and with a new
#     connection each; only the probing process is counted, not the server
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
service_pid=
trap 'rm -rf "$tmp"; [ -z "$service_pid" ] || kill "$service_pid" 2>/dev/null || true' EXIT

# collected: sets $ir to the instruction count valgrind wrote to $tmp/err
collected() {
  ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err" | tail -1)
}

# measure <scenario> <size>: sets $ir (instructions of one run) and $steps (its instance-steps)
measure() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" --only "$1" --size "$2" --runs 1 >"$tmp/out" 2>"$tmp/err"
  collected
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
row rolling_watch "$r1" "$r2" instances
row blue_green "$g1" "$g2" "switches of 100"
echo "(canary: per plan step or promotion; rolling, rolling_watch: per created/ready/retiring/retired transition; blue_green: per probe)"

# HttpProbe's instructions per check, against a sample_service this script
# starts on a free port and stops by PID (probe_bench's timed table cannot run
# under valgrind: valgrind 3.19 refuses pidfd_open, which starting a process needs).
probe_bench="$(dirname "$bench")/probe_bench"
service="$(dirname "$bench")/../examples/sample_service"
if [ -x "$probe_bench" ] && [ -x "$service" ]; then
  "$service" --port 0 --version v1 >"$tmp/service" 2>&1 &
  service_pid=$!
  tries=0
  until grep -q "listening on" "$tmp/service"; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || { echo "callgrind.sh: sample_service did not start: $(cat "$tmp/service")"; exit 1; }
    sleep 0.1
  done
  port=$(sed -n 's/listening on //p' "$tmp/service")
  # probe_ir <probes> <mode...>: sets $ir (instructions of one probe_bench run)
  probe_ir() {
    n=$1; shift
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$probe_bench" --probes "$n" --port "$port" "$@" >"$tmp/out" 2>"$tmp/err" \
      || { echo "callgrind.sh: probe_bench failed: $(cat "$tmp/out")"; exit 1; }
    collected
  }
  # probe_row <label> <mode...>
  probe_row() {
    label=$1; shift
    probe_ir "$p1" "$@"; a=$ir
    probe_ir "$p2" "$@"; b=$ir
    echo "| $label | $p1 -> $p2 | $a | $b | $(( (b - a) / (p2 - p1) )) |"
  }
  if [ "$smoke" = 1 ]; then p1=50; p2=100; else p1=2000; p2=4000; fi
  echo
  echo "HttpProbe instructions per check under callgrind ($probe_bench against examples/sample_service)"
  echo "| connections, concurrency | probes | instructions (small) | instructions (large) | instructions per probe |"
  echo "|---|---|---|---|---|"
  probe_row "keep-alive, 1" --concurrency 1
  probe_row "keep-alive, 128" --concurrency 128
  probe_row "new per probe, 1" --concurrency 1 --new-connections
  kill "$service_pid"
  wait "$service_pid" 2>/dev/null || true
  service_pid=
fi

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
    collected
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
