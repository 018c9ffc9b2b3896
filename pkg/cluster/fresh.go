package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/preflight"
)

// freshDir is a data directory being made into a new master (init or
// join). Until commit, undo removes everything written into it.
type freshDir struct {
	c       *config.Config
	created bool
	lock    *datadir.Lock
}

// prepareFreshDir runs the preflight checks, takes the directory's lock,
// clears an interrupted earlier attempt and marks the directory as being
// initialised. ds is what the directory held.
func prepareFreshDir(c *config.Config, ds *datadir.Contents, p *progress) (*freshDir, error) {
	if len(ds.Foreign) > 0 {
		return nil, fmt.Errorf("data directory %s is not empty and holds no k8s-master (found %s); pass an empty or new --data-dir", c.DataDir, strings.Join(ds.Foreign, ", "))
	}
	f := &freshDir{c: c}
	if err := p.step("preflight checks", func() error {
		if err := preflight.CheckPorts(ports(c)); err != nil {
			return err
		}
		var err error
		f.created, err = preflight.CheckDataDir(c.DataDir)
		return err
	}); err != nil {
		return nil, err
	}
	var err error
	if f.lock, err = datadir.Acquire(c.DataDir); err != nil {
		return nil, err
	}
	if ds.Incomplete {
		if err := datadir.RemoveOwnEntries(c.DataDir); err != nil {
			f.undo(p)
			return nil, fmt.Errorf("cannot clear the interrupted attempt in %s: %w", c.DataDir, err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.DataDir, datadir.InitMarker), nil, 0o600); err != nil {
		f.undo(p)
		return nil, fmt.Errorf("data directory %s is not writable: %w", c.DataDir, err)
	}
	return f, nil
}

// undo removes what was written (the whole directory if this run made it).
func (f *freshDir) undo(p *progress) {
	f.lock.Release()
	if f.created {
		os.RemoveAll(f.c.DataDir)
	} else if err := datadir.RemoveOwnEntries(f.c.DataDir); err != nil {
		p.printf("warning: could not clean up %s: %v", f.c.DataDir, err)
	}
}

// commit marks the directory as holding a master: from now on it is kept.
func (f *freshDir) commit() error {
	return os.Remove(filepath.Join(f.c.DataDir, datadir.InitMarker))
}
