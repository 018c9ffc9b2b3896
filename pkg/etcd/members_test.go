package etcd

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
)

// backend is where etcd keeps the member's database.
func backend(dir string) string { return filepath.Join(dir, "etcd", "member", "snap", "db") }

func TestStoredMembers(t *testing.T) {
	c := config.Default()
	c.DataDir = t.TempDir()
	testkit.WriteEtcdMembers(t, backend(c.DataDir), map[string]string{
		"a":  `{"id":10,"peerURLs":["https://10.0.0.1:2380"],"name":"m1","clientURLs":["https://10.0.0.1:2379"]}`,
		"b":  `{"id":11,"peerURLs":["https://10.0.0.2:2380"],"name":"m2","isLearner":true}`,
		"c0": `{"id":192,"peerURLs":["https://10.0.0.3:2380"],"name":"m3"}`,
	}, []string{"c0"})
	ms, err := StoredMembers(&c)
	if err != nil {
		t.Fatal(err)
	}
	want := []MemberInfo{{ID: 10, Name: "m1", ClientURLs: []string{"https://10.0.0.1:2379"}}, {ID: 11, Name: "m2", IsLearner: true}}
	if !reflect.DeepEqual(ms, want) {
		t.Errorf("members = %+v", ms)
	}
}

func TestStoredMembersInUse(t *testing.T) {
	c := config.Default()
	c.DataDir = t.TempDir()
	path := backend(c.DataDir)
	testkit.WriteEtcdMembers(t, path, map[string]string{"a": `{"id":10,"name":"m1"}`}, nil)
	db, err := bolt.Open(path, 0o600, nil) // holds the lock, as a running member does
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	if _, err := StoredMembers(&c); err == nil || !strings.Contains(err.Error(), "still runs this data directory") {
		t.Errorf("error = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestStoredMembersNoData(t *testing.T) {
	c := config.Default()
	c.DataDir = t.TempDir()
	if _, err := StoredMembers(&c); err == nil {
		t.Error("no error for a data directory without etcd data")
	}
}
