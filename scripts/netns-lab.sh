#!/usr/bin/env bash
# A lab of separate hosts on one machine: N master namespaces and a client
# namespace, each with an eth0 on one bridge (held by a switch namespace),
# addresses in 10.99.0.0/24, no route out: test traffic never leaves the
# namespaces this script made (test/lab_test.go drives it).
#
#   scripts/netns-lab.sh up N      masters PREFIXm1..PREFIXmN (10.99.0.11..),
#                                  client PREFIXc (10.99.0.100), switch PREFIXsw
#   scripts/netns-lab.sh down      remove everything with the prefix
#   scripts/netns-lab.sh cut I     move master I's port to an isolated bridge
#   scripts/netns-lab.sh heal I    move it back
#   scripts/netns-lab.sh run I CMD...  run CMD in master I's namespace with
#                                  its own hostname (m<I>); I=c: the client
#   scripts/netns-lab.sh worker I PARTS  worker host PREFIXwI (10.99.0.6I, pods
#                                  10.244.I.0/24, hostname w<I>) running the
#                                  parts of scripts/worker-parts.sh (dir PARTS)
#   scripts/netns-lab.sh wrun I CMD...  run CMD on worker I: its network, mount
#                                  and UTS namespaces, PARTS/bin first in PATH
#   scripts/netns-lab.sh wrm I     kill worker I's processes and pods, unmount,
#                                  remove its files and cgroups
#
# PREFIX comes from $LAB_PREFIX (default "km-"); tests use their own.
#
# A worker is a host of its own as far as a kubelet can tell: its mount
# namespace (kept in a file, so wrun enters the same one) has private
# /etc/kubernetes, /var/lib/kubelet, /run/containerd, ... bind-mounted from
# /var/tmp/PREFIXlab/wI/root, so kubeadm, kubelet and containerd use their
# standard paths and everything they mount dies with the namespace. The lab
# writes containerd's config (sandbox image = the local pause image, Debian's
# runc, restrict_oom_score_adj because this machine's root lacks
# CAP_SYS_RESOURCE), a bridge CNI config and /var/lib/kubelet/config.yaml
# for a kubelet joining without kubeadm (the settings of the cluster's
# kubelet-config: webhook authn/authz, client certificate rotation, serving
# certificate from a kubelet-serving CSR) with what only this machine needs (cgroup v1 allowed, cgroupfs driver, a
# cgroup root per worker so two kubelets never clean up each other's pods);
# kubeadm join can apply the same through /etc/kubernetes/lab-patches.
# Routes between workers carry pod traffic by pod IP.
set -euo pipefail
P=${LAB_PREFIX:-km-}
SW=${P}sw
NET=10.99.0
WORKERS=/var/tmp/${P}lab
PAUSE_IMAGE=localhost/k8s-master-lab/pause:1
# What a worker's mount namespace makes private (bind mounts from its root).
WORKER_DIRS="/etc/kubernetes /etc/containerd /etc/cni /opt/cni/bin /var/lib/kubelet /var/lib/containerd /var/lib/cni /run/containerd /run/netns /var/log/pods /var/log/containers"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  local n=$1
  [ "$n" -ge 1 ] && [ "$n" -le 9 ] || { echo "N must be 1-9" >&2; exit 2; }
  ns_exists "$SW" && { echo "lab ${P} already up; run: $0 down" >&2; exit 1; }
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link add br1 type bridge # the far side of a partition
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set br1 up
  local i
  for i in $(seq 1 "$n"); do host "m$i" "$NET.$((10 + i))"; done
  host c "$NET.100"
}

# host NAME ADDR: a namespace with eth0 on br0.
host() {
  local ns=${P}$1 port=${P}v$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$port" type veth peer name eth0 netns "$ns"
  ip link set "$port" netns "$SW"
  ip -n "$SW" link set "$port" master br0 up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
}

worker() {
  local i=$1 parts=$2
  [ "$i" -ge 1 ] && [ "$i" -le 9 ] || { echo "worker I must be 1-9" >&2; exit 2; }
  ns_exists "$SW" || { echo "lab ${P} is not up; run: $0 up N" >&2; exit 1; }
  [ -x "$parts/bin/kubelet" ] || { echo "no kubelet in $parts/bin; run scripts/worker-parts.sh" >&2; exit 1; }
  local runc w=$WORKERS/w$i d j
  runc=$(command -v runc) || { echo "worker hosts need Debian's runc: apt-get install runc" >&2; exit 1; }
  [ -e "$w" ] && { echo "worker $i exists; run: $0 wrm $i" >&2; exit 1; }
  host "w$i" "$NET.$((60 + i))"
  ip netns exec "${P}w$i" sysctl -qw net.ipv4.ip_forward=1
  # Pod routes: every worker reaches every other worker's pod range.
  for d in "$WORKERS"/w*; do
    j=${d##*/w}
    [ "$j" = "$i" ] && continue
    [ -d "$d" ] || continue
    ip -n "${P}w$i" route add "10.244.$j.0/24" via "$NET.$((60 + j))"
    # replace: a worker made again after wrm finds its old route there.
    ip -n "${P}w$j" route replace "10.244.$i.0/24" via "$NET.$((60 + i))"
  done
  # The masters and the client host reach the worker's pods too, as hosts
  # on a CNI's network do: pods talk to the apiserver through the
  # kubernetes Service, which kube-proxy sends to a master with the pod's
  # address as the source.
  for d in /run/netns/"${P}"m* /run/netns/"${P}"c; do
    [ -e "$d" ] && ip -n "${d##*/}" route replace "10.244.$i.0/24" via "$NET.$((60 + i))"
  done
  mkdir -p "$w/ns"
  echo "$parts" >"$w/parts"
  for d in $WORKER_DIRS; do mkdir -p "$w/root$d" "$d"; done
  cp "$parts"/cni/* "$w/root/opt/cni/bin/"
  worker_cgroups "$i" create
  worker_configs "$i" "$runc"
  # A persistent namespace is bound to a file on a private mount.
  mount --bind "$w/ns" "$w/ns"
  mount --make-private "$w/ns"
  touch "$w/ns/mnt" "$w/ns/uts"
  # The kubelet sets machine-wide sysctls (overcommit, panic on oops, ...)
  # that differ from what it wants; in the worker it reads them from files
  # that already hold its values, so the machine keeps its own.
  mkdir -p "$w/sysctl"
  local kv
  for kv in vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1 \
    kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000; do
    echo "${kv#*=}" >"$w/sysctl/${kv%=*}"
  done
  unshare --mount="$w/ns/mnt" --uts="$w/ns/uts" --propagation private sh -c '
    hostname "$1"; w=$2; shift 2
    for d in "$@"; do mount --bind "$w/root$d" "$d"; done
    for f in "$w"/sysctl/*; do
      mount --bind "$f" "/proc/sys/$(echo "${f##*/}" | tr . /)"
    done' sh "w$i" "$w" $WORKER_DIRS
}

