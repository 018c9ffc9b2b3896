// Package snapshot writes and checks a cluster's recovery archives: one
// file holding a consistent etcd snapshot of a member and what restoring
// the cluster's identity needs (the CAs and their keys, service-account
// keys, the secrets-encryption configuration, the recorded settings), with
// a manifest and checksums over everything.
//
// An archive is a tar stream, manifest.json first, then every file the
// manifest lists in its order, followed by a trailer: the SHA-256 of every
// byte before it, in hex, and a newline. Each file's size and SHA-256 are in
// the manifest (which names a bad file), and the trailer covers the rest
// (headers, padding), so a flipped byte anywhere, a truncation, a missing,
// extra or reordered entry is found by Verify.
package snapshot

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/k8s-master/k8s-master/pkg/version"
)

// Format is the archive layout this build writes; Verify refuses newer
// ones (a restore must not guess at a layout it does not know).
const Format = 1

const (
	manifestName = "manifest.json"
	// trailerLen is the hex SHA-256 and its newline.
	trailerLen = sha256.Size*2 + 1
	// EtcdEntry is the etcd snapshot's name in an archive.
	EtcdEntry = "etcd/snapshot.db"
	// dataPrefix precedes data-directory files' relative paths.
	dataPrefix = "data/"
	// maxManifest bounds the manifest read before it is checked.
	maxManifest = 1 << 20
)

// DefaultDir keeps snapshots outside the data directory, so that `reset`
// leaves them.
const DefaultDir = "/var/lib/k8s-master-snapshots"

// Extension names archive files; list counts only these (a write in
// progress has another name until it is complete).
const Extension = ".snapshot"

// Manifest describes an archive.
type Manifest struct {
	Format        int              `json:"format"`
	Created       time.Time        `json:"created"`
	Master        string           `json:"master"`
	ClusterID     string           `json:"clusterID"`
	EtcdClusterID string           `json:"etcdClusterID"`
	Versions      version.Versions `json:"versions"`
	// Revision is the etcd revision the snapshot holds.
	Revision int64    `json:"revision"`
	Members  []string `json:"members"`
	Files    []File   `json:"files"`
}

// File is one archived file.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   uint32 `json:"mode"`
}

// DataFiles are the archived data-directory files, by their path relative
// to the data directory.
func (m *Manifest) DataFiles() []File {
	var out []File
	for _, f := range m.Files {
		if rel, ok := cutDataPrefix(f.Name); ok {
			g := f
			g.Name = rel
			out = append(out, g)
		}
	}
	return out
}

// Size is the sum of the archived files' sizes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// CorruptError is an archive that does not check out.
type CorruptError struct {
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("snapshot %s is damaged or not a k8s-master snapshot: %s; use another snapshot", e.Path, e.Reason)
}

// Verify reads the whole archive and checks every entry against the
// manifest and the manifest against its checksum. On success it returns
// the manifest.
func Verify(path string) (*Manifest, error) {
	f, size, err := openArchive(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return verify(path, f, size, func(name string, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
}

// openArchive opens an archive for verify and tells its size.
func openArchive(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open snapshot: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, info.Size(), nil
}

// verify reads an archive of size bytes from r; each listed file's content
// is also handed to use (restore writes it out) while it is hashed. use's
// output is only good once verify returns nil.
func verify(path string, r io.Reader, size int64, use func(name string, r io.Reader) error) (*Manifest, error) {
	bad := func(format string, a ...any) error {
		return &CorruptError{Path: path, Reason: fmt.Sprintf(format, a...)}
	}
	if size <= trailerLen {
		return nil, bad("it is only %d bytes", size)
	}
	whole := sha256.New()
	body := io.TeeReader(io.LimitReader(r, size-trailerLen), whole)
	tr := tar.NewReader(body)
	next := func(want string) (*tar.Header, error) {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, bad("it ends before %s (truncated?)", want)
		}
		if err != nil {
			return nil, bad("reading the entry before %s: %v", want, err)
		}
		if h.Name != want {
			return nil, bad("entry %q where %s belongs", h.Name, want)
		}
		return h, nil
	}
	if _, err := next(manifestName); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(tr, maxManifest+1))
	if err != nil {
		return nil, bad("reading the manifest: %v", err)
	}
	if len(raw) > maxManifest {
		return nil, bad("the manifest is over %d bytes", maxManifest)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, bad("the manifest does not parse: %v", err)
	}
	if m.Format > Format {
		return nil, fmt.Errorf("snapshot %s has archive format %d, newer than this k8s-master (%s) reads (%d); use k8s-master %s or newer", path, m.Format, version.Release, Format, m.Versions.Release)
	}
	if m.Format < 1 || len(m.Files) == 0 || m.Files[0].Name != EtcdEntry {
		return nil, bad("the manifest lists no etcd snapshot")
	}
	for _, want := range m.Files {
		h, err := next(want.Name)
		if err != nil {
			return nil, err
		}
		if h.Size != want.Size {
			return nil, bad("%s is %d bytes, the manifest says %d", want.Name, h.Size, want.Size)
		}
		sum := sha256.New()
		if err := use(want.Name, io.TeeReader(tr, sum)); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, bad("%s is cut short (truncated?)", want.Name)
			}
			return nil, err
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != want.SHA256 {
			return nil, bad("%s does not match its checksum", want.Name)
		}
	}
	if h, err := tr.Next(); !errors.Is(err, io.EOF) {
		name := ""
		if h != nil {
			name = h.Name
		}
		return nil, bad("unexpected content after the files the manifest lists (%q, %v)", name, err)
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return nil, bad("reading: %v", err)
	}
	trailer, err := io.ReadAll(io.LimitReader(r, trailerLen))
	if err != nil || len(trailer) != trailerLen {
		return nil, bad("its checksum trailer is missing (truncated?)")
	}
	if string(trailer) != hex.EncodeToString(whole.Sum(nil))+"\n" {
		return nil, bad("its bytes do not match the archive's checksum")
	}
	return &m, nil
}

// ReadManifest reads only the manifest (cheap, for listing); it does not
// check the files.
func ReadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != manifestName {
		return nil, &CorruptError{Path: path, Reason: "it does not start with a manifest"}
	}
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(tr, maxManifest)).Decode(&m); err != nil {
		return nil, &CorruptError{Path: path, Reason: "the manifest does not parse: " + err.Error()}
	}
	return &m, nil
}
