// Package datadir knows what a master's data directory may hold and tells an
// initialised master from an empty, interrupted or foreign directory.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// initMarker exists while init writes a new cluster; a data directory that
// still has it never held a working cluster and may be started over.
var initMarker = layout.Layout{}.InitMarker()

// ownEntries are what a master writes at the top of the data directory:
// init's entries and a crashed master's control and etcd sockets.
var ownEntries = append(layout.InitEntries(), layout.Layout{}.ControlSocket(), layout.Layout{}.EtcdSocket())

// Contents describes what a data directory holds before init.
type Contents struct {
	// State is the recorded cluster, nil when there is none.
	State *config.State
	// Incomplete means an earlier init stopped before the cluster existed.
	Incomplete bool
	// Foreign lists entries init did not write (or, without the marker,
	// entries of a cluster whose state is gone).
	Foreign []string
}

// Inspect reads the data directory of c; a missing directory is empty.
func Inspect(c *config.Config) (*Contents, error) {
	st, err := config.ReadState(c.Layout().State())
	if err == nil {
		return &Contents{State: st}, nil
	}
	if !errors.Is(err, config.ErrNoState) {
		return nil, err
	}
	entries, err := os.ReadDir(c.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		return &Contents{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read data directory %s: %w", c.DataDir, err)
	}
	ds := &Contents{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == initMarker:
			ds.Incomplete = true
		case layout.IsRuntime(name):
		default:
			ds.Foreign = append(ds.Foreign, name)
		}
	}
	if ds.Incomplete {
		// Only our own entries count against an interrupted init.
		var others []string
		for _, n := range ds.Foreign {
			if !slices.Contains(ownEntries, n) {
				others = append(others, n)
			}
		}
		ds.Foreign = others
	}
	sort.Strings(ds.Foreign)
	return ds, nil
}

// RemoveOwnEntries deletes what init writes, leaving anything else alone.
func RemoveOwnEntries(dir string) error {
	var errs []error
	for _, n := range ownEntries {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
