#!/usr/bin/env bash
# Scale benchmark: k8s-master against the four upstream processes it
# replaces (../shared/bench/refstack), alternately, in one run, under the
# load of fake nodes and pods made by kwok (sigs.k8s.io/kwok, a separate
# process on loopback: it plays the kubelets, marking Nodes Ready, renewing
# their leases and making scheduled pods Running).
#
# For each point (nodes/pods) and each run, each stack is started afresh,
# kwok is attached, the fake Nodes are registered, Deployments of at most
# 1000 fake pods are created and the time until every pod is Running is
# measured (test/tools/benchload scale; created_s and sched_s: until every
# pod exists and is bound, which shows where the time goes), with the peak resident memory of
# the stack sampled every 100 ms (k8s-master: its one process; refstack:
# the sum of its four). At the first point it also measures churn: the
# first 1000-pod Deployment scaled to 0 (until its pods are gone) and back
# (until all are Running).
#
# Usage: scripts/bench-scale.sh [-n RUNS] [-p NODES/PODS[,NODES/PODS...]] [--no-refstack] [--no-churn]
#        default: -n 5 -p 50/1000,200/5000 (--no-refstack: k8s-master only,
#        for trying a change; no ratios)
# Env:   K8S_MASTER_BIN (default bin/k8s-master), REFSTACK_DIR, KWOK_VERSION
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 points=50/1000,200/5000 stacks="ours ref" churnflag=-churn
while [ $# -gt 0 ]; do
  case $1 in
    -n) runs=$2; shift 2 ;;
    -p) points=$2; shift 2 ;;
    --no-refstack) stacks=ours; shift ;;
    --no-churn) churnflag=""; shift ;;
    *) echo "usage: $0 [-n RUNS] [-p NODES/PODS[,NODES/PODS...]] [--no-refstack] [--no-churn]" >&2; exit 2 ;;
  esac
done
bin=$(realpath "${K8S_MASTER_BIN:-bin/k8s-master}")
[ -x "$bin" ] || { echo "no binary at $bin; run make build" >&2; exit 1; }
for t in curl bc openssl go; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done

