#!/usr/bin/env bash
# Disaster-recovery benchmark in a netns lab (masters m1..m4, client c, a
# VIP), every figure the recovery issue asks for:
#   1. `snapshot save` of a master whose etcd holds about SIZE_MB
#      (ConfigMaps of 0.9 MB): written, fsynced, verified; RUNS times.
#   2. a steady open-loop client (steadyload: RATE requests/s, quorum GETs
#      and UPDATEs through the VIP) for DURATION while that master takes a
#      scheduled (paced) snapshot every INTERVAL: p99 of the requests that
#      started during a snapshot against the others.
#   3. every master killed, then RUNS times on fresh data directories:
#      `restore` on m2 from command start to /readyz ok, and to 3 healthy
#      voters once m3 and m4 have joined with the token it printed.
#
# Usage: scripts/bench-restore.sh [-s SIZE_MB] [-n RUNS] [-d DURATION] [-r RATE] [-i INTERVAL]
#        (bin/k8s-master built; root; kubectl installed)
set -euo pipefail
cd "$(dirname "$0")/.."
size=100 runs=5 duration=120s rate=100 interval=30s
while [ $# -gt 0 ]; do
  case $1 in
    -s) size=$2; shift 2 ;;
    -n) runs=$2; shift 2 ;;
    -d) duration=$2; shift 2 ;;
    -r) rate=$2; shift 2 ;;
    -i) interval=$2; shift 2 ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
command -v kubectl >/dev/null || { echo "kubectl is needed" >&2; exit 1; }
export LAB_PREFIX=br-
lab=scripts/netns-lab.sh
vip=10.99.0.50
work=$(mktemp -d /tmp/bench-restore.XXXXXX)
cleanup() { $lab down >/dev/null 2>&1 || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$work/steadyload" ./test/tools/steadyload

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) printf "%.2f", a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2}'; }
# wait_line FILE TEXT SECONDS: until a line of FILE starts with TEXT.
wait_line() {
  for _ in $(seq 1 $(($3 * 10))); do grep -q "^$2" "$1" && return 0; sleep 0.1; done
  echo "no '$2' in $1 after $3 s:" >&2; cat "$1" >&2; exit 1
}
# master I VERB ARGS...: k8s-master as lab host mI, output in $work/mI.out.
master() {
  local i=$1; shift
  $lab run "$i" "$bin" "$@" >"$work/m$i.out" 2>&1 &
  echo $! >"$work/m$i.pid"
}
kill_masters() {
  local i
  for i in "$@"; do
    ip netns pids "${LAB_PREFIX}m$i" | xargs -r kill -9 2>/dev/null || true
    # Reaped here, quietly, rather than reported by the shell later.
    [ -f "$work/m$i.pid" ] && wait "$(cat "$work/m$i.pid")" 2>/dev/null || true
  done
  # The dead holder's VIP leaves with its address lifetime (about 3 s).
  sleep 5
}
k() { $lab run c kubectl --kubeconfig "$work/d1/admin.kubeconfig" --request-timeout 60s "$@"; }

$lab up 4 >/dev/null
echo "== m1: init with the VIP, etcd filled to about $size MB" >&2
master 1 init --data-dir "$work/d1" --advertise-address 10.99.0.11 --vip $vip --iface eth0 --service-cidr 10.200.0.0/16 --snapshot-interval 0
wait_line "$work/m1.out" "ready in" 120
head -c 675000 /dev/urandom | base64 -w 0 >"$work/blob" # 900,000 characters
n=$((size * 1000 / 900))
for i in $(seq 1 "$n"); do k create configmap "fill-$i" --from-file=blob="$work/blob" >/dev/null; done

echo "== 1. snapshot save ($runs runs)" >&2
printf '%-4s %8s %10s\n' run save_s archive_mb
for i in $(seq 1 "$runs"); do
  out=$work/s$i.snapshot
  t0=$(now)
  $lab run 1 "$bin" snapshot save --data-dir "$work/d1" -o "$out" >/dev/null 2>&1
  t=$(since "$t0")
  printf '%-4s %8.2f %10.1f\n' "$i" "$t" "$(echo "$(stat -c %s "$out") / 1000000" | bc -l)"
  echo "$t" >>"$work/save"
  [ "$i" = 1 ] || rm -f "$out"
done
archive=$work/s1.snapshot

echo "== 2. steady client for $duration, a scheduled snapshot every $interval" >&2
kill -TERM "$(cat "$work/m1.pid")"; wait "$(cat "$work/m1.pid")" 2>/dev/null || true
master 1 start --data-dir "$work/d1" --snapshot-interval "$interval" --snapshot-dir "$work/sched" --snapshot-retention 100
wait_line "$work/m1.out" "ready in" 120
$lab run c "$work/steadyload" run -kubeconfig "$work/d1/admin.kubeconfig" -rate "$rate" -duration "$duration" >"$work/load.log"
# A window per scheduled snapshot: from its start (end minus the seconds
# the scheduler logged) to the file's last write.
grep -o 'scheduled snapshot [^ ]*: etcd revision [0-9]*, [0-9]* bytes, [0-9.]* s' "$work/m1.out" | while read -r _ _ file _ _ _ _ _ secs _; do
  file=${file%:}
  end=$(date -r "$file" +%s%N)
  echo "$(echo "$end - $secs * 1000000000" | bc | cut -d. -f1) $end"
done >"$work/windows"
echo "$(wc -l <"$work/windows") scheduled snapshots during the load" >&2
"$work/steadyload" stats -log "$work/load.log" -windows "$work/windows" | tee "$work/stats"

echo "== 3. restore ($runs runs): every master killed, restore on m2, m3 and m4 join" >&2
kill_masters 1
printf '%-4s %8s %10s\n' run ready_s voters_s
for i in $(seq 1 "$runs"); do
  rm -rf "$work/d2" "$work/d3" "$work/d4"
  t0=$(now)
  master 2 restore "$archive" --data-dir "$work/d2" --advertise-address 10.99.0.12
  until $lab run c curl -sk --max-time 1 https://10.99.0.12:6443/readyz 2>/dev/null | grep -qx ok; do
    kill -0 "$(cat "$work/m2.pid")" 2>/dev/null || { cat "$work/m2.out" >&2; exit 1; }
    sleep 0.05
  done
  ready=$(since "$t0")
  wait_line "$work/m2.out" "ready in" 120
  token=$(cat "$work/d2/token")
  master 3 join --data-dir "$work/d3" --advertise-address 10.99.0.13 --token "$token"
  master 4 join --data-dir "$work/d4" --advertise-address 10.99.0.14 --token "$token"
  wait_line "$work/m3.out" "ready in" 240
  wait_line "$work/m4.out" "ready in" 240
  voters=$(since "$t0")
  healthy=$($lab run 2 "$bin" status --data-dir "$work/d2" -o json | grep -c '"healthy": true' || true)
  [ "$healthy" = 3 ] || { echo "run $i: $healthy healthy members after the joins" >&2; exit 1; }
  printf '%-4s %8.2f %10.2f\n' "$i" "$ready" "$voters"
  echo "$ready" >>"$work/ready"
  echo "$voters" >>"$work/voters"
  kill_masters 2 3 4
done

echo
printf 'snapshot save of %s MB:   median %s s (%s runs)\n' "$size" "$(median <"$work/save")" "$runs"
printf 'restore to /readyz ok:    median %s s\n' "$(median <"$work/ready")"
printf 'restore to 3 voters:      median %s s\n' "$(median <"$work/voters")"
printf 'steady p99 during snapshots / without: %s\n' "$(awk '/p99 ratio/ {print $3}' "$work/stats")"
