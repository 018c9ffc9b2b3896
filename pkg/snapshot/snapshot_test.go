package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// source is a running etcd with some keys and a data directory holding
// the identity files (made-up contents: Save only copies them).
func source(t *testing.T) (Source, int64) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{testkit.StartEtcd(t)}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rev int64
	for i := range 200 {
		resp, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/default/cm-%03d", i), strings.Repeat("v", 500))
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	c := config.Default()
	c.DataDir, c.Name = t.TempDir(), "m1"
	st := &config.State{ClusterID: "0123456789abcdef", EtcdClusterID: "e1", Config: c}
	for _, rel := range IdentityFiles() {
		path := filepath.Join(c.DataDir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		content := []byte("content of " + rel)
		if rel == (layout.Layout{}).State() {
			content, _ = json.Marshal(st)
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Source{Config: &c, State: st, Client: cli}, rev
}

func TestSaveVerifyList(t *testing.T) {
	src, rev := source(t)
	dir := filepath.Join(t.TempDir(), "snapshots")
	out := filepath.Join(dir, DefaultName(src.State.ClusterID, "m1", time.Now()))
	m, err := Save(context.Background(), src, out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Revision != rev || m.ClusterID != src.State.ClusterID || m.Master != "m1" || len(m.Members) != 1 || m.Files[0].Name != EtcdEntry || m.Files[0].Size < 100_000 {
		t.Errorf("manifest %+v; want revision %d, the cluster, one member, the etcd snapshot first", m, rev)
	}
	if len(m.DataFiles()) != len(IdentityFiles()) {
		t.Errorf("%d data files, want %d", len(m.DataFiles()), len(IdentityFiles()))
	}
	info, err := os.Stat(out)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("archive %v mode %v, want 0600", err, info)
	}
	got, err := Verify(out)
	if err != nil || got.Revision != rev {
		t.Fatalf("verify: %v %+v", err, got)
	}

	// A crash mid-write leaves only a dot-named partial file, which List
	// does not count; Save leaves nothing else behind.
	if err := os.WriteFile(filepath.Join(dir, "."+filepath.Base(out)+".partial-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	entries, err := List(dir)
	if err != nil || len(entries) != 1 || entries[0].Path != out || entries[0].Manifest == nil || entries[0].Manifest.Revision != rev {
		t.Fatalf("list: %v %+v", err, entries)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 2 {
		t.Errorf("snapshot directory holds %d entries, want the archive and the planted partial file", len(des))
	}
}

func TestVerifyRefusesDamage(t *testing.T) {
	src, _ := source(t)
	out := filepath.Join(t.TempDir(), "a"+Extension)
	if _, err := Save(context.Background(), src, out); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, data []byte) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "bad"+Extension)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(path)
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("%s: verify said %v, want a corruption error", name, err)
		}
	}
	// One byte flipped anywhere: headers, manifest, the etcd data, padding,
	// the end-of-archive blocks, the trailer.
	for _, at := range []int{0, 100, 600, 2000, len(good) / 3, len(good) / 2, len(good) - 1500, len(good) - 600, len(good) - 70, len(good) - 2} {
		bad := bytes.Clone(good)
		bad[at] ^= 0x01
		check(fmt.Sprintf("byte %d of %d flipped", at, len(good)), bad)
	}
	for _, n := range []int{0, 10, 512, len(good) / 2, len(good) - 66, len(good) - 1} {
		check(fmt.Sprintf("cut to %d bytes", n), good[:n])
	}
	check("bytes appended", append(bytes.Clone(good), "extra"...))
}

func TestVerifyRefusesNewerFormat(t *testing.T) {
	src, _ := source(t)
	out := filepath.Join(t.TempDir(), "a"+Extension)
	m, err := Save(context.Background(), src, out)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite it whole as a future version would: consistent checksums,
	// a format this build does not know.
	m.Format = Format + 1
	db := filepath.Join(t.TempDir(), "db")
	var data = map[string][]byte{}
	readBack := func(name string, r io.Reader) error {
		var b bytes.Buffer
		if _, err := b.ReadFrom(r); err != nil {
			return err
		}
		if name == EtcdEntry {
			return os.WriteFile(db, b.Bytes(), 0o600)
		}
		data[name] = b.Bytes()
		return nil
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Stat()
	if _, err := verify(out, f, info.Size(), readBack); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var buf bytes.Buffer
	if err := writeArchive(&buf, m, db, data); err != nil {
		t.Fatal(err)
	}
	future := filepath.Join(t.TempDir(), "future"+Extension)
	if err := os.WriteFile(future, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(future)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("archive format %d, newer than", Format+1)) {
		t.Errorf("verify of a newer format: %v", err)
	}
}

func TestLoadAndExtractEtcd(t *testing.T) {
	src, rev := source(t)
	out := filepath.Join(t.TempDir(), "a"+Extension)
	if _, err := Save(context.Background(), src, out); err != nil {
		t.Fatal(err)
	}
	c, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.ClusterID != src.State.ClusterID || c.Manifest.Revision != rev {
		t.Errorf("loaded state %+v, manifest revision %d; want cluster %s at %d", c.State, c.Manifest.Revision, src.State.ClusterID, rev)
	}
	for _, rel := range IdentityFiles() {
		want, _ := os.ReadFile(filepath.Join(src.Config.DataDir, rel))
		if !bytes.Equal(c.Files[rel], want) {
			t.Errorf("%s: loaded %q, want %q", rel, c.Files[rel], want)
		}
	}
	db := filepath.Join(t.TempDir(), "sub", "db")
	if err := c.ExtractEtcd(db); err != nil {
		t.Fatal(err)
	}
	if got, err := snapshotRevision(db); err != nil || got != rev {
		t.Errorf("extracted snapshot at revision %d (%v), want %d", got, err, rev)
	}
	if info, err := os.Stat(db); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("extracted snapshot: %v %v, want mode 0600", err, info)
	}

	// The archive damaged after Load: the extraction finds it and leaves
	// no file.
	data, _ := os.ReadFile(out)
	data[len(data)/2] ^= 1
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db2 := filepath.Join(t.TempDir(), "db")
	var ce *CorruptError
	if err := c.ExtractEtcd(db2); !errors.As(err, &ce) {
		t.Errorf("extract from a damaged archive: %v, want a corruption error", err)
	}
	if _, err := os.Stat(db2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed extraction left %s (%v)", db2, err)
	}
	if _, err := Load(out); !errors.As(err, &ce) {
		t.Errorf("load of a damaged archive: %v", err)
	}
}

func TestPacedSave(t *testing.T) {
	src, rev := source(t)
	out := filepath.Join(t.TempDir(), "paced"+Extension)
	full, err := Save(context.Background(), src, filepath.Join(t.TempDir(), "full"+Extension))
	if err != nil {
		t.Fatal(err)
	}
	// Two copies of the etcd snapshot go through the pacer (stream and
	// archive): at 1 MB/s a paced save takes at least size/rate.
	const rate = 1 << 20
	start := time.Now()
	m, err := save(context.Background(), src, out, rate)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if floor := time.Duration(float64(2*full.Files[0].Size) / rate * float64(time.Second) * 0.9); took < floor {
		t.Errorf("a paced save of %d bytes took %s, want at least %s at %d B/s", full.Files[0].Size, took, floor, rate)
	}
	if got, err := Verify(out); err != nil || got.Revision != rev || m.Revision != rev {
		t.Fatalf("the paced snapshot: %v, %+v", err, got)
	}

	// Cancelled midway: an error, and no file under the name.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cancelled := filepath.Join(t.TempDir(), "cancelled"+Extension)
	if _, err := save(ctx, src, cancelled, 1<<16); err == nil {
		t.Fatal("a cancelled save succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Dir(cancelled)); len(entries) != 0 {
		t.Errorf("a cancelled save left %d files", len(entries))
	}
}
