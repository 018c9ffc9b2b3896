package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Entry is one archive in a snapshot directory.
type Entry struct {
	Path string
	// Bytes is the archive file's size.
	Bytes int64
	// Manifest is nil when the file is not a readable archive; Err says
	// why.
	Manifest *Manifest
	Err      error
}

// List reads the manifest of every archive in dir (files named *.snapshot;
// writes in progress have other names), oldest first. It does not verify
// the contents: Verify does. A missing directory holds no snapshots.
func List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		if !de.Type().IsRegular() || !strings.HasSuffix(de.Name(), Extension) || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		e := Entry{Path: filepath.Join(dir, de.Name())}
		if info, err := de.Info(); err == nil {
			e.Bytes = info.Size()
		}
		e.Manifest, e.Err = ReadManifest(e.Path)
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Manifest, out[j].Manifest
		switch {
		case a == nil || b == nil:
			return a != nil
		default:
			return a.Created.Before(b.Created)
		}
	})
	return out, nil
}
