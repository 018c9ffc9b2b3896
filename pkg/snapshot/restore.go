package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// Contents is what a restore takes from a verified archive before it
// writes anything: the manifest, the archived data-directory files (the
// cluster's identity, small) and the recorded cluster. The etcd snapshot,
// which may be large, stays in the archive until ExtractEtcd.
type Contents struct {
	Path     string
	Manifest *Manifest
	// Files are the data-directory files by their path relative to it.
	Files map[string][]byte
	// State is the archived master's state.json: the cluster's ID, CA pin
	// and recorded settings.
	State *config.State
}

// Load reads and checks the whole archive (as Verify does) and keeps its
// identity files in memory. It writes nothing.
func Load(path string) (*Contents, error) {
	f, size, err := openArchive(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files := map[string][]byte{}
	m, err := verify(path, f, size, func(name string, r io.Reader) error {
		rel, ok := cutDataPrefix(name)
		if !ok {
			_, err := io.Copy(io.Discard, r)
			return err
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, r); err != nil {
			return err
		}
		files[rel] = b.Bytes()
		return nil
	})
	if err != nil {
		return nil, err
	}
	c := &Contents{Path: path, Manifest: m, Files: files}
	for _, rel := range IdentityFiles() {
		if _, ok := files[rel]; !ok {
			return nil, &CorruptError{Path: path, Reason: "it does not hold " + rel}
		}
	}
	var st config.State
	if err := json.Unmarshal(files[layout.Layout{}.State()], &st); err != nil {
		return nil, &CorruptError{Path: path, Reason: "its recorded cluster state does not parse: " + err.Error()}
	}
	if st.ClusterID != m.ClusterID {
		return nil, &CorruptError{Path: path, Reason: fmt.Sprintf("its recorded state belongs to cluster %s, the manifest to %s", st.ClusterID, m.ClusterID)}
	}
	c.State = &st
	return c, nil
}

func cutDataPrefix(name string) (string, bool) {
	if len(name) > len(dataPrefix) && name[:len(dataPrefix)] == dataPrefix {
		return name[len(dataPrefix):], true
	}
	return "", false
}

// ExtractEtcd writes the archive's etcd snapshot to dst (0600), checking
// the archive again while it reads, so a file changed since Load is
// caught. On any failure dst is removed.
func (c *Contents) ExtractEtcd(dst string) (err error) {
	f, size, err := openArchive(c.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write the etcd snapshot: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	m, err := verify(c.Path, f, size, func(name string, r io.Reader) error {
		if name != EtcdEntry {
			_, err := io.Copy(io.Discard, r)
			return err
		}
		_, err := io.Copy(out, r)
		return err
	})
	if err != nil {
		return err
	}
	if m.Revision != c.Manifest.Revision || m.Created != c.Manifest.Created {
		return errors.New("the snapshot file changed while it was being restored; run restore again")
	}
	return out.Sync()
}
