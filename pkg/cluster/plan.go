package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/preflight"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// This file holds the three ways a master starts, each as the list of its
// steps. Read one from top to bottom to see how a master comes up.

// Init creates a new cluster in an empty data directory and starts its
// first master. On a directory that already holds a cluster it resumes it,
// unless the flags given contradict it.
func Init(ctx context.Context, c *config.Config, o Options) (*Master, error) {
	return initWith(ctx, c, o, realParts)
}

func initWith(ctx context.Context, c *config.Config, o Options, parts builder) (*Master, error) {
	ds, err := datadir.Inspect(c)
	if err != nil {
		return nil, err
	}
	m := newMaster(c, o, parts)
	if ds.State != nil {
		if err := checkConflicts(&ds.State.Config, c, o.Explicit, "init"); err != nil {
			return nil, err
		}
		m.run.Printf("%s already holds cluster %s (initialised %s); resuming it. Next time run: k8s-master start --data-dir %s",
			c.DataDir, ds.State.ClusterID, ds.State.CreatedAt.Format(time.RFC3339), c.DataDir)
		return m.start(ctx, c, ds.State)
	}
	m.run.Printf("k8s-master: initialising a new cluster in %s (node %s, %s)", c.DataDir, c.Name, c.AdvertiseAddress)
	m.creating = true
	if err := c.CheckIfaceHasVIP(); err != nil {
		return nil, err
	}
	var steps []component.Step
	if c.VIP != "" {
		steps = append(steps, m.vipCheckStep(true))
	}
	steps = append(steps, component.Step{Do: func(context.Context, *component.Runner) error { return checkForeign(c, ds) }})
	steps = append(steps, freshDirSteps(c, ds)...)
	clusterID := newClusterID()
	steps = append(steps,
		m.logStep(),
		m.controlStep(),
		component.Step{Name: "cluster PKI and credentials", Do: func(context.Context, *component.Runner) error {
			if err := pki.CreateClusterSecrets(c, time.Now()); err != nil {
				return err
			}
			_, err := writeCredentials(c, false)
			return err
		}},
		component.Step{Name: "etcd member ready", Do: func(ctx context.Context, r *component.Runner) error {
			m.etcd = parts.etcd(c, etcd.Options{ClusterState: "new", ClusterToken: clusterID, Logger: m.logs.Zap})
			if err := r.Start(ctx, m.etcd); err != nil {
				return err
			}
			// The apiserver builds while the new member elects itself.
			if err := m.startControlPlane(ctx, r); err != nil {
				return err
			}
			return r.Ready(ctx, m.etcd)
		}},
		component.Step{Do: func(_ context.Context, r *component.Runner) error {
			pin, err := pki.ReadPin(c)
			if err != nil {
				return err
			}
			m.state = &config.State{ClusterID: clusterID, CreatedAt: time.Now().UTC(), CAPin: pin, EtcdClusterID: m.etcd.ClusterID(), Config: *c}
			if err := config.WriteState(c.Layout().State(), m.state); err != nil {
				return err
			}
			// The cluster exists now: later failures leave it for `start`.
			return commitFreshDir(r, c)
		}},
		m.servingStepsLater(),
		component.Step{Name: "first join token", Do: func(ctx context.Context, _ *component.Runner) error {
			if err := m.createFirstToken(ctx); err != nil {
				return hinted{fmt.Errorf("%w; the cluster was created: run k8s-master start --data-dir %s, then k8s-master token create", err, c.DataDir)}
			}
			return nil
		}},
	)
	return m.runPlan(ctx, steps, "the cluster was created, fix the cause and run: k8s-master start --data-dir "+c.DataDir)
}

// Start runs the master recorded in the data directory.
func Start(ctx context.Context, c *config.Config, o Options) (*Master, error) {
	return startWith(ctx, c, o, realParts)
}

