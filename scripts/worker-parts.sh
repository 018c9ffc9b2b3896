#!/usr/bin/env bash
# Builds what a worker host of the netns lab runs, into .cache/worker-parts/
# (ignored by git), each part only when it is missing, so a warm run takes
# about a second:
#
#   bin/kubelet bin/kubeadm          k8s.io/kubernetes at the version go.mod pins
#   bin/containerd bin/containerd-shim-runc-v2 bin/ctr
#                                    github.com/containerd/containerd/v2 $CONTAINERD_VERSION
#   cni/bridge cni/host-local cni/loopback cni/portmap
#                                    github.com/containernetworking/plugins $CNI_VERSION
#   images/pause.tar images/busybox.tar
#                                    OCI-layout archives made by test/tools/ociimage
#                                    (pause: test/tools/pause; busybox: Debian's busybox-static,
#                                    installed with apt-get when missing and run as root)
#   bin/kube-proxy-$K8S_VERSION images/kube-proxy-$K8S_VERSION.tar
#                                    k8s.io/kubernetes/cmd/kube-proxy, packed with the host's
#                                    iptables (xtables-nft-multi or -legacy-multi, its modules
#                                    and shared libraries) as $ADDON_REPOSITORY/kube-proxy:$K8S_VERSION
#   bin/coredns-$COREDNS_VERSION images/coredns-$COREDNS_VERSION.tar
#                                    github.com/coredns/coredns $COREDNS_VERSION with the plugins
#                                    of the cluster's Corefile, as $ADDON_REPOSITORY/coredns:$COREDNS_VERSION
#
# Everything is static (CGO_ENABLED=0) and nothing comes from an image
# registry; Go modules come through the module proxy. runc comes from Debian
# (.ci/run installs it): one built without libseccomp fails on the default
# seccomp profile. Progress goes to stderr; the directory is printed at the
# end. WORKER_PARTS, CONTAINERD_VERSION, CNI_VERSION and COREDNS_VERSION
# override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${WORKER_PARTS:-$ROOT/.cache/worker-parts}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_VERSION=${CNI_VERSION:-v1.10.0}
# Must match pkg/addons.CoreDNSVersion: the cluster asks for that tag.
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
# The names containerd knows the images by (scripts/netns-lab.sh pins the
# pause image as the sandbox image; test/worker_test.go runs busybox).
PAUSE_IMAGE=localhost/k8s-master-lab/pause:1
BUSYBOX_IMAGE=localhost/k8s-master-lab/busybox:1
# The lab's --image-repository: the add-on images are named the way the
# cluster asks for them under it (pkg/addons: REPO/kube-proxy:K8S_VERSION,
# REPO/coredns:COREDNS_VERSION for a repository other than registry.k8s.io).
ADDON_REPOSITORY=localhost/k8s-master-lab
K8S_VERSION=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
# -mod=mod only where go.sum may grow: the throwaway kubernetes module and
# go install; never for the project's own module.
export CGO_ENABLED=0
NICE=(nice -n 10)
mkdir -p "$OUT/bin" "$OUT/cni" "$OUT/images" "$OUT/src"
start=$(date +%s)

step() { echo "worker-parts: $*" >&2; }

