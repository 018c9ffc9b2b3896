#!/usr/bin/env bash
# Join benchmark: seconds from `k8s-master join` start until the new member
# is promoted to voter and its apiserver is ready (the "ready in" line, which
# the joiner prints once its promotion, /readyz and the leases are done).
# A netns lab with 2 masters: m1 runs init once; m2 joins, is timed, leaves,
# and joins again, RUNS times. Prints each run and the median.
#
# Usage: scripts/bench-join.sh [-n RUNS] [-k DIR]   (root; bin/k8s-master built)
#   -k DIR  keep each run's output and the joiner's component log in DIR
# LAB_PREFIX (default kbj-) names the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 keep=
while [ $# -gt 0 ]; do
  case $1 in
    -n) runs=$2; shift 2 ;;
    -k) keep=$2; shift 2 ;;
    *) echo "usage: $0 [-n RUNS] [-k DIR]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
export LAB_PREFIX=${LAB_PREFIX:-kbj-}
lab=scripts/netns-lab.sh
work=$(mktemp -d /tmp/bench-join.XXXXXX)
cleanup() {
  [ -n "$keep" ] && cp "$work/m1/k8s-master.log" "$keep/m1.log" 2>/dev/null
  $lab down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
$lab down >/dev/null 2>&1 || true
$lab up 2 >/dev/null

now() { date +%s.%N; }
wait_line() { # file pattern timeout_s
  local end; end=$(echo "$(now) + $3" | bc)
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$(echo "$(now) > $end" | bc)" = 1 ] && { echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1; }
    sleep 0.02
  done
}

$lab run 1 "$bin" init --data-dir "$work/m1" --advertise-address 10.99.0.11 >"$work/m1.out" 2>&1 &
wait_line "$work/m1.out" "^ready in" 120
token=$(cat "$work/m1/token")

printf '%-4s %8s %10s\n' run join_s promote_s
for i in $(seq 1 "$runs"); do
  out=$work/m2.$i.out
  t0=$(now)
  $lab run 2 "$bin" join --token "$token" --data-dir "$work/m2" --advertise-address 10.99.0.12 >"$out" 2>&1 &
  joiner=$!
  wait_line "$out" "^ready in" 300
  t1=$(now)
  promote=$(awk '/etcd member caught up and promoted/ {print $(NF-2)}' "$out")
  printf '%-4s %8.2f %10s\n' "$i" "$(echo "$t1 - $t0" | bc)" "$promote"
  echo "$t1 - $t0" | bc >>"$work/times"
  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    cp "$out" "$keep/m2.$i.out"
    cp "$work/m2/k8s-master.log" "$keep/m2.$i.log" 2>/dev/null || true
  fi
  $lab run 2 "$bin" leave --yes --data-dir "$work/m2" >/dev/null
  wait "$joiner" || true # the joined master, stopped by leave
  # Nothing of the cluster may be left in m2's data directory.
  [ ! -e "$work/m2/state.json" ] || { echo "leave left state behind" >&2; exit 1; }
done
printf 'median join_s=%s (runs=%s)\n' "$(sort -n "$work/times" | awk '{a[NR]=$1} END {if (NR%2) printf "%.2f", a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2}')" "$runs"