func startWith(ctx context.Context, c *config.Config, o Options, parts builder) (*Master, error) {
	st, err := config.ReadState(c.Layout().State())
	if errors.Is(err, config.ErrNoState) {
		if _, serr := os.Stat(c.DataDir); serr != nil {
			return nil, fmt.Errorf("data directory %s does not exist; run k8s-master init to create a cluster, or %w", c.DataDir, config.Hint("pass {data-dir}"))
		}
		return nil, fmt.Errorf("%s holds no initialised master; run k8s-master init --data-dir %s", c.DataDir, c.DataDir)
	}
	if err != nil {
		return nil, err
	}
	if err := checkConflicts(&st.Config, c, o.Explicit, "start"); err != nil {
		return nil, err
	}
	m := newMaster(c, o, parts)
	m.run.Printf("k8s-master: starting cluster %s from %s", st.ClusterID, c.DataDir)
	return m.start(ctx, c, st)
}

// start runs a master whose data directory holds its cluster (start, and
// init or join resuming one).
func (m *Master) start(ctx context.Context, flags *config.Config, st *config.State) (*Master, error) {
	// The recorded settings rule; only where logs go comes from the flags.
	c := st.Config
	c.DataDir, c.LogFile, c.LogVerbosity = flags.DataDir, flags.LogFile, flags.LogVerbosity
	c.SnapshotDir, c.SnapshotInterval, c.SnapshotRetention = flags.SnapshotDir, flags.SnapshotInterval, flags.SnapshotRetention
	c.EtcdQuota = flags.EtcdQuota
	c.ImageRepository, c.DisabledAddons, c.ClusterDNS = flags.ImageRepository, flags.DisabledAddons, flags.ClusterDNS
	m.cfg, m.state = &c, st
	steps := []component.Step{
		{Name: "preflight checks", Do: func(_ context.Context, r *component.Runner) error {
			if err := preflight.CheckPorts(ports(&c)); err != nil {
				return err
			}
			if _, err := preflight.CheckDataDir(c.DataDir); err != nil {
				return err
			}
			return m.openVIP(r, false)
		}},
		{Do: func(_ context.Context, r *component.Runner) error { return lockDataDir(r, &c) }},
		{Do: func(context.Context, *component.Runner) error { return checkIdentity(&c, st) }},
		m.upgradeCheckStep(&c),
		m.logStep(),
		m.controlStep(),
		{Name: "certificates and credentials", Do: func(context.Context, *component.Runner) error {
			_, err := writeCredentials(&c, false)
			return err
		}},
		{Name: "etcd member ready", Do: func(ctx context.Context, r *component.Runner) error {
			// A member of a bigger cluster waits for its quorum as long
			// as it takes: after a power loss the masters come back one
			// by one.
			m.etcd = m.parts.etcd(&c, etcd.Options{ClusterState: "existing", Logger: m.logs.Zap, ReadyTimeout: -1, Waiting: func(d time.Duration) {
				r.Printf("  waiting for etcd for %.0f s: this member needs a quorum, so start the other masters too", d.Seconds())
			}})
			if err := r.Start(ctx, m.etcd); err != nil {
				return err
			}
			// Unlike init, etcd may take long here (no quorum yet),
			// longer than the apiserver waits for it while being built:
			// build it after.
			if err := r.Ready(ctx, m.etcd); err != nil {
				return err
			}
			return m.startControlPlane(ctx, r)
		}},
		{Do: func(_ context.Context, r *component.Runner) error {
			if id := m.etcd.ClusterID(); id != st.EtcdClusterID {
				// The WAL said otherwise a moment ago; do not serve a
				// mixed-up member.
				return fmt.Errorf("etcd member of %s runs in cluster %s, but cluster %s has %s", c.DataDir, id, st.ClusterID, st.EtcdClusterID)
			}
			r.Commit()
			return nil
		}},
		m.servingStepsLater(),
	}
	return m.runPlan(ctx, steps, "")
}