work=$(mktemp -d /tmp/bench-scale.XXXXXX)
kwokpid=""
cleanup() {
  [ -n "$kwokpid" ] && kill -9 "$kwokpid" 2>/dev/null
  stack_down 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. scripts/bench-stacks.sh

[ "$stacks" = ours ] || refstack_build
# kwok at a pinned version, built once into .cache (go install needs the
# module proxy or a module cache that holds it the first time only).
kwokv=${KWOK_VERSION:-v0.8.0}
kwok=$PWD/.cache/kwok/$kwokv/kwok
if [ ! -x "$kwok" ]; then
  echo "installing kwok $kwokv into .cache/kwok/$kwokv ..." >&2
  GOBIN=$PWD/.cache/kwok/$kwokv GOFLAGS=-trimpath go install "sigs.k8s.io/kwok/cmd/kwok@$kwokv" ||
    { echo "cannot install kwok $kwokv; with no module proxy, put a kwok binary at $kwok" >&2; exit 1; }
fi
# kwok's own stages, from its module: nodes become Ready and keep their
# leases (as kubelets do), pods become Running.
stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$kwokv/kustomize/stage
[ -d "$stages" ] || { echo "no kwok stages at $stages; run: go mod download sigs.k8s.io/kwok@$kwokv" >&2; exit 1; }
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  cat "$stages/$f"; echo '---'
done >"$work/stages.yaml"
# kwok plays the stages of 4 pods at a time by default, one PATCH each: with
# 1000 pods bound at once that alone took 20-30 s under load, the harness
# measuring itself. 50 kubelets would work in parallel; so does kwok here,
# the same for both stacks (a configuration file replaces all of kwok's
# defaults for these options, so the others are given as they were).
printf '%s\n' 'apiVersion: config.kwok.x-k8s.io/v1alpha1' 'kind: KwokConfiguration' 'options:' \
  '  podPlayStageParallelism: 32' '  nodePlayStageParallelism: 8' '  nodeLeaseParallelism: 4' '  podsOnNodeSyncParallelism: 1' >>"$work/stages.yaml"
go build -o "$work/benchload" ./test/tools/benchload

kwok_up() {
  "$kwok" --kubeconfig "$STACK_KC" --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.0.0.0/16 --node-ip 127.0.0.1 \
    --server-address 127.0.0.1:31247 -c "$work/stages.yaml" >"$STACK_DIR/kwok.log" 2>&1 &
  kwokpid=$!
}
kwok_down() { [ -n "$kwokpid" ] && { kill -9 "$kwokpid" 2>/dev/null; wait "$kwokpid" 2>/dev/null || true; kwokpid=""; }; }

# one STACK TAG NODES PODS CHURN: prints benchload's key=value line.
one() {
  local stack=$1 tag=$2 nodes=$3 pods=$4 churn=$5 line
  "${stack}_up" "$tag" >&2
  kwok_up
  line=$("$work/benchload" scale -kubeconfig "$STACK_KC" -nodes "$nodes" -pods "$pods" -pids "$STACK_PIDS" $churn 2>"$STACK_DIR/benchload.err") ||
    { echo "$stack run $tag failed:" >&2; cat "$STACK_DIR/benchload.err" >&2; tail -5 "$STACK_DIR"/*.log "$STACK_DIR/out" 2>/dev/null >&2; exit 1; }
  kwok_down
  stack_down
  rm -rf "$STACK_DIR"
  echo "$line"
}
field() { sed -nE "s/.*\\b$1=([0-9.]+).*/\\1/p"; }

echo "machine: $(nproc) cores; load at start: $(loadavg)"
echo "k8s-master: $("$bin" version | tr '\n' ' ')"
IFS=, read -ra pts <<<"$points"
summary=()
for pt in "${pts[@]}"; do
  nodes=${pt%/*} pods=${pt#*/}
  churn=""; [ "$pt" = "${pts[0]}" ] && churn=$churnflag
  printf '%-9s %-4s %-10s %9s %9s %9s %8s %8s %6s  %s\n' point run stack created_s sched_s running_s churn_s peak_mb cpu_s load
  for i in $(seq 1 "$runs"); do
    for s in $stacks; do
      # Not in $(...): a failed run must leave its processes to this
      # shell's cleanup, which knows them only if they started here.
      one $s "$nodes-$pods-$i" "$nodes" "$pods" "$churn" >"$work/line"
      line=$(cat "$work/line")
      echo "$line" >>"$work/res.$s.$nodes"
      name=k8s-master; [ $s = ref ] && name=refstack
      printf '%-9s %-4s %-10s %9s %9s %9s %8s %8s %6s  %s\n' "$pt" "$i" $name "$(echo "$line" | field created_s)" "$(echo "$line" | field scheduled_s)" \
        "$(echo "$line" | field running_s)" "$(echo "$line" | field churn_s)" "$(echo "$line" | field peak_rss_mb)" "$(echo "$line" | field cpu_s)" "$(loadavg)"
    done
  done
  med() { field "$1" <"$work/res.$2.$nodes" | median; }
  if [ "$stacks" = ours ]; then
    summary+=("| $pt running_s | $(med running_s ours) | | |" "| $pt peak_rss_mb | $(med peak_rss_mb ours) | | |")
    [ -n "$churn" ] && summary+=("| $pt churn_s (1000 to 0 and back) | $(med churn_s ours) | | |")
    continue
  fi
  or=$(med running_s ours) rr=$(med running_s ref) om=$(med peak_rss_mb ours) rm=$(med peak_rss_mb ref)
  summary+=("$(printf '| %s running_s | %s | %s | %.2f |' "$pt" "$or" "$rr" "$(echo "$or / $rr" | bc -l)")")
  summary+=("$(printf '| %s peak_rss_mb | %s | %s | %.2f |' "$pt" "$om" "$rm" "$(echo "$om / $rm" | bc -l)")")
  if [ -n "$churn" ]; then
    oc=$(med churn_s ours) rc=$(med churn_s ref)
    summary+=("$(printf '| %s churn_s (1000 to 0 and back) | %s | %s | %.2f |' "$pt" "$oc" "$rc" "$(echo "$oc / $rc" | bc -l)")")
  fi
done
echo
echo "medians of $runs, load at end: $(loadavg)"
echo "| point figure | k8s-master | refstack (4 processes) | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${summary[@]}"
