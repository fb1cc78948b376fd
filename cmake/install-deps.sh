#!/bin/sh
# Installs, on Debian 12, every package that rollout's build, tests and examples
# need, and nothing when they are already there. Boost is pinned to 1.81: never
# install the unversioned libboost-dev (1.74), which conflicts with it.
set -eu

packages="cmake ninja-build g++ clang libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libfmt-dev doctest-dev libssl-dev openssl haproxy prometheus wrk valgrind"

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing$missing"
$sudo apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
