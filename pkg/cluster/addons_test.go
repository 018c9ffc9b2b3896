package cluster

import (
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/version"
)

func TestOtherVersions(t *testing.T) {
	v := func(k, r string) *version.Versions {
		return &version.Versions{Release: r, Kubernetes: k, Etcd: "v3.7.0"}
	}
	want := version.Versions{Kubernetes: "v1.37.2", Release: "v0.2.0"}
	same := []join.MasterInfo{{Name: "m1", Versions: v("v1.37.2", "v0.2.0")}, {Name: "m2", Versions: v("v1.37.2", "v0.2.0")}}
	if err := otherVersions(same, want); err != nil {
		t.Errorf("every master on v1.37.2, v0.2.0: %v", err)
	}
	mixed := []join.MasterInfo{{Name: "m1", Versions: v("v1.37.2", "v0.2.0")}, {Name: "m2", Versions: v("v1.38.0", "v0.2.0")}, {Name: "m3"},
		{Name: "m4", Versions: v("v1.37.2", "v0.3.0")}}
	err := otherVersions(mixed, want)
	if err == nil || !strings.Contains(err.Error(), "m2 runs v1.38.0") || !strings.Contains(err.Error(), "m3 runs "+version.Legacy.Kubernetes) ||
		!strings.Contains(err.Error(), "m4 runs k8s-master v0.3.0") || strings.Contains(err.Error(), "m1 runs") {
		t.Errorf("mixed masters: %v", err)
	}
}

func TestClusterDNS(t *testing.T) {
	c := config.Default()
	c.ServiceCIDR = "10.200.0.0/16"
	if got, err := clusterDNS(&c); err != nil || got != "10.200.0.10" {
		t.Errorf("default cluster DNS = %s, %v; want the range's 10th address 10.200.0.10", got, err)
	}
	c.ClusterDNS = "10.200.0.53"
	if got, err := clusterDNS(&c); err != nil || got != "10.200.0.53" {
		t.Errorf("--cluster-dns 10.200.0.53 = %s, %v", got, err)
	}
	// Given with start on a cluster whose recorded range does not hold it.
	c.ClusterDNS = "10.96.0.10"
	if _, err := clusterDNS(&c); err == nil || !strings.Contains(err.Error(), "outside the cluster's service range 10.200.0.0/16") {
		t.Errorf("--cluster-dns outside the recorded range: %v", err)
	}
}
