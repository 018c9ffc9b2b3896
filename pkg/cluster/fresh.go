package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/preflight"
)

// freshDirSteps make a data directory into the home of a new master (init
// or join): preflight checks, the directory's lock, an interrupted earlier
// attempt cleared, the directory marked as being initialised. Until the
// runner commits, a rollback removes everything written into it (the whole
// directory if this run made it). ds is what the directory held.
func freshDirSteps(c *config.Config, ds *datadir.Contents) []component.Step {
	var created bool
	return []component.Step{
		{Name: "preflight checks", Do: func(context.Context, *component.Runner) error {
			if err := preflight.CheckPorts(ports(c)); err != nil {
				return err
			}
			var err error
			created, err = preflight.CheckDataDir(c.DataDir)
			return err
		}},
		{Do: func(_ context.Context, r *component.Runner) error {
			if err := lockDataDir(r, c); err != nil {
				return err
			}
			r.OnRollback("remove what was written to "+c.DataDir, func(context.Context) error {
				if created {
					return os.RemoveAll(c.DataDir)
				}
				if err := datadir.RemoveOwnEntries(c.DataDir); err != nil {
					r.Printf("warning: could not clean up %s: %v", c.DataDir, err)
				}
				return nil
			})
			if ds.Incomplete {
				if err := datadir.RemoveOwnEntries(c.DataDir); err != nil {
					return fmt.Errorf("cannot clear the interrupted attempt in %s: %w", c.DataDir, err)
				}
			}
			if err := os.WriteFile(c.Layout().InitMarker(), nil, 0o600); err != nil {
				return fmt.Errorf("data directory %s is not writable: %w", c.DataDir, err)
			}
			return nil
		}},
	}
}

// checkForeign refuses a directory that holds something else.
func checkForeign(c *config.Config, ds *datadir.Contents) error {
	if len(ds.Foreign) > 0 {
		return fmt.Errorf("data directory %s is not empty and holds no k8s-master (found %s); %w", c.DataDir, strings.Join(ds.Foreign, ", "), config.Hint("pass an empty or new {data-dir}"))
	}
	return nil
}

// lockDataDir takes the directory's lock until the runner stops.
func lockDataDir(r *component.Runner, c *config.Config) error {
	lock, err := datadir.Acquire(c.DataDir)
	if err != nil {
		return err
	}
	r.OnStop("release the lock of "+c.DataDir, func(context.Context) error { lock.Release(); return nil })
	return nil
}

// commitFreshDir marks the directory as holding a master: from now on it is
// kept, and nothing registered for rollback runs any more.
func commitFreshDir(r *component.Runner, c *config.Config) error {
	if err := os.Remove(c.Layout().InitMarker()); err != nil {
		return err
	}
	r.Commit()
	return nil
}
