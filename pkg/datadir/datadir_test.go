package datadir

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func cfg(dir string) *config.Config {
	c := config.Default()
	c.DataDir = dir
	return &c
}

func touch(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInspect(t *testing.T) {
	t.Run("missing directory is empty", func(t *testing.T) {
		got, err := Inspect(cfg(filepath.Join(t.TempDir(), "nope")))
		if err != nil || got.State != nil || got.Incomplete || len(got.Foreign) != 0 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("logs only is empty", func(t *testing.T) {
		d := t.TempDir()
		touch(t, d, "k8s-master.log", "k8s-master-2026-11-01T10-00-00.000.log.gz")
		got, err := Inspect(cfg(d))
		if err != nil || len(got.Foreign) != 0 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("initialised", func(t *testing.T) {
		d := t.TempDir()
		c := cfg(d)
		if err := config.WriteState(c.Layout().State(), &config.State{ClusterID: "x", CAPin: "sha256:1"}); err != nil {
			t.Fatal(err)
		}
		got, err := Inspect(c)
		if err != nil || got.State == nil || got.State.ClusterID != "x" {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("interrupted init", func(t *testing.T) {
		d := t.TempDir()
		touch(t, d, initMarker, "admin.kubeconfig")
		os.Mkdir(filepath.Join(d, "pki"), 0o700)
		got, err := Inspect(cfg(d))
		if err != nil || !got.Incomplete || len(got.Foreign) != 0 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("interrupted init plus foreign files", func(t *testing.T) {
		d := t.TempDir()
		touch(t, d, initMarker, "admin.kubeconfig", "notes.txt")
		got, err := Inspect(cfg(d))
		if err != nil || !got.Incomplete || !slices.Equal(got.Foreign, []string{"notes.txt"}) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("cluster files without state are foreign", func(t *testing.T) {
		d := t.TempDir()
		os.Mkdir(filepath.Join(d, "etcd"), 0o700)
		touch(t, d, "admin.kubeconfig")
		got, err := Inspect(cfg(d))
		if err != nil || got.Incomplete || !slices.Equal(got.Foreign, []string{"admin.kubeconfig", "etcd"}) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func TestRemoveOwnEntriesKeepsOthers(t *testing.T) {
	d := t.TempDir()
	touch(t, d, initMarker, "admin.kubeconfig", "state.json", "notes.txt", "k8s-master.log")
	os.MkdirAll(filepath.Join(d, "pki", "etcd"), 0o700)
	if err := RemoveOwnEntries(d); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(d)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if !slices.Equal(left, []string{"k8s-master.log", "notes.txt"}) {
		t.Fatalf("left %v", left)
	}
}
