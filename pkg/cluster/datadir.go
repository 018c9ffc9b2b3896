package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// initMarker exists while init writes a new cluster; a data directory that
// still has it never held a working cluster and may be started over.
const initMarker = ".init-incomplete"

// ownEntries are what init writes at the top of the data directory.
var ownEntries = []string{
	"pki", "etcd", "state.json", "admin.kubeconfig", "controller-manager.kubeconfig",
	"scheduler.kubeconfig", "encryption-config.yaml", "authentication-config.yaml", initMarker,
}

// isLogEntry tells log files (ours, possibly rotated) apart from state.
func isLogEntry(name string) bool {
	return strings.HasPrefix(name, "k8s-master") && (strings.HasSuffix(name, ".log") || strings.Contains(name, ".log.") || strings.HasSuffix(name, ".log.gz") || strings.Contains(name, ".log-"))
}

// dirState describes what a data directory holds before init.
type dirState struct {
	state      *config.State
	incomplete bool     // an earlier init stopped before the cluster existed
	foreign    []string // entries init did not write
}

func inspectDataDir(c *config.Config) (*dirState, error) {
	st, err := config.ReadState(c.StatePath())
	if err == nil {
		return &dirState{state: st}, nil
	}
	if !errors.Is(err, config.ErrNoState) {
		return nil, err
	}
	entries, err := os.ReadDir(c.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		return &dirState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read data directory %s: %w", c.DataDir, err)
	}
	ds := &dirState{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == initMarker:
			ds.incomplete = true
		case isLogEntry(name), strings.HasPrefix(name, ".write-test-"), strings.HasPrefix(name, ".state.json.tmp"):
		default:
			ds.foreign = append(ds.foreign, name)
		}
	}
	if ds.incomplete {
		// Only our own entries count against an interrupted init.
		var others []string
		for _, n := range ds.foreign {
			if !slices.Contains(ownEntries, n) {
				others = append(others, n)
			}
		}
		ds.foreign = others
	}
	sort.Strings(ds.foreign)
	return ds, nil
}

// removeOwnEntries deletes what init writes, leaving anything else alone.
func removeOwnEntries(dir string) error {
	var errs []error
	for _, n := range ownEntries {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
