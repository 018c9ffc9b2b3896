package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// Source is the master a snapshot is taken of.
type Source struct {
	Config *config.Config
	State  *config.State
	// Client talks to the master's own etcd member.
	Client *clientv3.Client
}

// IdentityFiles are the data-directory files, relative to it, that make a
// restored cluster the same cluster: the shared secrets every master has
// and the recorded settings.
func IdentityFiles() []string {
	return append(append([]string(nil), join.SharedFiles...), layout.Layout{}.State())
}

// DefaultName is a new archive's file name: cluster, master and time.
func DefaultName(clusterID, master string, at time.Time) string {
	short := clusterID
	if len(short) > 8 {
		short = short[:8]
	}
	return fmt.Sprintf("k8s-master-%s-%s-%s%s", short, master, at.UTC().Format("20060102T150405.000Z"), Extension)
}

// Save writes an archive of the member's data and the cluster's identity
// to out: mode 0600, written under a temporary name and renamed once
// complete and verified, so a crash never leaves a partial file under
// out's name.
func Save(ctx context.Context, src Source, out string) (*Manifest, error) {
	return save(ctx, src, out, 0)
}

// save is Save at most rate bytes per second (0: as fast as the disk goes).
func save(ctx context.Context, src Source, out string, rate int64) (*Manifest, error) {
	dir := filepath.Dir(out)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot directory: %w", err)
	}
	created := time.Now().UTC()
	db, dbFile, err := saveEtcd(ctx, src.Client, dir, rate)
	if err != nil {
		return nil, err
	}
	defer os.Remove(db)
	rev, err := snapshotRevision(db)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		Format: Format, Created: created, Master: src.Config.Name,
		ClusterID: src.State.ClusterID, EtcdClusterID: src.State.EtcdClusterID,
		Versions: version.Local(), Revision: rev, Files: []File{dbFile},
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	members, err := src.Client.MemberList(mctx)
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	for _, mem := range members.Members {
		m.Members = append(m.Members, mem.Name)
	}
	data := map[string][]byte{}
	for _, rel := range IdentityFiles() {
		path := filepath.Join(src.Config.DataDir, rel)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s for the snapshot: %w", path, err)
		}
		info, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, File{Name: dataPrefix + rel, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Mode: uint32(info.Mode().Perm())})
		data[dataPrefix+rel] = b
	}

	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("snapshot file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return nil, err
	}
	if err := writeArchive(newPacedFile(ctx, tmp, rate), m, db, data); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if _, err := Verify(tmp.Name()); err != nil {
		return nil, fmt.Errorf("the snapshot just written does not verify (disk trouble?): %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, err
	}
	done = true
	return m, fsutil.SyncDir(dir)
}

// saveEtcd streams the member's snapshot into a temporary file in dir, at
// most rate bytes per second (0: no limit). The copy is not fsynced: it is
// read back into the archive at once, and the archive is.
func saveEtcd(ctx context.Context, cli *clientv3.Client, dir string, rate int64) (string, File, error) {
	f, err := os.CreateTemp(dir, ".etcd-snapshot-*.partial")
	if err != nil {
		return "", File{}, fmt.Errorf("snapshot file: %w", err)
	}
	keep := false
	defer func() {
		f.Close()
		if !keep {
			os.Remove(f.Name())
		}
	}()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return "", File{}, fmt.Errorf("etcd snapshot: %w", err)
	}
	defer rc.Close()
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(newPacedFile(ctx, f, rate), sum), rc)
	if err != nil {
		return "", File{}, fmt.Errorf("etcd snapshot: %w", err)
	}
	keep = true
	return f.Name(), File{Name: EtcdEntry, Size: n, SHA256: hex.EncodeToString(sum.Sum(nil)), Mode: 0o600}, nil
}

// snapshotRevision is the newest revision in an etcd backend: the last key
// of its "key" bucket, whose first 8 bytes are the main revision.
func snapshotRevision(db string) (int64, error) {
	b, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("read the etcd snapshot: %w", err)
	}
	defer b.Close()
	var rev int64
	err = b.View(func(tx *bolt.Tx) error {
		bucket := tx.Bucket([]byte("key"))
		if bucket == nil {
			return errors.New("the etcd snapshot has no key bucket")
		}
		k, _ := bucket.Cursor().Last()
		if len(k) >= 8 {
			rev = int64(binary.BigEndian.Uint64(k[:8]))
		}
		return nil
	})
	return rev, err
}

// writeArchive writes the manifest, the etcd snapshot (from the file db),
// the data files and the trailer.
func writeArchive(w io.Writer, m *Manifest, db string, data map[string][]byte) error {
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	whole := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(w, whole))
	add := func(name string, mode uint32, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(mode), Size: size, ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	if err := add(manifestName, 0o600, int64(len(raw)), bytes.NewReader(raw)); err != nil {
		return err
	}
	for _, f := range m.Files {
		var r io.Reader
		if f.Name == EtcdEntry {
			dbf, err := os.Open(db)
			if err != nil {
				return err
			}
			defer dbf.Close()
			r = dbf
		} else {
			r = bytes.NewReader(data[f.Name])
		}
		if err := add(f.Name, f.Mode, f.Size, r); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, hex.EncodeToString(whole.Sum(nil))+"\n")
	return err
}