// checkIdentity refuses a data directory whose CA or etcd data belong to
// another cluster than its state.json.
func checkIdentity(c *config.Config, st *config.State) error {
	pin, err := pki.ReadPin(c)
	if err != nil {
		return fmt.Errorf("cannot read the cluster CA: %w; restore %s from a backup", err, c.Layout().PKIDir())
	}
	// During a CA rotation (and after one interrupted at the wrong moment)
	// the recorded pin may be the other CA's; the rotation re-records it.
	if pin != st.CAPin && !slices.Contains(pki.CAPins(c.Layout().PKIDir(), pki.ClusterCA), st.CAPin) {
		return fmt.Errorf("data directory %s holds the CA of a different cluster (%s, but cluster %s has %s); restore the matching pki/ directory or use the data directory it belongs to", c.DataDir, pin, st.ClusterID, st.CAPin)
	}
	switch id, err := etcd.StoredClusterID(c); {
	case errors.Is(err, etcd.ErrNoData):
		return fmt.Errorf("data directory %s has no etcd data (%s is empty); restore it from a backup or snapshot", c.DataDir, c.Layout().EtcdDir())
	case err != nil:
		return err
	case id != st.EtcdClusterID:
		return fmt.Errorf("data directory %s holds etcd data of a different cluster (etcd cluster %s, but cluster %s has %s); restore the matching etcd/ directory or use the data directory it belongs to", c.DataDir, id, st.ClusterID, st.EtcdClusterID)
	}
	return nil
}

// JoinOptions are the joiner's extra inputs.
type JoinOptions struct {
	Options
	Token string
	// Force skips the cluster's quorum guard.
	Force bool
}

// Join makes this machine a master of the cluster behind the token: the
// cluster adds it as an etcd learner and hands over the shared secrets; it
// makes its own certificates, starts its member, is promoted to voter once
// caught up, then starts its apiserver, controller-manager and scheduler.
// A data directory that already holds a master resumes it instead.
func Join(ctx context.Context, c *config.Config, o JoinOptions) (*Master, error) {
	return joinWith(ctx, c, o, realParts)
}

func joinWith(ctx context.Context, c *config.Config, o JoinOptions, parts builder) (*Master, error) {
	tok, err := join.ParseToken(o.Token)
	if err != nil {
		return nil, err
	}
	ds, err := datadir.Inspect(c)
	if err != nil {
		return nil, err
	}
	m := newMaster(c, o.Options, parts)
	if ds.State != nil {
		if err := checkConflicts(&ds.State.Config, c, o.Explicit, "start"); err != nil {
			return nil, err
		}
		m.run.Printf("%s already holds a master of cluster %s; resuming it (no token needed: k8s-master start --data-dir %s)", c.DataDir, ds.State.ClusterID, c.DataDir)
		return m.start(ctx, c, ds.State)
	}
	m.run.Printf("k8s-master: joining the cluster at %s as %s (%s)", strings.Join(tok.Endpoints, ", "), c.Name, c.AdvertiseAddress)
	var resp *join.Response
	steps := []component.Step{{Do: func(context.Context, *component.Runner) error { return checkForeign(c, ds) }}}
	steps = append(steps, freshDirSteps(c, ds)...)
	steps = append(steps,
		m.logStep(),
		m.controlStep(),
		component.Step{Name: "admitted by the cluster (etcd learner added)", Do: func(ctx context.Context, r *component.Runner) error {
			var err error
			vs := version.Local()
			resp, err = parts.admit(ctx, tok, join.Request{Name: c.Name, PeerURL: c.EtcdPeerURL(), Force: o.Force, Versions: &vs}, func(msg string) {
				r.Printf("  waiting: %s", msg)
			})
			return err
		}},
		component.Step{Do: func(ctx context.Context, r *component.Runner) error {
			c.ServiceCIDR, c.PodCIDR, c.ClusterDomain = resp.ServiceCIDR, resp.PodCIDR, resp.ClusterDomain
			c.VIP, c.VIPLeaseTTL = resp.VIP, resp.VIPLeaseTTL
			if err := c.Validate(); err != nil {
				return fmt.Errorf("the cluster's settings do not validate here: %w", err)
			}
			if c.VIP == "" {
				return c.CheckIfaceHasVIP()
			}
			return r.Run(ctx, []component.Step{m.vipCheckStep(false)})
		}},
		component.Step{Name: "cluster secrets and own certificates", Do: func(_ context.Context, r *component.Runner) error {
			if err := writeSharedFiles(c.DataDir, resp.Files); err != nil {
				return err
			}
			if !resp.Resume {
				// From here this master can reach etcd to take its
				// learner back.
				r.OnRollback("remove this master's etcd learner", func(context.Context) error {
					if err := parts.removeLearner(c, resp); err != nil {
						r.Printf("warning: could not remove this master's etcd learner (%v); a join service removes it after 90 s", err)
					}
					return nil
				})
			}
			_, err := writeCredentials(c, false)
			return err
		}},
		component.Step{Name: "etcd member caught up and promoted", Do: func(ctx context.Context, r *component.Runner) error {
			m.etcd = parts.etcd(c, etcd.Options{ClusterState: "existing", InitialCluster: resp.InitialCluster, Logger: m.logs.Zap, ReadyTimeout: 5 * time.Minute, Joining: true})
			if err := r.Start(ctx, m.etcd); err != nil {
				return err
			}
			if err := r.Ready(ctx, m.etcd); err != nil {
				return err
			}
			return parts.promote(ctx, c, resp)
		}},
		component.Step{Do: func(_ context.Context, r *component.Runner) error {
			if m.etcd.ClusterID() != resp.EtcdClusterID {
				return fmt.Errorf("the local etcd member joined etcd cluster %s, but the cluster reports %s", m.etcd.ClusterID(), resp.EtcdClusterID)
			}
			m.state = &config.State{ClusterID: resp.ClusterID, CreatedAt: time.Now().UTC(), CAPin: resp.CAPin, EtcdClusterID: resp.EtcdClusterID, Config: *c}
			if err := config.WriteState(c.Layout().State(), m.state); err != nil {
				return err
			}
			return commitFreshDir(r, c)
		}},
		component.Step{Do: m.startControlPlane},
		m.servingStepsLater(),
	)
	return m.runPlan(ctx, steps, "this master is a member now: fix the cause and run k8s-master start --data-dir "+c.DataDir)
}

