#!/usr/bin/env bash
# Worker join benchmark: seconds from a kubelet's start to its Node Ready,
# in the netns lab (one master holding the VIP, one worker host running
# containerd, the kubelet pointed at the VIP). Each round deletes the Node
# and starts the kubelet afresh; prints every round and the median.
#
# Usage: scripts/bench-worker-join.sh [-n ROUNDS] [--auth cert|bootstrap]
#   cert       the kubelet's client certificate is issued by hand from the
#              cluster CA (default)
#   bootstrap  the kubelet starts from a bootstrap kubeconfig holding a
#              bootstrap token and gets its certificate by TLS bootstrap in
#              every round (needs bootstrap-token authentication and CSR
#              approval in the control plane)
# BENCH_AUTH sets the default of --auth. Root; builds the worker parts
# (scripts/worker-parts.sh) when they are not cached.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
auth=${BENCH_AUTH:-cert}
while [ $# -gt 0 ]; do
  case $1 in
    -n) rounds=$2; shift 2 ;;
    --auth) auth=$2; shift 2 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network and mount namespaces)" >&2; exit 1; }
scripts/worker-parts.sh >/dev/null
log=$(mktemp /tmp/bench-worker-join.XXXXXX)
cd test
# The Go test owns the lab (and its teardown, also on failure); -v shows the
# rounds as they come, the full output stays in the log.
if ! K8S_MASTER_BIN=$bin go test -v -tags grpcnotrace -count=1 -timeout 30m -run 'TestWorkerJoinBench$' . \
  -args -workerjoin.rounds="$rounds" -workerjoin.auth="$auth" | tee "$log" | grep -E '^(round|median|--- )'; then
  tail -n 60 "$log" >&2
  echo "bench failed; full output in $log" >&2
  exit 1
fi
rm -f "$log"
