// Package version names what this binary is: the k8s-master release users
// upgrade, and the Kubernetes and etcd versions it embeds.
package version

import (
	"fmt"
	"strings"

	etcdversion "go.etcd.io/etcd/api/v3/version"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	kubeversion "k8s.io/component-base/version"
)

// Release is the k8s-master release, set at build time
// (-X github.com/k8s-master/k8s-master/pkg/version.Release=v1.2.3).
var Release = "dev"

// Versions is what one master runs.
type Versions struct {
	Release    string `json:"release,omitempty"`
	Kubernetes string `json:"kubernetes,omitempty"`
	Etcd       string `json:"etcd,omitempty"`
}

// Local is this binary's versions.
func Local() Versions {
	return Versions{Release: Release, Kubernetes: kubeversion.Get().GitVersion, Etcd: "v" + etcdversion.Version}
}

// Legacy is what a master runs that registers no versions: only releases
// up to v0.1.0 did not, and they all embed Kubernetes 1.36 and etcd 3.6.
var Legacy = Versions{Release: "v0.1.0", Kubernetes: "v1.36.3", Etcd: "v3.6.8"}

// String is "k8s-master v0.2.0 (Kubernetes v1.37.2, etcd v3.7.0)".
func (v Versions) String() string {
	return fmt.Sprintf("k8s-master %s (Kubernetes %s, etcd %s)", orUnknown(v.Release), orUnknown(v.Kubernetes), orUnknown(v.Etcd))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// KubernetesMinor is "1.37" for v1.37.2, "" when the version is not a
// release's (a build without `make` carries v0.0.0-master).
func (v Versions) KubernetesMinor() string {
	k, ok := v.ParsedKubernetes()
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d.%d", k.Major(), k.Minor())
}

// ParsedKubernetes parses the Kubernetes version; ok is false for an
// unknown or unstamped one (major 0).
func (v Versions) ParsedKubernetes() (*utilversion.Version, bool) {
	k, err := utilversion.ParseGeneric(v.Kubernetes)
	if err != nil || k.Major() == 0 {
		return nil, false
	}
	return k, true
}

// ParsedRelease parses the release; ok is false for "dev" or a commit.
func (v Versions) ParsedRelease() (*utilversion.Version, bool) {
	r, err := utilversion.ParseSemantic(strings.TrimSpace(v.Release))
	if err != nil {
		return nil, false
	}
	return r, true
}

// Compare orders two masters' versions by Kubernetes version, then by
// release when both are releases: -1, 0 or 1. ok is false when either
// Kubernetes version is unknown.
func Compare(a, b Versions) (cmp int, ok bool) {
	ka, oka := a.ParsedKubernetes()
	kb, okb := b.ParsedKubernetes()
	if !oka || !okb {
		return 0, false
	}
	if c := order(ka, kb); c != 0 {
		return c, true
	}
	ra, oka := a.ParsedRelease()
	rb, okb := b.ParsedRelease()
	if !oka || !okb {
		return 0, true
	}
	return order(ra, rb), true
}

func order(a, b *utilversion.Version) int {
	switch {
	case a.LessThan(b):
		return -1
	case b.LessThan(a):
		return 1
	}
	return 0
}
