#!/usr/bin/env bash
# Worker join benchmark in the netns lab (one master holding the VIP, one
# worker host running containerd): seconds to the worker's Node Ready,
# every round and the median. Each round deletes the Node and the worker's
# credentials, so every round goes through the TLS bootstrap with a worker
# token (k8s-master token create --worker).
#
# Usage: scripts/bench-worker-join.sh [-n ROUNDS] [--auth bootstrap|kubeadm]
#   bootstrap  from the start of a kubelet with a bootstrap kubeconfig
#              (k8s-master worker kubeconfig) (default)
#   kubeadm    from the start of the unmodified kubeadm join line (the
#              kubelet started once kubeadm has written its files, as
#              TestWorkerLab does without systemd)
# BENCH_AUTH sets the default of --auth. Root; builds the worker parts
# (scripts/worker-parts.sh) when they are not cached.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
auth=${BENCH_AUTH:-bootstrap}
while [ $# -gt 0 ]; do
  case $1 in
    -n) rounds=$2; shift 2 ;;
    --auth) auth=$2; shift 2 ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
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
