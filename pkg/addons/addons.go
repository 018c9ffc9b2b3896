// Package addons is what makes a cluster's Services and DNS names work on
// its workers: the kube-proxy DaemonSet and CoreDNS, with their
// configuration and RBAC, as kubeadm installs them. The leader among the
// masters applies them with server-side apply under a field manager of its
// own, and again whenever what it would apply changes (a new master
// version, another image repository, a changed setting), so that an
// upgraded control plane upgrades its add-ons.
package addons

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The add-ons, by the names --disable-addon takes.
const (
	KubeProxy = "kube-proxy"
	CoreDNS   = "coredns"
	// NodeAgent keeps stock kubelets in step with the cluster CAs
	// (pkg/nodeagent).
	NodeAgent = "node-agent"
)

// Names are the known add-ons in the order they are applied (kube-proxy
// first: CoreDNS reaches the apiserver through the kubernetes Service).
var Names = []string{KubeProxy, CoreDNS, NodeAgent}

// CoreDNSVersion is the CoreDNS image tag the cluster runs (the lab builds
// this version: scripts/worker-parts.sh).
const CoreDNSVersion = "v1.15.0"

// DefaultImageRepository is where images come from unless
// --image-repository names a mirror.
const DefaultImageRepository = "registry.k8s.io"

// FieldManager owns the fields the add-on manager applies; fields of the
// objects it does not set stay whoever's set them.
const FieldManager = "k8s-master-addons"

// Labels on every object the manager applies: AddonLabel names the
// add-on, so that disabling it deletes only what the manager made.
const (
	AddonLabel   = "k8s-master.io/addon"
	ManagedByKey = "app.kubernetes.io/managed-by"
	ManagedBy    = "k8s-master"
)

// ConfigHashAnnotation on a pod template is the hash of the
// configuration its pods read at start, so that a new one rolls them.
const ConfigHashAnnotation = "k8s-master.io/config-hash"

// dataHash is a ConfigMap's data in a few hex digits.
func dataHash(data map[string]string) string {
	keys := slices.Sorted(maps.Keys(data))
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%q\n", k, data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Settings are what the add-ons are made from.
type Settings struct {
	// KubernetesVersion is the control plane's ("v1.37.2"): kube-proxy's
	// image tag.
	KubernetesVersion string
	// Release is the masters' k8s-master release: the node agent's image
	// tag.
	Release         string
	ImageRepository string
	// APIServer is the URL kube-proxy reaches the apiserver at (the VIP
	// when there is one): it cannot use the kubernetes Service, which
	// only works once kube-proxy runs.
	APIServer     string
	ServiceCIDR   string
	PodCIDR       string
	ClusterDomain string
	// ClusterDNS is the address of CoreDNS's Service.
	ClusterDNS string
	// Disabled are add-ons the cluster does not run (another proxy or
	// DNS takes their place).
	Disabled []string
}

// Enabled tells whether the add-on runs.
func (s Settings) Enabled(name string) bool { return !slices.Contains(s.Disabled, name) }

// KubeProxyImage is kube-proxy's image: the control plane's version, from
// the image repository.
func (s Settings) KubeProxyImage() string {
	return repo(s.ImageRepository) + "/kube-proxy:" + s.KubernetesVersion
}

// CoreDNSImage follows kubeadm: registry.k8s.io keeps CoreDNS under
// coredns/coredns, a mirror (--image-repository) under coredns.
func (s Settings) CoreDNSImage() string {
	r := repo(s.ImageRepository)
	if r == DefaultImageRepository {
		return r + "/coredns/coredns:" + CoreDNSVersion
	}
	return r + "/coredns:" + CoreDNSVersion
}

func repo(r string) string {
	if r == "" {
		return DefaultImageRepository
	}
	return strings.TrimSuffix(r, "/")
}

// CheckName says what is wrong with an --disable-addon value, nil if it
// names an add-on.
func CheckName(name string) error {
	if slices.Contains(Names, name) {
		return nil
	}
	return fmt.Errorf("unknown add-on %q; the add-ons are %s", name, strings.Join(Names, ", "))
}

// Hash identifies what the manager would apply: the objects of the
// enabled add-ons (images, configuration, addresses) and which are
// disabled. A change of any of them changes the hash, which makes the
// leader apply again.
func Hash(s Settings) (string, error) {
	h := sha256.New()
	for _, name := range Names {
		if !s.Enabled(name) {
			fmt.Fprintf(h, "disabled %s\n", name)
			continue
		}
		objs, err := objectsOf(name, s)
		if err != nil {
			return "", err
		}
		for _, o := range objs {
			b, err := json.Marshal(o.config)
			if err != nil {
				return "", fmt.Errorf("encode %s %s: %w", o.kind, o.name, err)
			}
			fmt.Fprintf(h, "%s %s/%s ", o.kind, o.namespace, o.name)
			h.Write(b)
			h.Write([]byte("\n"))
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
