# Sourced by scripts/bench-scale.sh and scripts/bench-api.sh: brings up and
# down, on loopback, the two stacks they compare:
#   ours  k8s-master init (one process)
#   ref   the four upstream processes of ../shared/bench/refstack, started
#         with the flags of its run.sh (which cannot stay up while a load
#         runs: it measures idle and exits)
# After stack_up: STACK_KC (admin kubeconfig), STACK_PIDS (comma-separated
# pids of the stack's processes), STACK_DIR (its files, logs included).
# Both keep their data under $work (same file system, so etcd's fsyncs cost
# the same). Needs: $work, $bin (k8s-master), $refdir (built refstack).

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

STACK_PIDS="" STACK_KC="" STACK_DIR="" stack_pids_arr=()

# stack_wait URL AUTH... : until both leader leases are held (which implies
# /readyz answered), at most 120 s.
stack_wait() {
  local base=$1; shift
  local late; late=$(echo "$(now) + 120" | bc)
  until curl -sk -m 2 "$@" "$base/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager" | grep -q holderIdentity &&
        curl -sk -m 2 "$@" "$base/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler" | grep -q holderIdentity; do
    [ "$(echo "$(now) > $late" | bc)" = 1 ] && { echo "stack not up after 120 s; logs in $STACK_DIR" >&2; return 1; }
    for p in "${stack_pids_arr[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a stack process exited; logs in $STACK_DIR" >&2; return 1; }; done
    sleep 0.1
  done
}

ours_up() {
  STACK_DIR=$work/ours.$1; mkdir -p "$STACK_DIR"
  local d=$STACK_DIR/data p=26443
  "$bin" init --data-dir "$d" --advertise-address 127.0.0.1 --bind-address 127.0.0.1 \
    --apiserver-port $p --etcd-client-port 22379 --etcd-peer-port 22380 --etcd-metrics-port 22381 \
    --controller-manager-port 30257 --scheduler-port 30259 >"$STACK_DIR/out" 2>&1 &
  stack_pids_arr=($!)
  local late; late=$(echo "$(now) + 60" | bc)
  until [ -f "$d/pki/admin.crt" ] && [ -f "$d/admin.kubeconfig" ]; do
    [ "$(echo "$(now) > $late" | bc)" = 1 ] && { echo "k8s-master made no credentials in 60 s:" >&2; cat "$STACK_DIR/out" >&2; return 1; }
    sleep 0.05
  done
  stack_wait https://127.0.0.1:$p --cert "$d/pki/admin.crt" --key "$d/pki/admin.key" || { cat "$STACK_DIR/out" >&2; return 1; }
  STACK_KC=$d/admin.kubeconfig
  STACK_PIDS=${stack_pids_arr[0]}
}

# bg_in DIR LOG CMD...: CMD in the background in DIR, output to DIR/LOG; $!
# is CMD's own pid (the subshell execs it).
bg_in() { local d=$1 log=$2; shift 2; (cd "$d" && exec "$@" >"$log" 2>&1) & }

