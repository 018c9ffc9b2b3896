// Package reset stops a master and deletes its data directory: a
// single-member cluster's whole state, or that of a master which first
// leaves its multi-master cluster as `k8s-master leave` does. Run goes
// through the steps of resetSteps in order; the first that fails stops it.
package reset

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/k8s-master/k8s-master/pkg/cluster"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/service"
	"github.com/k8s-master/k8s-master/pkg/systemd"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// Options is what reset is told.
type Options struct {
	// DataDir is the data directory to reset.
	DataDir string
	// Yes skips the confirmation.
	Yes bool
	// Force resets a member that cannot leave its cluster, or whose
	// member list cannot be read.
	Force bool
	// Out receives progress and the question; In the answer, asked only
	// when In is a terminal.
	Out io.Writer
	In  io.Reader
}

// run is one reset: what it found and what it was told.
type run struct {
	Options
	cfg   config.Config // recorded settings, DataDir set
	state *config.State
	// members is the etcd member list checkMembership read, for the steps
	// after it (leaving the etcd cluster needs this member's ID).
	members []etcd.MemberInfo
}

// step is one step of reset, run in order; a failing step stops it.
type step struct {
	name string
	run  func(ctx context.Context, r *run) error
}

var resetSteps = []step{
	{"check membership", checkMembership},
	{"confirm", confirmReset},
	{"leave the etcd cluster", leaveCluster},
	{"stop the master", stopMaster},
	{"release the VIP", releaseVIP},
	{"remove the data directory", removeDataDir},
}

