#!/usr/bin/env bash
# Add-on benchmark in the netns lab (one master holding the VIP, a worker
# w1 that runs CoreDNS and a Service backend, and a new worker host w2 each
# round): seconds from w2's Node Ready to its kube-proxy answering a
# Service created at that moment and the cluster DNS answering for the
# Service's name (both asked from w2's own network), every round and the
# medians; then DNS queries per second from one pod through the cluster DNS
# Service's address (test/tools/dnsload, 1 and 4 concurrent queriers).
#
# Usage: scripts/bench-addons.sh [-n ROUNDS] [-d DNS_LOAD_DURATION]
# Root; builds the worker parts (scripts/worker-parts.sh) when they are not
# cached.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
dns=10s
while [ $# -gt 0 ]; do
  case $1 in
    -n) rounds=$2; shift 2 ;;
    -d) dns=$2; shift 2 ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network and mount namespaces)" >&2; exit 1; }
scripts/worker-parts.sh >/dev/null
log=$(mktemp /tmp/bench-addons.XXXXXX)
cd test
# The Go test owns the lab (and its teardown, also on failure); -v shows the
# rounds as they come, the full output stays in the log.
if ! K8S_MASTER_BIN=$bin go test -v -tags grpcnotrace -count=1 -timeout 30m -run 'TestAddonsBench$' . \
  -args -addons.rounds="$rounds" -addons.dns="$dns" | tee "$log" | grep -E '^(round|median|dns|first failure|--- )'; then
  tail -n 60 "$log" >&2
  echo "bench failed; full output in $log" >&2
  exit 1
fi
rm -f "$log"