// servingStepsLater runs servingSteps, made when they run: whether there
// is a VIP step is known only then (a joiner learns the VIP from the
// cluster).
func (m *Master) servingStepsLater() component.Step {
	return component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		return r.Run(ctx, m.servingSteps())
	}}
}

// hinted is an error that already says what to do next.
type hinted struct{ error }

func (h hinted) Unwrap() error { return h.error }

// runPlan runs the steps; on a failure it unwinds what they did and, once
// the start had committed, tells the operator how to carry on.
func (m *Master) runPlan(ctx context.Context, steps []component.Step, committedHint string) (*Master, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.stopRequested:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := m.run.Run(ctx, steps)
	if err != nil {
		select {
		case <-m.stopRequested:
			err = fmt.Errorf("stopped on request before the master was ready (%w)", err)
		default:
		}
	}
	if err == nil {
		m.printReady()
		return m, nil
	}
	committed := m.run.Committed()
	m.run.Rollback(rollbackTimeout)
	var h hinted
	if committed && committedHint != "" && !errors.As(err, &h) {
		err = fmt.Errorf("%w; %s", err, committedHint)
	}
	return nil, err
}

// createFirstToken makes init's join token (24 h) and keeps it in
// DATA_DIR/token (0600) for the operator.
func (m *Master) createFirstToken(ctx context.Context) error {
	eps := []string{config.Host(m.cfg.AdvertiseAddress, m.cfg.JoinPort)}
	if m.cfg.VIP != "" {
		eps = append([]string{config.Host(m.cfg.VIP, m.cfg.JoinPort)}, eps...)
	}
	tok, _, err := join.NewStore(m.etcdClient, nil).CreateToken(ctx, eps, m.state.CAPin, 24*time.Hour, 0, "made by init")
	if err != nil {
		return err
	}
	m.Token = tok.String()
	return fsutil.WriteFileAtomic(m.cfg.Layout().Token(), []byte(m.Token+"\n"), 0o600)
}