ref_up() {
  STACK_DIR=$work/ref.$1; mkdir -p "$STACK_DIR"
  local B; B=$(realpath "$refdir/bin")
  (
    cd "$STACK_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=etcd-ca 2>/dev/null
    printf '[s]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
    for n in etcd client; do
      openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
      openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 1 -extfile ext.cnf -extensions s 2>/dev/null
    done
    openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    echo 'admintoken,admin,admin,"system:masters"' > tokens.csv
    printf '%s\n' 'apiVersion: v1' 'kind: Config' \
      'clusters: [{name: c, cluster: {server: "https://127.0.0.1:16443", insecure-skip-tls-verify: true}}]' \
      'users: [{name: u, user: {token: admintoken}}]' 'contexts: [{name: x, context: {cluster: c, user: u}}]' 'current-context: x' > kc
  )
  local adv advflags
  adv=$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
  advflags="--advertise-address ${adv:-127.0.0.1}"; [ -n "$adv" ] || advflags="$advflags --endpoint-reconciler-type none"
  bg_in "$STACK_DIR" etcd.log $B/etcd --name m --data-dir etcd --listen-client-urls https://127.0.0.1:12379 --advertise-client-urls https://127.0.0.1:12379 \
    --listen-peer-urls https://127.0.0.1:12380 --initial-advertise-peer-urls https://127.0.0.1:12380 --initial-cluster m=https://127.0.0.1:12380 \
    --cert-file etcd.crt --key-file etcd.key --trusted-ca-file ca.crt --client-cert-auth \
    --peer-cert-file etcd.crt --peer-key-file etcd.key --peer-trusted-ca-file ca.crt --peer-client-cert-auth \
    --listen-metrics-urls http://127.0.0.1:12381
  stack_pids_arr=($!)
  # shellcheck disable=SC2086
  bg_in "$STACK_DIR" apiserver.log $B/kube-apiserver --etcd-servers https://127.0.0.1:12379 --etcd-cafile ca.crt --etcd-certfile client.crt --etcd-keyfile client.key \
    --secure-port 16443 --bind-address 127.0.0.1 $advflags --cert-dir apiserver \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
    --token-auth-file tokens.csv --authorization-mode Node,RBAC --service-cluster-ip-range 10.96.0.0/12
  stack_pids_arr+=($!)
  local late; late=$(echo "$(now) + 120" | bc)
  until [ "$(curl -sk -m 2 -H 'Authorization: Bearer admintoken' https://127.0.0.1:16443/readyz)" = ok ]; do
    [ "$(echo "$(now) > $late" | bc)" = 1 ] && { echo "refstack apiserver not ready in 120 s; logs in $STACK_DIR" >&2; return 1; }
    sleep 0.05
  done
  bg_in "$STACK_DIR" kcm.log $B/kube-controller-manager --kubeconfig kc --authentication-kubeconfig kc --authorization-kubeconfig kc \
    --bind-address 127.0.0.1 --secure-port 20257 --service-account-private-key-file sa.key --use-service-account-credentials \
    --leader-elect=true
  stack_pids_arr+=($!)
  bg_in "$STACK_DIR" sched.log $B/kube-scheduler --kubeconfig kc --authentication-kubeconfig kc --authorization-kubeconfig kc \
    --bind-address 127.0.0.1 --secure-port 20259 --leader-elect=true
  stack_pids_arr+=($!)
  stack_wait https://127.0.0.1:16443 -H 'Authorization: Bearer admintoken' || return 1
  STACK_KC=$STACK_DIR/kc
  STACK_PIDS=$(IFS=,; echo "${stack_pids_arr[*]}")
}

# stack_down: SIGTERM (k8s-master stops gracefully within 15 s), then
# SIGKILL whatever is left; the data stays for a failed run's post-mortem
# until the bench's own cleanup removes $work.
stack_down() {
  local p
  for p in "${stack_pids_arr[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${stack_pids_arr[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${stack_pids_arr[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  stack_pids_arr=() STACK_PIDS=""
}

# refstack_build: the four upstream binaries at this project's Kubernetes
# and etcd versions, cached in .cache/refstack-<version> (as bench-startup.sh).
refstack_build() {
  local src=${REFSTACK_DIR:-../shared/bench/refstack} k8sv
  [ -d "$src" ] || { echo "no refstack at $src; set REFSTACK_DIR (bench-startup.sh: or pass --no-refstack)" >&2; return 1; }
  k8sv=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
  refdir=.cache/refstack-$k8sv
  if [ ! -x $refdir/bin/kube-scheduler ]; then
    echo "building refstack $k8sv into $refdir (several minutes the first time)..." >&2
    mkdir -p .cache && rm -rf $refdir && cp -r "$src" $refdir && chmod -R u+w $refdir
    (cd $refdir && REFSTACK_BIN=$PWD/bin ./build.sh "$OLDPWD" >/dev/null)
  fi
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