# worker_cgroups I create|remove: the cgroup root of worker I's kubelet in
# every hierarchy: the v1 ones, and the v2 one a hybrid host mounts at
# unified/, where runc mirrors the pods' cgroups.
worker_cgroups() {
  local h cg
  for h in /sys/fs/cgroup/*/; do
    case $(stat -fc %T "$h") in cgroupfs | cgroup2fs) ;; *) continue ;; esac
    cg=$h${P}w$1
    if [ "$2" = create ]; then
      mkdir -p "$cg"
      # A new cpuset cgroup starts with no CPUs and no memory nodes.
      if [ -f "$cg/cpuset.cpus" ]; then
        cat "$h/cpuset.cpus" >"$cg/cpuset.cpus"
        cat "$h/cpuset.mems" >"$cg/cpuset.mems"
      fi
    elif [ -d "$cg" ]; then
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    fi
  done
}

worker_configs() {
  local i=$1 runc=$2 r=$WORKERS/w$1/root
  mkdir -p "$r/etc/containerd" "$r/var/lib/kubelet/pki" "$r/etc/kubernetes/pki" "$r/etc/kubernetes/lab-patches"
  cat >"$r/etc/containerd/config.toml" <<EOC
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = "/etc/cni/net.d"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$runc"
  SystemdCgroup = false
EOC
  mkdir -p "$r/etc/cni/net.d"
  cat >"$r/etc/cni/net.d/10-lab.conflist" <<EOC
{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$i.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOC
  # Only this machine needs these: cgroup v1 (kubelet 1.35+ refuses it
  # otherwise), no systemd as PID 1, a cgroup root per worker, no swap
  # check, and eviction thresholds that a busy shared disk does not trip.
  cat >"$r/etc/kubernetes/lab-patches/kubeletconfiguration+merge.yaml" <<EOC
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /${P}w$i
failSwapOn: false
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOC
  cat >"$r/var/lib/kubelet/config.yaml" <<EOC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
rotateCertificates: true
serverTLSBootstrap: true
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: /var/log/pods
EOC
  cat "$r/etc/kubernetes/lab-patches/kubeletconfiguration+merge.yaml" >>"$r/var/lib/kubelet/config.yaml"
}

# wrm I: processes first (the netns holds kubelet, containerd and the
# shims; the cgroup root holds the pods), then the namespaces, whose end
# takes every mount made inside them along.
wrm() {
  local i=$1 w=$WORKERS/w$1 h round
  for round in 1 2 3; do
    ip netns pids "${P}w$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    for h in /sys/fs/cgroup/*/${P}w$i; do
      [ -d "$h" ] && find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
    sleep 0.2
  done
  if [ -d "$w/ns" ]; then
    umount "$w/ns/mnt" 2>/dev/null || true
    umount "$w/ns/uts" 2>/dev/null || true
    umount "$w/ns" 2>/dev/null || true
  fi
  worker_cgroups "$i" remove
  ip netns del "${P}w$i" 2>/dev/null || true
  # Only when nothing is mounted there any more: rm must never cross into
  # a mount.
  if [ -d "$w" ] && ! grep -q " $w[/ ]" /proc/self/mounts; then
    rm -rf "$w"
  fi
}

wrun() {
  local i=$1 w=$WORKERS/w$1
  shift
  [ -f "$w/ns/mnt" ] || { echo "no worker $i; run: $0 worker $i PARTS" >&2; exit 1; }
  PATH=$(cat "$w/parts")/bin:$PATH exec nsenter --mount="$w/ns/mnt" --uts="$w/ns/uts" --net="/run/netns/${P}w$i" -- "$@"
}

down() {
  local ns d
  for d in "$WORKERS"/w*; do
    [ -d "$d" ] && wrm "${d##*/w}"
  done
  rmdir "$WORKERS" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^${P}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

case ${1:-} in
  up) up "${2:?N}" ;;
  down) down ;;
  worker) worker "${2:?I}" "$(cd "${3:?PARTS}" && pwd)" ;;
  wrun)
    i=${2:?I}; shift 2
    wrun "$i" "$@"
    ;;
  wrm) wrm "${2:?I}" ;;
  cut) ip -n "$SW" link set "${P}vm${2:?I}" master br1 ;;
  heal) ip -n "$SW" link set "${P}vm${2:?I}" master br0 ;;
  run)
    i=${2:?I}; shift 2
    host=m$i
    [ "$i" = c ] && host=c
    exec ip netns exec "${P}$host" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$host" "$@"
    ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
