package reset

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
)

// stoppedMaster makes a data directory as a stopped master of a cluster
// with the given etcd members leaves it: state, a WAL segment and the
// membership in etcd's database (no PKI, so no live etcd can answer).
func stoppedMaster(t *testing.T, members ...string) string {
	t.Helper()
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.Name, c.AdvertiseAddress, c.EtcdClientPort = "m1", "127.0.0.1", 1 // nothing listens on port 1
	wal := c.Layout().EtcdWALDir()
	if err := os.MkdirAll(wal, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wal, "0000000000000000-0000000000000000.wal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := config.WriteState(c.Layout().State(), &config.State{ClusterID: "c1", CAPin: "sha256:00", Config: c}); err != nil {
		t.Fatal(err)
	}
	ms := map[string]string{}
	for i, name := range members {
		ms[fmt.Sprintf("%x", i+1)] = fmt.Sprintf(`{"id":%d,"name":%q}`, i+1, name)
	}
	testkit.WriteEtcdMembers(t, c.Layout().EtcdBackend(), ms, nil)
	return c.DataDir
}

func reset(t *testing.T, dir string, yes, force bool) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), Options{DataDir: dir, Yes: yes, Force: force, Out: &out, In: strings.NewReader("y\n")})
	return out.String(), err
}

func TestResetSingleMember(t *testing.T) {
	dir := stoppedMaster(t, "m1")
	// Not a terminal and no --yes: refused, nothing removed.
	if _, err := reset(t, dir, false, false); err == nil || !strings.Contains(err.Error(), "; pass yes to confirm") {
		t.Errorf("unconfirmed reset: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Fatal("unconfirmed reset removed data")
	}
	out, err := reset(t, dir, true, false)
	if err != nil || !strings.Contains(out, "removed "+dir) {
		t.Fatalf("reset --yes: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory still there: %v", err)
	}
}

func TestResetRefusesMultiMember(t *testing.T) {
	dir := stoppedMaster(t, "m1", "m2", "m3")
	_, err := reset(t, dir, true, false)
	// Stopped: it cannot leave (that needs its member running), so reset
	// refuses and says how to go on.
	if err == nil || !strings.Contains(err.Error(), "one of 3 in its cluster") || !strings.Contains(err.Error(), "member remove m1") || !strings.Contains(err.Error(), "; force resets anyway") {
		t.Fatalf("reset of a multi-master member: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Fatal("refused reset removed data")
	}
	out, err := reset(t, dir, true, true)
	if err != nil || !strings.Contains(out, "warning: could not leave the cluster") {
		t.Fatalf("reset --force: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory still there after --force: %v", err)
	}
}

func TestResetMissingDataDir(t *testing.T) {
	out, err := reset(t, filepath.Join(t.TempDir(), "none"), false, false)
	if err != nil || !strings.Contains(out, "nothing to reset") {
		t.Errorf("%v %s", err, out)
	}
}

// A master that holds the data directory's lock runs it, whatever its etcd
// says: reset refuses.
func TestResetRefusesRunningMaster(t *testing.T) {
	dir := stoppedMaster(t, "m1")
	lock, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	_, err = reset(t, dir, true, false)
	if err == nil || !strings.Contains(err.Error(), "still runs") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("reset of a running master: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Fatal("refused reset removed data")
	}
}
