package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

func newMember(t *testing.T, dir string) *config.Config {
	c := config.Default()
	c.DataDir, c.Name, c.AdvertiseAddress = dir, "m1", "127.0.0.1"
	ports := testkit.FreePorts(t, 3)
	c.EtcdClientPort, c.EtcdPeerPort, c.EtcdMetricsPort = ports[0], ports[1], ports[2]
	if err := pki.CreateClusterSecrets(&c, time.Now()); err != nil {
		t.Fatal(err)
	}
	issueLeaves(t, &c)
	return &c
}

// issueLeaves makes c's leaf certificates from the CAs in its data
// directory.
func issueLeaves(t *testing.T, c *config.Config) {
	t.Helper()
	cas, err := pki.LoadClusterCAs(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.EnsureLeaves(c, cas, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// runReady launches a new one-member cluster of c, waits until it serves
// and returns it with a client; both are closed when the test ends.
func runReady(t *testing.T, c *config.Config, token string) (*Member, *clientv3.Client) {
	t.Helper()
	m, err := Launch(c, Options{ClusterState: "new", ClusterToken: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	cli, err := NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return m, cli
}

func runOnce(t *testing.T, c *config.Config, o Options) string {
	m, err := Launch(c, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := m.ClusterID()
	m.Close()
	return id
}

func TestStoredClusterIDMatchesRunningMember(t *testing.T) {
	c := newMember(t, t.TempDir())
	if _, err := StoredClusterID(c); !errors.Is(err, ErrNoData) {
		t.Fatalf("before the first start: err = %v, want ErrNoData", err)
	}
	id := runOnce(t, c, Options{ClusterState: "new", ClusterToken: "token-a"})
	got, err := StoredClusterID(c)
	if err != nil || got != id {
		t.Fatalf("StoredClusterID = %q, %v; the member reported %q", got, err, id)
	}
	// Restarting keeps the ID and the WAL stays readable.
	if again := runOnce(t, c, Options{ClusterState: "existing"}); again != id {
		t.Fatalf("cluster ID changed across restart: %s -> %s", id, again)
	}
	if got, _ := StoredClusterID(c); got != id {
		t.Fatalf("after restart StoredClusterID = %q, want %q", got, id)
	}

	// Same name, same peer URL, another token: another cluster ID.
	c2 := *c
	c2.DataDir = t.TempDir()
	if err := os.CopyFS(c2.Layout().PKIDir(), os.DirFS(c.Layout().PKIDir())); err != nil {
		t.Fatal(err)
	}
	if other := runOnce(t, &c2, Options{ClusterState: "new", ClusterToken: "token-b"}); other == id {
		t.Fatal("two clusters with different tokens got the same etcd cluster ID")
	}
}

func TestStoredClusterIDDamagedWAL(t *testing.T) {
	c := config.Default()
	c.DataDir = t.TempDir()
	walDir := c.Layout().EtcdWALDir()
	os.MkdirAll(walDir, 0o700)
	os.WriteFile(filepath.Join(walDir, "0000000000000000-0000000000000000.wal"), []byte("garbage that is not a WAL"), 0o600)
	if _, err := StoredClusterID(&c); err == nil || errors.Is(err, ErrNoData) {
		t.Fatalf("damaged WAL: err = %v, want a read error", err)
	}
}

func TestNewClusterNeedsToken(t *testing.T) {
	c := newMember(t, t.TempDir())
	if _, err := Launch(c, Options{ClusterState: "new"}); err == nil {
		t.Fatal("a new cluster started without a unique token")
	}
}

// The quota setting reaches etcd, and a member under NOSPACE is reported
// with its alarm yet healthy: it keeps its quorum and serves reads.
func TestQuotaAndNoSpace(t *testing.T) {
	c := newMember(t, t.TempDir())
	c.EtcdQuota = "16Mi"
	_, cli := runReady(t, c, "quota")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	value := strings.Repeat("x", 1<<20)
	for i := 0; ; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%d", i), value)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil || i > 40 {
			t.Fatalf("put %d: %v; want NOSPACE within 16 MiB", i, err)
		}
	}
	ms, err := Members(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].DBSizeQuota != 16<<20 || ms[0].Alarm != "NOSPACE" || !ms[0].Healthy || ms[0].Error != "" {
		t.Errorf("member under NOSPACE: %+v", ms)
	}
}
