#!/usr/bin/env bash
# Snapshot benchmark: seconds for `k8s-master snapshot save` (etcd snapshot,
# identity files, archive written, fsynced and verified) of a single master
# whose etcd database was filled to about SIZE_MB with ConfigMaps, RUNS times.
#
# Usage: scripts/bench-snapshot.sh [-s SIZE_MB] [-n RUNS]   (bin/k8s-master built)
set -euo pipefail
cd "$(dirname "$0")/.."
size=100 runs=5
while [ $# -gt 0 ]; do
  case $1 in
    -s) size=$2; shift 2 ;;
    -n) runs=$2; shift 2 ;;
    *) echo "usage: $0 [-s SIZE_MB] [-n RUNS]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
command -v kubectl >/dev/null || { echo "kubectl is needed" >&2; exit 1; }
work=$(mktemp -d /tmp/bench-snapshot.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

d=$work/data
"$bin" init --foreground --data-dir "$d" --advertise-address 127.0.0.1 --bind-address 127.0.0.1 \
  --apiserver-port 27443 --etcd-client-port 27379 --etcd-peer-port 27380 --etcd-metrics-port 27381 \
  --controller-manager-port 27257 --scheduler-port 27259 --join-port 27444 --snapshot-interval 0 >"$work/out" 2>&1 &
pid=$!
for _ in $(seq 1 240); do grep -q "^ready in" "$work/out" && break; sleep 0.5; done
grep -q "^ready in" "$work/out" || { cat "$work/out" >&2; exit 1; }
k="kubectl --kubeconfig $d/admin.kubeconfig --request-timeout 60s"

# ~0.9 MB ConfigMaps until the database holds SIZE_MB.
head -c 675000 /dev/urandom | base64 -w 0 >"$work/blob" # 900,000 characters
n=$((size * 1000 / 900))
echo "filling etcd with $n ConfigMaps of 0.9 MB..." >&2
for i in $(seq 1 "$n"); do
  $k create configmap "fill-$i" --from-file=blob="$work/blob" >/dev/null
done
printf '%-4s %8s %10s\n' run save_s archive_mb
for i in $(seq 1 "$runs"); do
  out=$work/s$i.snapshot
  t0=$(date +%s.%N)
  "$bin" snapshot save --data-dir "$d" -o "$out" 2>/dev/null >/dev/null
  t1=$(date +%s.%N)
  printf '%-4s %8.2f %10.1f\n' "$i" "$(echo "$t1 - $t0" | bc)" "$(echo "$(stat -c %s "$out") / 1000000" | bc -l)"
  echo "$t1 - $t0" | bc >>"$work/times"
  rm -f "$out"
done
printf 'median save_s=%s (runs=%s, database about %s MB)\n' "$(sort -n "$work/times" | awk '{a[NR]=$1} END {if (NR%2) printf "%.2f", a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2}')" "$runs" "$size"
