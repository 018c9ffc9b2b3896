#!/usr/bin/env bash
# VIP failover benchmark: the outage a client sees when the VIP holder is
# killed (SIGKILL, a crash), stopped (SIGTERM, a graceful stop) or cut off
# from the network (a partition: its port moved to the lab switch's
# isolated bridge, so its host and process live on but reach nobody).
# A netns lab with 3 masters and a VIP; a client namespace runs pollvip,
# which GETs https://VIP:6443/readyz over a new connection every 50 ms
# (500 ms timeout). Each trial finds the holder, acts on it, and measures
# from the client's last success before the act to its first success
# after the last failure (pollvip gap); then the master is started again
# (or its port put back) and the cluster waits until all three are
# healthy and ready.
#
# Kinds of trial:
#   KILL      SIGKILL of the holder
#   TERM      SIGTERM of the holder
#   PART      partition of the holder
#   PARTLEAD  partition of the holder after etcd's leadership was moved to
#             it (test/tools/etcdlead) 2 s before the cut; the holder hands
#             the leadership away within about a second, so the partition
#             should cost what PART costs. The leader at the cut is printed.
#
# Usage: scripts/bench-failover.sh [-n TRIALS] [-k "KILL TERM PART PARTLEAD"]
#        (root; bin/k8s-master built). LAB_PREFIX (default kbf-) names the
#        lab's namespaces; BENCH_KEEP=DIR keeps the logs. Prints each trial
#        (with the time of the act; 9.000* = no success within the 9 s
#        window), then median and max per kind.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=10 kinds="KILL TERM PART PARTLEAD"
while [ $# -gt 0 ]; do
  case $1 in
    -n) trials=$2; shift 2 ;;
    -k) kinds=$2; shift 2 ;;
    *) echo "usage: $0 [-n TRIALS] [-k KINDS]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
