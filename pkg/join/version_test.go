package join

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// TestAdmitRefusesJoinerVersions: a joiner older than a registered master,
// or two minors ahead, is refused before any member is added.
func TestAdmitRefusesJoinerVersions(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	registered := version.Versions{Release: "v0.3.0", Kubernetes: "v1.38.0", Etcd: "v3.7.0"}
	// The only member is embed's default name.
	if err := NewStore(cli, nil).RegisterMaster(ctx, MasterInfo{Name: embed.DefaultName, Versions: &registered}); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	s := NewServer(&c, &config.State{}, cli, nil)
	for _, tc := range []struct {
		joiner *version.Versions
		want   string
	}{
		{&version.Versions{Release: "v0.2.0", Kubernetes: "v1.37.2"}, "does not go back"},
		{nil, "does not go back"}, // a v0.1.0 joiner sends no versions
		{&version.Versions{Release: "v0.5.0", Kubernetes: "v1.40.0"}, "upgrade every master to a v1.39 release first"},
	} {
		_, code, _, err := s.admit(ctx, &Request{Name: "m2", PeerURL: "https://10.0.0.2:2380", Versions: tc.joiner})
		if code != http.StatusPreconditionFailed || err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was added") {
			t.Errorf("joiner %v: %d %v, want 412 saying %q", tc.joiner, code, err, tc.want)
		}
	}
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 1 {
		t.Errorf("%d members after refused joins, want 1", len(resp.Members))
	}
}
