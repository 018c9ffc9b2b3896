#!/usr/bin/env bash
# VIP failover benchmark: the outage a client sees when the VIP holder is
# killed (SIGKILL, a crash) or stopped (SIGTERM, a graceful stop).
# A netns lab with 3 masters and a VIP; a client namespace runs pollvip,
# which GETs https://VIP:6443/readyz over a new connection every 50 ms
# (500 ms timeout). Each trial finds the holder, signals it, and measures
# from the client's last success before the signal to its first success
# after the last failure (pollvip gap); then the master is started again
# and the cluster waits until all three are healthy and ready.
#
# Usage: scripts/bench-failover.sh [-n TRIALS]   (root; bin/k8s-master built)
# Prints each trial, then median and max per signal.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=10
[ "${1:-}" = -n ] && trials=$2
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
export LAB_PREFIX=kbf-
lab=scripts/netns-lab.sh
vip=10.99.0.50
work=$(mktemp -d /tmp/bench-failover.XXXXXX)
cleanup() { $lab down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
$lab down >/dev/null 2>&1 || true
$lab up 3 >/dev/null
CGO_ENABLED=0 go build -o "$work/pollvip" ./test/tools/pollvip

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
printf '%-8s %-6s %-7s %10s\n' signal trial holder outage_s
for sig in KILL TERM; do
  results[$sig]=""
  for t in $(seq 1 "$trials"); do
    h=$(holder)
    pid=$(pid_of "$h")
    [ -n "$pid" ] || { echo "no process for holder m$h" >&2; exit 1; }
    from=$(date +%s%N)
    kill -"$sig" "$pid"
    # Outage window: long enough for the worst case (lease expiry).
    sleep 9
    to=$(date +%s%N)
    gap=$("$work/pollvip" gap -log "$work/poll.log" -from "$from" -to "$to")
    printf '%-8s %-6s %-7s %10s\n' "SIG$sig" "$t" "m$h" "$gap"
    results[$sig]+="$gap "
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    start_master "$h" start
    wait_settled
  done
done

echo
printf '%-8s %8s %8s   (%d trials each; client: new connection every 50 ms, 500 ms timeout)\n' signal median_s max_s "$trials"
for sig in KILL TERM; do
  sorted=$(tr ' ' '\n' <<<"${results[$sig]}" | grep . | sort -n)
  n=$(wc -l <<<"$sorted")
  if [ $((n % 2)) = 1 ]; then
    median=$(sed -n "$(((n + 1) / 2))p" <<<"$sorted")
  else
    a=$(sed -n "$((n / 2))p" <<<"$sorted"); b=$(sed -n "$((n / 2 + 1))p" <<<"$sorted")
    median=$(printf '%.3f' "$(echo "scale=4; ($a + $b) / 2" | bc)")
  fi
  printf '%-8s %8s %8s\n' "SIG$sig" "$median" "$(tail -1 <<<"$sorted")"
done