export LAB_PREFIX=${LAB_PREFIX:-kbf-}
lab=scripts/netns-lab.sh
vip=10.99.0.50
work=$(mktemp -d /tmp/bench-failover.XXXXXX)
cleanup() {
  # BENCH_KEEP=DIR keeps the client's log and the masters' component logs.
  if [ -n "${BENCH_KEEP:-}" ]; then
    mkdir -p "$BENCH_KEEP"
    cp "$work/poll.log" "$BENCH_KEEP/" 2>/dev/null || true
    for i in 1 2 3; do cp "$work/m$i/k8s-master.log" "$BENCH_KEEP/m$i.log" 2>/dev/null || true; done
  fi
  $lab down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
$lab down >/dev/null 2>&1 || true
$lab up 3 >/dev/null
CGO_ENABLED=0 go build -o "$work/pollvip" ./test/tools/pollvip
CGO_ENABLED=0 go build -o "$work/etcdlead" ./test/tools/etcdlead
endpoints=https://10.99.0.11:2379,https://10.99.0.12:2379,https://10.99.0.13:2379

now() { date +%s.%N; }
wait_line() { # file pattern timeout_s
  local end; end=$(echo "$(now) + $3" | bc)
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$(echo "$(now) > $end" | bc)" = 1 ] && { echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; exit 1; }
    sleep 0.05
  done
}
start_master() { # i verb [args]; in a subshell so a SIGKILL is not reported as a job
  local i=$1; shift
  ($lab run "$i" "$bin" "$@" --data-dir "$work/m$i" >>"$work/m$i.out" 2>&1 &)
}
pid_of() { pgrep -f -- "--data-dir $work/m$1\$" | head -1; }
holder() { # the master whose eth0 has the VIP, or nothing
  local i
  for i in 1 2 3; do
    ip -n "${LAB_PREFIX}m$i" -br addr show dev eth0 | grep -q " $vip/32" && { echo "$i"; return; }
  done
  return 0
}
wait_settled() { # every master ready, a holder, and the client succeeding
  local end i h; end=$(echo "$(now) + 120" | bc)
  while :; do
    h=$(holder)
    # shellcheck disable=SC2015
    if [ -n "$h" ] && all_ready 1 && all_ready 2 && all_ready 3 &&
       tail -n 20 "$work/poll.log" | awk '$2 != "ok" {bad=1} END {exit bad}'; then
      return 0
    fi
    [ "$(echo "$(now) > $end" | bc)" = 1 ] && { echo "cluster did not settle within 120 s" >&2; exit 1; }
    sleep 0.5
  done
}

# etcd_leader I: the etcd leader's name as master I's status shows it.
etcd_leader() {
  $lab run "$1" "$bin" status --data-dir "$work/m$1" -o json 2>/dev/null |
    jq -r '.members[] | select(.leader) | .name' 2>/dev/null | head -1
}

# 3 healthy voters with ready apiservers, as master $1 sees them (status
# reads its local etcd on the namespace's loopback, so it runs there).
all_ready() {
  local s
  s=$($lab run "$1" "$bin" status --data-dir "$work/m$1" -o json 2>/dev/null) || return 1
  [ "$(grep -c '"healthy": true' <<<"$s")" = 3 ] && [ "$(grep -c '"apiserverReady": true' <<<"$s")" = 3 ]
}

start_master 1 init --vip "$vip" --iface eth0 --service-cidr 10.200.0.0/16
wait_line "$work/m1.out" "^ready in" 120
token=$(cat "$work/m1/token")
for i in 2 3; do
  start_master "$i" join --token "$token"
  wait_line "$work/m$i.out" "^ready in" 180
done
$lab run c "$work/pollvip" poll -url "https://$vip:6443/readyz" -ca "$work/m1/pki/ca.crt" >"$work/poll.log" 2>"$work/poll.err" &
sleep 1
wait_settled

declare -A results
printf '%-9s %-6s %-7s %-11s %10s  %s\n' kind trial holder etcd_leader outage_s at_utc
for kind in $kinds; do
  results[$kind]=""
  for t in $(seq 1 "$trials"); do
    h=$(holder)
    pid=$(pid_of "$h")
    [ -n "$pid" ] || { echo "no process for holder m$h" >&2; exit 1; }
    o=$(( h % 3 + 1 )) # another master, to ask who leads etcd
    if [ "$kind" = PARTLEAD ]; then
      # The holder hands the leadership on within 250 ms, sometimes before
      # the old leader saw it lead: etcdlead then times out although the
      # move happened. The leader at the cut is printed either way.
      $lab run "$h" "$work/etcdlead" -data-dir "$work/m$h" -endpoints "$endpoints" -to "m$h" ||
        echo "(etcdlead failed; the holder may have handed the leadership on already)" >&2
      sleep 2
    fi
    leader=$(etcd_leader "$o")
    from=$(date +%s%N)
    case $kind in
      KILL|TERM) kill -"$kind" "$pid" ;;
      PART|PARTLEAD) $lab cut "$h" ;;
    esac
    # Outage window: long enough for the worst case (lease expiry).
    sleep 9
    to=$(date +%s%N)
    # No success within the window: counted as the window (9 s), marked.
    gap=$("$work/pollvip" gap -log "$work/poll.log" -from "$from" -to "$to" 2>/dev/null) || gap="9.000*"
    printf '%-9s %-6s %-7s %-11s %10s  %s\n' "$kind" "$t" "m$h" "${leader:-?}" "$gap" "$(date -u -d @"${from:0:10}.${from:10:3}" +%T.%3N)"
    results[$kind]+="${gap%\*} "
    case $kind in
      KILL|TERM)
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        start_master "$h" start
        ;;
      PART|PARTLEAD)
        # Two masters must never answer for the VIP: the cut one must
        # have dropped it by now.
        [ "$(holder)" != "$h" ] || { echo "m$h still carries the VIP 9 s after its partition" >&2; exit 1; }
        $lab heal "$h"
        ;;
    esac
    wait_settled
  done
done

echo
printf '%-9s %8s %8s   (%d trials each; client: new connection every 50 ms, 500 ms timeout)\n' kind median_s max_s "$trials"
for kind in $kinds; do
  sorted=$(tr ' ' '\n' <<<"${results[$kind]}" | grep . | sort -n)
  n=$(wc -l <<<"$sorted")
  if [ $((n % 2)) = 1 ]; then
    median=$(sed -n "$(((n + 1) / 2))p" <<<"$sorted")
  else
    a=$(sed -n "$((n / 2))p" <<<"$sorted"); b=$(sed -n "$((n / 2 + 1))p" <<<"$sorted")
    median=$(printf '%.3f' "$(echo "scale=4; ($a + $b) / 2" | bc)")
  fi
  printf '%-9s %8s %8s\n' "$kind" "$median" "$(tail -1 <<<"$sorted")"
done