# Kubernetes needs its staging replaces, which `go install pkg@version`
# ignores, and building from the project's module would add kubelet's
# dependencies to its go.sum: a throwaway module with the project's go.mod
# (same replaces, same versions) builds them instead.
build_k8s() {
  local src=$OUT/src/kubernetes minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  mkdir -p "$src"
  sed 's|^module .*|module worker-parts/kubernetes|' go.mod >"$src/go.mod"
  cp go.sum "$src/go.sum"
  local v=k8s.io/component-base/version
  local ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  local cmd
  for cmd in "$@"; do
    step "building $cmd $K8S_VERSION"
    (cd "$src" && GOFLAGS=-mod=mod "${NICE[@]}" go build -trimpath -tags grpcnotrace -ldflags "$ldflags" -o "$OUT/bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$OUT/bin/$cmd.tmp" "$OUT/bin/$cmd"
  done
}

# go install PKG@VERSION builds with the module's own go.mod, as its
# release does.
install_to() {
  local dir=$1 ldflags=$2
  shift 2
  step "building $*"
  GOBIN="$dir" GOFLAGS=-mod=mod "${NICE[@]}" go install -trimpath -ldflags "-s -w $ldflags" "$@"
}

missing() {
  local f
  for f in "$@"; do [ -x "$f" ] || [ -f "$f" ] || return 0; done
  return 1
}

if missing "$OUT/bin/kubelet" "$OUT/bin/kubeadm"; then
  build_k8s kubelet kubeadm
fi

if missing "$OUT/bin/containerd" "$OUT/bin/containerd-shim-runc-v2" "$OUT/bin/ctr"; then
  m=github.com/containerd/containerd/v2
  install_to "$OUT/bin" "-X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Package=$m" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION"
fi

if missing "$OUT/cni/bridge" "$OUT/cni/host-local" "$OUT/cni/loopback" "$OUT/cni/portmap"; then
  m=github.com/containernetworking/plugins
  install_to "$OUT/cni" "-X $m/pkg/utils/buildversion.BuildVersion=$CNI_VERSION" \
    "$m/plugins/main/bridge@$CNI_VERSION" "$m/plugins/ipam/host-local@$CNI_VERSION" \
    "$m/plugins/main/loopback@$CNI_VERSION" "$m/plugins/meta/portmap@$CNI_VERSION"
fi

if missing "$OUT/images/pause.tar" "$OUT/images/busybox.tar"; then
  step "building the pause and busybox images"
  static_busybox() { [ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked'; }
  if ! static_busybox && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing Debian's busybox-static"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2; }
  fi
  if ! static_busybox; then
    echo "worker-parts: needs Debian's busybox-static (apt-get install busybox-static; .ci/run does)" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "${NICE[@]}" go build -trimpath -ldflags '-s -w' -o "$tmp/pause" ./test/tools/pause
  "${NICE[@]}" go build -trimpath -o "$tmp/ociimage" ./test/tools/ociimage
  "$tmp/ociimage" -name "$PAUSE_IMAGE" -o "$OUT/images/pause.tar.tmp" \
    -file "/pause=$tmp/pause" -entrypoint /pause
  links=()
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || links+=(-symlink "/bin/$applet=busybox")
  done
  "$tmp/ociimage" -name "$BUSYBOX_IMAGE" -o "$OUT/images/busybox.tar.tmp" \
    -file /bin/busybox=/bin/busybox "${links[@]}" -entrypoint /bin/sh
  mv "$OUT/images/pause.tar.tmp" "$OUT/images/pause.tar"
  mv "$OUT/images/busybox.tar.tmp" "$OUT/images/busybox.tar"
fi

# Keyed by version, as its image is: a new k8s.io/kubernetes in go.mod
# builds a new one.
if missing "$OUT/bin/kube-proxy-$K8S_VERSION"; then
  build_k8s kube-proxy
  mv "$OUT/bin/kube-proxy" "$OUT/bin/kube-proxy-$K8S_VERSION"
fi

# kube-proxy in iptables mode runs iptables, iptables-save and
# iptables-restore: the image carries the host's (Debian's) iptables, the
# backend the host uses by default, with its extension modules (dlopened,
# so ldd of the binary does not name them) and every library ldd names.
if missing "$OUT/images/kube-proxy-$K8S_VERSION.tar"; then
  step "packing kube-proxy $K8S_VERSION with the host's iptables"
  multi=$(readlink -f "$(command -v iptables)")
  case "$multi" in
  */xtables-nft-multi | */xtables-legacy-multi) ;;
  *) echo "worker-parts: iptables is $multi, want Debian's xtables-nft-multi or xtables-legacy-multi (apt-get install iptables)" >&2; exit 1 ;;
  esac
  # Where libxtables looks for its modules: beside it, under the /usr path
  # it was built with (on a merged-/usr host ldd names the /lib alias).
  xtdir=$(readlink -f "$(dirname "$(ldd "$multi" | awk '/libxtables/ {print $3}')")/xtables")
  [ -d "$xtdir" ] || { echo "worker-parts: no iptables modules in $xtdir" >&2; exit 1; }
  files=(-file "/usr/local/bin/kube-proxy=$OUT/bin/kube-proxy-$K8S_VERSION" -file "/usr/sbin/$(basename "$multi")=$multi")
  for m in "$xtdir"/*.so; do files+=(-file "$m=$m"); done
  # Each library under the path the loader looks for it at (ldd's left
  # column is the soname, its right column where this host keeps it).
  while read -r lib; do files+=(-file "$lib=$(readlink -f "$lib")"); done < <(
    { ldd "$multi"; for m in "$xtdir"/*.so; do ldd "$m"; done; } | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
  for f in /etc/protocols /etc/services /etc/ethertypes; do [ -f "$f" ] && files+=(-file "$f=$f"); done
  links=()
  for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    links+=(-symlink "/usr/sbin/$l=$(basename "$multi")")
  done
  tmp=$(mktemp -d)
  "${NICE[@]}" go build -trimpath -o "$tmp/ociimage" ./test/tools/ociimage
  "$tmp/ociimage" -name "$ADDON_REPOSITORY/kube-proxy:$K8S_VERSION" -o "$OUT/images/kube-proxy-$K8S_VERSION.tar.tmp" \
    "${files[@]}" "${links[@]}" -entrypoint /usr/local/bin/kube-proxy
  rm -rf "$tmp"
  mv "$OUT/images/kube-proxy-$K8S_VERSION.tar.tmp" "$OUT/images/kube-proxy-$K8S_VERSION.tar"
fi

# CoreDNS's own main imports all of its ~60 plugins (cloud DNS SDKs among
# them); the lab's build imports the plugins the cluster's Corefile uses
# from the same module at the same version, so it builds in a fraction of
# the time. A throwaway module keeps CoreDNS out of the project's go.sum.
if missing "$OUT/bin/coredns-$COREDNS_VERSION"; then
  step "building coredns $COREDNS_VERSION"
  src=$OUT/src/coredns
  mkdir -p "$src"
  printf 'module worker-parts/coredns\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$src/go.mod"
  {
    echo '// The CoreDNS of the worker lab: the plugins of the Corefile pkg/addons writes.'
    echo 'package main'
    echo 'import ('
    echo '	_ "github.com/coredns/coredns/core/dnsserver"'
    echo '	"github.com/coredns/coredns/coremain"'
    for p in errors log health ready kubernetes metrics forward cache loop reload loadbalance; do
      echo "	_ \"github.com/coredns/coredns/plugin/$p\""
    done
    echo ')'
    echo 'func main() { coremain.Run() }'
  } >"$src/main.go"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >&2 && GOFLAGS=-mod=mod "${NICE[@]}" go build -trimpath -ldflags '-s -w' -o "$OUT/bin/coredns-$COREDNS_VERSION.tmp" .)
  mv "$OUT/bin/coredns-$COREDNS_VERSION.tmp" "$OUT/bin/coredns-$COREDNS_VERSION"
fi

if missing "$OUT/images/coredns-$COREDNS_VERSION.tar"; then
  tmp=$(mktemp -d)
  "${NICE[@]}" go build -trimpath -o "$tmp/ociimage" ./test/tools/ociimage
  "$tmp/ociimage" -name "$ADDON_REPOSITORY/coredns:$COREDNS_VERSION" -o "$OUT/images/coredns-$COREDNS_VERSION.tar.tmp" \
    -file "/coredns=$OUT/bin/coredns-$COREDNS_VERSION" -entrypoint /coredns
  rm -rf "$tmp"
  mv "$OUT/images/coredns-$COREDNS_VERSION.tar.tmp" "$OUT/images/coredns-$COREDNS_VERSION.tar"
fi

step "ready in $(($(date +%s) - start)) s: kubelet/kubeadm $K8S_VERSION, containerd $CONTAINERD_VERSION, CNI plugins $CNI_VERSION, kube-proxy $K8S_VERSION, coredns $COREDNS_VERSION"
echo "$OUT"
