package cluster

import (
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/version"
)

func TestUpgradeProgress(t *testing.T) {
	old := version.Legacy
	cur := version.Versions{Release: "v0.2.0", Kubernetes: "v1.37.2", Etcd: "v3.7.0"}
	view := func(name string, v version.Versions) MemberView {
		return MemberView{MemberStatus: etcd.MemberStatus{Name: name}, Versions: v}
	}
	mixed, msg := upgradeProgress([]MemberView{view("m1", cur), view("m2", old), view("m3", old)})
	want := "mixed versions: m1 runs k8s-master v0.2.0 (Kubernetes v1.37.2, etcd v3.7.0); m2, m3 run k8s-master v0.1.0 (Kubernetes v1.36.3, etcd v3.6.8). Still to upgrade: m2, m3, one at a time"
	if !mixed || !strings.HasPrefix(msg, want) {
		t.Errorf("mixed %v, message:\n%s\nwant it to start with:\n%s", mixed, msg, want)
	}
	// The newest is found wherever it is listed.
	if _, msg := upgradeProgress([]MemberView{view("m1", old), view("m2", old), view("m3", cur)}); !strings.Contains(msg, "Still to upgrade: m1, m2,") {
		t.Errorf("message %q", msg)
	}
	if mixed, msg := upgradeProgress([]MemberView{view("m1", cur), view("m2", cur), view("m3", version.Versions{})}); mixed || msg != "" {
		t.Errorf("one version (and one unknown) reported as mixed: %q", msg)
	}
}