// Run resets the master of o.DataDir.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	r := &run{Options: o}
	c := config.Default()
	c.DataDir = o.DataDir
	if err := c.Complete(); err != nil {
		return err
	}
	if _, err := os.Stat(c.DataDir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(r.Out, "%s does not exist; nothing to reset\n", c.DataDir)
		return nil
	}
	st, err := config.ReadState(c.Layout().State())
	switch {
	case err == nil:
		r.state = st
		r.cfg = st.Config
		r.cfg.DataDir = c.DataDir
	case errors.Is(err, config.ErrNoState):
		r.cfg = c // no cluster recorded: nothing to leave
	default:
		return err
	}
	for _, s := range resetSteps {
		if err := s.run(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// checkMembership refuses to reset a member of a multi-master cluster: the
// others would lose a voter without being told.
func checkMembership(ctx context.Context, r *run) error {
	if r.state == nil || !etcd.HasData(&r.cfg) {
		return nil
	}
	ms, err := etcd.LiveMembers(ctx, &r.cfg, 3*time.Second)
	if err != nil {
		// Stopped (or unreachable): what the member's database says.
		var serr error
		if ms, serr = etcd.StoredMembers(&r.cfg); serr != nil {
			err = fmt.Errorf("%v; %w", err, serr)
		} else {
			err = nil
		}
	}
	if err != nil {
		if r.Force {
			fmt.Fprintf(r.Out, "warning: cannot read the etcd member list (%v); going on because of --force\n", err)
			return nil
		}
		return fmt.Errorf("cannot read the etcd member list: %w; %w", err, config.Hint("{force} resets anyway"))
	}
	r.members = ms
	if len(ms) <= 1 {
		return nil
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	fmt.Fprintf(r.Out, "this master is one of %d in its cluster (%s): it leaves the cluster first\n", len(ms), strings.Join(names, ", "))
	return nil
}

// leaveCluster takes a master of a multi-master cluster out of it, as
// `leave` does: quorum guard, member removed while it still runs, master
// stopped. Without a running master it cannot: refused unless --force.
func leaveCluster(ctx context.Context, r *run) error {
	if len(r.members) <= 1 {
		return nil
	}
	a, err := cluster.OpenAdmin(r.cfg.DataDir)
	if err == nil {
		defer a.Close()
		err = a.Leave(ctx, false, func(s string) { fmt.Fprintln(r.Out, "  "+s) })
	}
	if err != nil {
		if r.Force {
			fmt.Fprintf(r.Out, "warning: could not leave the cluster (%v); resetting anyway because of --force: remove this member from another master with k8s-master member remove %s\n", err, r.cfg.Name)
			return nil
		}
		return fmt.Errorf("this master is one of %d in its cluster and cannot leave it: %w; %w (then run k8s-master member remove %s on another master)", len(r.members), err, config.Hint("{force} resets anyway"), r.cfg.Name)
	}
	fmt.Fprintln(r.Out, "left the cluster")
	return nil
}

// confirmReset asks before deleting, unless --yes; without a terminal to
// ask on it refuses.
func confirmReset(_ context.Context, r *run) error {
	if r.Yes {
		return nil
	}
	what := "the data directory " + r.cfg.DataDir
	if r.state != nil {
		what += fmt.Sprintf(" with cluster %s (its CA, etcd data and kubeconfigs)", r.state.ClusterID)
	}
	f, ok := r.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return fmt.Errorf("reset deletes %s; %w", what, config.Hint("pass {yes} to confirm (no terminal to ask on)"))
	}
	fmt.Fprintf(r.Out, "This stops the master and deletes %s. Continue? [y/N] ", what)
	answer, _ := bufio.NewReader(r.In).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("reset cancelled; nothing changed")
}

// stopMaster stops and disables the k8s-master service when it runs (an
// enabled unit would fail at every boot without its data), then makes sure
// no other process still runs this data directory: a master in the
// foreground is its operator's to stop.
func stopMaster(ctx context.Context, r *run) error {
	if systemd.Booted() {
		svc := &systemd.Service{Unit: service.Unit}
		if svc.Installed(ctx) {
			if svc.Active(ctx) {
				fmt.Fprintf(r.Out, "stopping the %s service\n", service.Unit)
			}
			if err := svc.Disable(ctx); err != nil {
				return err
			}
		}
	}
	if r.state != nil {
		if _, err := etcd.LiveMembers(ctx, &r.cfg, 2*time.Second); err == nil {
			return fmt.Errorf("a k8s-master process still runs %s (its etcd answers on port %d); stop it first (Ctrl-C, or kill it)", r.cfg.DataDir, r.cfg.EtcdClientPort)
		}
	}
	// One whose etcd does not answer (yet), or an init still writing its
	// cluster, holds the lock.
	if pid, running := datadir.Running(r.cfg.DataDir); running {
		return fmt.Errorf("a k8s-master process (pid %d) still runs %s; stop it first (Ctrl-C, or kill %d)", pid, r.cfg.DataDir, pid)
	}
	if r.state == nil {
		return nil
	}
	if etcd.HasData(&r.cfg) {
		// A member that holds its backend open, whatever its port.
		if _, err := etcd.StoredMembers(&r.cfg); err != nil && !r.Force {
			return fmt.Errorf("%w; %w", err, config.Hint("{force} deletes it anyway"))
		}
	}
	return nil
}

// releaseVIP makes sure the VIP is off this host. A master that stopped
// gracefully released it already; one that crashed left an address that
// lapses within seconds, removed here at once.
func releaseVIP(_ context.Context, r *run) error {
	if r.state == nil || r.cfg.VIP == "" {
		return nil
	}
	a, err := cluster.OpenVIP(&r.cfg)
	if err != nil {
		lifetime := vip.AddressLifetime(r.cfg.VIPLease())
		fmt.Fprintf(r.Out, "warning: cannot check the VIP on this host (%v); it lapses by itself within %s\n", err, lifetime)
		return nil
	}
	defer a.Close()
	held, err := a.Held()
	if err != nil {
		return fmt.Errorf("check the VIP on %s: %w", a.Link().Attrs().Name, err)
	}
	if !held {
		fmt.Fprintf(r.Out, "VIP %s is not on this host\n", r.cfg.VIP)
		return nil
	}
	if err := a.Release(); err != nil {
		return err
	}
	fmt.Fprintf(r.Out, "released VIP %s from %s\n", r.cfg.VIP, a.Link().Attrs().Name)
	return nil
}

func removeDataDir(_ context.Context, r *run) error {
	if err := os.RemoveAll(r.cfg.DataDir); err != nil {
		return fmt.Errorf("remove %s: %w", r.cfg.DataDir, err)
	}
	fmt.Fprintf(r.Out, "removed %s\n", r.cfg.DataDir)
	return nil
}
