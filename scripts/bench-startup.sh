#!/usr/bin/env bash
# Start-up benchmark: k8s-master side by side with the four upstream
# processes it replaces (../shared/bench/refstack), on this machine, in one run.
#
# For each run it prints, per stack:
#   ready_s   process start to apiserver /readyz ok
#   leases_s  process start to both kube-controller-manager and kube-scheduler
#             leader leases held
#   rss_mb    resident memory after IDLE seconds (k8s-master: its one
#             process; refstack: the sum of its four)
# then the medians, the ratios k8s-master/refstack, and the stripped binary
# size. k8s-master is measured on `init` of an empty data directory, so its
# figures include making the cluster PKI; refstack's PKI is made beforehand.
#
# Usage: scripts/bench-startup.sh [-n RUNS] [-i IDLE_SECONDS] [--no-refstack]
# Env:   K8S_MASTER_BIN (default bin/k8s-master), REFSTACK_DIR (default
#        ../shared/bench/refstack; built into .cache/refstack-<version>),
#        K8S_MASTER_PREV_BIN: also measure this k8s-master binary (the
#        previous release: scripts/previous-release.sh) in the same run
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 idle=30 refstack=1
while [ $# -gt 0 ]; do
  case $1 in
    -n) runs=$2; shift 2 ;;
    -i) idle=$2; shift 2 ;;
    --no-refstack) refstack=0; shift ;;
    *) echo "usage: $0 [-n RUNS] [-i IDLE_SECONDS] [--no-refstack]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
for t in curl bc; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done

# now, median and refstack_build (built at this project's versions, one
# cache per version).
. scripts/bench-stacks.sh

work=$(mktemp -d /tmp/bench-startup.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

prev=""
[ -n "${K8S_MASTER_PREV_BIN:-}" ] && prev=$(realpath "$K8S_MASTER_PREV_BIN")

# One k8s-master run of binary $2 on fresh loopback ports; prints
# "ready leases rss".
run_ours() {
  local d=$work/data.$1 p=26443 bin=$2
  local t0 t1 t2 rss
  t0=$(now)
  "$bin" init --data-dir "$d" --advertise-address 127.0.0.1 --bind-address 127.0.0.1 \
    --apiserver-port $p --etcd-client-port 22379 --etcd-peer-port 22380 --etcd-metrics-port 22381 \
    --controller-manager-port 30257 --scheduler-port 30259 >"$work/out.$1" 2>&1 &
  pid=$!
  local pki=$d/pki
  local api="curl -s -m 2 --cacert $pki/ca.crt https://127.0.0.1:$p"
  local late=$(echo "$t0 + 120" | bc)
  until [ -f "$pki/ca.crt" ] && [ "$($api/readyz 2>/dev/null)" = ok ]; do
    [ "$(echo "$(now) > $late" | bc)" = 1 ] && { echo "not ready after 120 s:" >&2; cat "$work/out.$1" >&2; exit 1; }
    kill -0 $pid 2>/dev/null || { echo "k8s-master exited:" >&2; cat "$work/out.$1" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  local auth="--cert $pki/admin.crt --key $pki/admin.key"
  until $api/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager $auth | grep -q holderIdentity &&
        $api/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler $auth | grep -q holderIdentity; do
    [ "$(echo "$(now) > $late" | bc)" = 1 ] && { echo "leases not held after 120 s" >&2; exit 1; }
    sleep 0.05
  done
  t2=$(now)
  sleep "$idle"
  rss=$(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true; pid=""
  echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t0" | bc) $rss"
}

# refstack's run.sh prints "ready_s=… leases_s=… rss_mb=… parts_mb=…".
refdir=""
if [ $refstack = 1 ]; then
  refstack_build
fi
run_ref() {
  local line; line=$(cd $refdir && ./run.sh "$idle")
  echo "$line" >"$work/ref.parts.$1"
  echo "$line" | sed -E 's/.*ready_s=([0-9.]+) leases_s=([0-9.]+) rss_mb=([0-9]+).*/\1 \2 \3/'
}

printf '%-4s %-11s %8s %9s %7s\n' run stack ready_s leases_s rss_mb
for i in $(seq 1 "$runs"); do
  run_ours "$i" "$bin" >"$work/ours.line.$i"
  read -r r l m <"$work/ours.line.$i"
  printf '%-4s %-11s %8.2f %9.2f %7d\n' "$i" k8s-master "$r" "$l" "$m"
  echo "$r $l $m" >>"$work/ours"
  if [ -n "$prev" ]; then
    run_ours "p$i" "$prev" >"$work/prev.line.$i"
    read -r r l m <"$work/prev.line.$i"
    printf '%-4s %-11s %8.2f %9.2f %7d\n' "$i" previous "$r" "$l" "$m"
    echo "$r $l $m" >>"$work/prev"
  fi
  if [ $refstack = 1 ]; then
    run_ref "$i" >"$work/ref.line.$i"
    read -r r l m <"$work/ref.line.$i"
    printf '%-4s %-11s %8.2f %9.2f %7d   (%s)\n' "$i" refstack "$r" "$l" "$m" "$(sed 's/.*parts_mb=/etcd,apiserver,kcm,sched: /' "$work/ref.parts.$i")"
    echo "$r $l $m" >>"$work/ref"
  fi
done

col() { awk -v c="$1" '{print $c}' "$2" | median; }
or=$(col 1 "$work/ours") ol=$(col 2 "$work/ours") om=$(col 3 "$work/ours")
printf 'median k8s-master: ready_s=%.2f leases_s=%.2f rss_mb=%d  (%s)\n' "$or" "$ol" "$om" "$("$bin" version | tr '\n' ' ')"
if [ -n "$prev" ]; then
  pr=$(col 1 "$work/prev") pl=$(col 2 "$work/prev") pm=$(col 3 "$work/prev")
  printf 'median previous:   ready_s=%.2f leases_s=%.2f rss_mb=%d  (%s)\n' "$pr" "$pl" "$pm" "$("$prev" version | tr '\n' ' ')"
fi
if [ $refstack = 1 ]; then
  rr=$(col 1 "$work/ref") rl=$(col 2 "$work/ref") rm=$(col 3 "$work/ref")
  printf 'median refstack:   ready_s=%.2f leases_s=%.2f rss_mb=%d\n' "$rr" "$rl" "$rm"
  printf 'ratio k8s-master/refstack: ready=%.2f leases=%.2f rss=%.2f\n' \
    "$(echo "$or / $rr" | bc -l)" "$(echo "$ol / $rl" | bc -l)" "$(echo "$om / $rm" | bc -l)"
fi
if [ -n "$prev" ]; then
  psize=$(stat -c %s "$prev")
  printf 'previous binary: %.1f MB (%.1f MiB)\n' "$(echo "$psize / 1000000" | bc -l)" "$(echo "$psize / 1048576" | bc -l)"
fi
size=$(stat -c %s "$bin")
printf 'binary: %s %.1f MB (%.1f MiB), %s\n' "$(basename "$bin")" "$(echo "$size / 1000000" | bc -l)" "$(echo "$size / 1048576" | bc -l)" \
  "$(file -b "$bin" | grep -o 'statically linked\|dynamically linked\|static-pie linked' | head -1), $(file -b "$bin" | grep -o 'stripped\|not stripped' | head -1)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
