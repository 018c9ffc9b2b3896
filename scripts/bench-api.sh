#!/usr/bin/env bash
# API throughput benchmark: k8s-master against the four upstream processes
# (../shared/bench/refstack), alternately, in one run. Each run starts a
# stack afresh and, for 1, 8 and 32 concurrent workers in turn, runs
# test/tools/benchload api for a fixed time: each worker repeats create,
# get, list (its own label), update and delete of a ConfigMap, with no
# client-side rate limit, over one client (one HTTP/2 connection, as
# client-go shares it). Prints ops/s and p50/p99 latency per run, then the
# medians side by side with ratios k8s-master/refstack.
#
# The load starts SETTLE seconds after both leader leases are held, so that
# neither stack's start-up work (bootstrap objects, first syncs) is
# measured.
#
# Usage: scripts/bench-api.sh [-n RUNS] [-d DURATION] [-w WORKERS,...] [-s SETTLE]
#        default: -n 5 -d 20s -w 1,8,32 -s 10
# Env:   K8S_MASTER_BIN (default bin/k8s-master), REFSTACK_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 duration=20s workers=1,8,32 settle=10
while [ $# -gt 0 ]; do
  case $1 in
    -n) runs=$2; shift 2 ;;
    -d) duration=$2; shift 2 ;;
    -w) workers=$2; shift 2 ;;
    -s) settle=$2; shift 2 ;;
    *) echo "usage: $0 [-n RUNS] [-d DURATION] [-w WORKERS,...] [-s SETTLE]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
for t in curl bc openssl go; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done

work=$(mktemp -d /tmp/bench-api.XXXXXX)
cleanup() { stack_down 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. scripts/bench-stacks.sh
refstack_build
go build -o "$work/benchload" ./test/tools/benchload
field() { sed -nE "s/.*\\b$1=([0-9.]+).*/\\1/p"; }

echo "machine: $(nproc) cores; load at start: $(loadavg)"
echo "k8s-master: $("$bin" version | tr '\n' ' ')"
IFS=, read -ra ws <<<"$workers"
printf '%-4s %-10s %7s %8s %8s %8s %8s  %s\n' run stack workers ops_s p50_ms p99_ms failures load
for i in $(seq 1 "$runs"); do
  for s in ours ref; do
    "${s}_up" "api-$i" >&2
    sleep "$settle"
    name=k8s-master; [ $s = ref ] && name=refstack
    for w in "${ws[@]}"; do
      line=$("$work/benchload" api -kubeconfig "$STACK_KC" -workers "$w" -duration "$duration") ||
        { echo "$name run $i with $w workers failed; logs in $STACK_DIR" >&2; exit 1; }
      echo "$line" >>"$work/res.$s.$w"
      printf '%-4s %-10s %7s %8s %8s %8s %8s  %s\n' "$i" $name "$w" "$(echo "$line" | field ops_s)" "$(echo "$line" | field p50_ms)" \
        "$(echo "$line" | field p99_ms)" "$(echo "$line" | field failures)" "$(loadavg)"
    done
    stack_down
    rm -rf "$STACK_DIR"
  done
done

echo
echo "medians of $runs ($duration per point), load at end: $(loadavg)"
echo "| workers | figure | k8s-master | refstack (4 processes) | ratio |"
echo "|---|---|---|---|---|"
for w in "${ws[@]}"; do
  for f in ops_s p50_ms p99_ms; do
    o=$(field $f <"$work/res.ours.$w" | median) r=$(field $f <"$work/res.ref.$w" | median)
    printf '| %s | %s | %s | %s | %.2f |\n' "$w" "$f" "$o" "$r" "$(echo "$o / $r" | bc -l)"
  done
done
