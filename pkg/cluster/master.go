// Package cluster puts a master together. Init, Start and Join are each a
// list of steps (see plan.go) run by a component.Runner: host and data
// directory checks, the PKI, the etcd member, kube-apiserver,
// kube-controller-manager, kube-scheduler, the join service, the VIP
// election and the control socket, with the membership steps of a join in
// between. The runner prints one progress line per step, takes back exactly
// what a failed start did, and stops the components in reverse order.
// Admin (admin.go) runs the operator commands against a running master.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/pkg/apiserverconfig"
	"github.com/k8s-master/k8s-master/pkg/certs"
	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/control"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/etcdspace"
	"github.com/k8s-master/k8s-master/pkg/kubeconfig"
	"github.com/k8s-master/k8s-master/pkg/logging"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/poll"
	"github.com/k8s-master/k8s-master/pkg/preflight"
	"github.com/k8s-master/k8s-master/pkg/process"
	"github.com/k8s-master/k8s-master/pkg/snapshot"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// Options tune a run of init, start or join.
type Options struct {
	// Out receives the progress lines.
	Out io.Writer
	// Explicit names the flags the user set; init and start refuse them
	// when they contradict what the data directory recorded.
	Explicit map[string]bool
	// ReadyTimeout bounds each wait for a component to be ready (default
	// 2 minutes).
	ReadyTimeout time.Duration
	// Describe words an error that names settings (config.SettingError)
	// for the command line; cmd/ passes its flag wording. The join service
	// words its refusals with it, since the joining command prints them as
	// they arrive. nil: err.Error().
	Describe func(error) string
	// ForceUpgrade lets a start that changes versions go on while another
	// master is down (pkg/upgrade).
	ForceUpgrade bool
}

// rollbackTimeout bounds the unwinding of a start that failed.
const rollbackTimeout = 10 * time.Second

// Master is a running master: its configuration, the runner that started
// its components, and what the steps between them share.
type Master struct {
	cfg   *config.Config
	state *config.State
	run   *component.Runner
	parts builder
	// readyTimeout bounds each readiness wait.
	readyTimeout time.Duration
	// describe is Options.Describe, for the join service.
	describe     func(error) string
	forceUpgrade bool

	logs       *logging.Sink
	etcd       etcdPart
	api        apiPart
	leaders    []component.Component
	etcdClient *clientv3.Client
	vipAddr    *vip.Address
	vip        *vipElection
	// renewer renews the leaf certificates; set once serving (the
	// control socket may ask for a renewal before).
	renewerMu sync.Mutex
	renewer   *certRenewer

	// leaving is set when `leave` is taking this master out of the
	// cluster: the VIP is given up, and the etcd member's removal is the
	// expected end rather than a failure.
	leaving atomic.Bool
	// etcdReloading is set while the local etcd member restarts to load a
	// new trust bundle (CA rotation): the VIP moves away meanwhile.
	etcdReloading atomic.Bool
	// stopRequested is closed when the control socket asks for a stop.
	stopRequested chan struct{}
	stopOnce      sync.Once

	// creating is set by init of a new cluster: its etcd holds no
	// desired encryption configuration yet, so the apiserver need not
	// wait for the first sync (it builds while etcd elects itself).
	creating bool

	// workerEndpoint is where cluster-info sends workers (host:port).
	workerEndpoint string

	// Token is the join token init made, "" otherwise.
	Token string
}

func newMaster(c *config.Config, o Options, parts builder) *Master {
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	return &Master{cfg: c, run: component.NewRunner(o.Out), parts: parts, readyTimeout: timeout, describe: o.Describe, forceUpgrade: o.ForceUpgrade, stopRequested: make(chan struct{})}
}

// Config is the configuration the master runs with.
func (m *Master) Config() *config.Config { return m.cfg }

// State is the cluster identity recorded in the data directory.
func (m *Master) State() *config.State { return m.state }

// PrepareLeave is the control socket's leave request: this master is about
// to be removed from the cluster. It steps down from the VIP (its health
// check fails from now on) and its member's removal ends it cleanly.
func (m *Master) PrepareLeave(context.Context) error {
	m.leaving.Store(true)
	return nil
}

// CancelLeave is the control socket's word that the removal failed: the
// master may hold the VIP again, and an etcd stop is a failure again.
func (m *Master) CancelLeave() { m.leaving.Store(false) }

// Stop is the control socket's stop request: the same graceful stop as
// SIGTERM.
func (m *Master) Stop() { m.stopOnce.Do(func() { close(m.stopRequested) }) }

// Wait blocks until ctx ends (a signal), a stop is requested, or a
// component stops on its own, then stops the master in reverse order
// within timeout. It returns the failure, if any.
func (m *Master) Wait(ctx context.Context, timeout time.Duration, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	var failure error
	select {
	case <-ctx.Done():
	case <-m.stopRequested:
	case e := <-m.run.Exited():
		failure = e
		if m.leaving.Load() {
			// `leave` removed our member: etcd stopping is the end.
			failure = nil
			fmt.Fprintln(out, "k8s-master: this master left the cluster")
		}
	}
	fmt.Fprintln(out, "k8s-master: stopping")
	t := time.Now()
	m.run.Stop(timeout)
	fmt.Fprintf(out, "k8s-master: stopped in %.1f s\n", time.Since(t).Seconds())
	return failure
}

// Steps shared by every way a master starts.

// logStep sends the components' logs to the configured place.
func (m *Master) logStep() component.Step {
	return component.Step{Do: func(_ context.Context, r *component.Runner) error {
		logs, err := process.SetupMaster(m.cfg.LogFile, m.cfg.LogVerbosity)
		if err != nil {
			return err
		}
		m.logs = logs
		r.OnStop("close the log", func(context.Context) error { return logs.Close() })
		return nil
	}}
}

// controlStep serves the control socket, through which `leave`, `reset`
// and `stop` reach this master, from as early as the data directory is
// ours: a stop asked for during a long start (etcd waiting for its
// quorum) ends the start.
func (m *Master) controlStep() component.Step {
	return component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		return r.Start(ctx, control.NewServer(control.SocketPath(m.cfg.DataDir), m))
	}}
}

// vipCheckStep opens the VIP on this host's interface, checked (and, for
// a new cluster, probed); the address handle lives until the runner stops.
func (m *Master) vipCheckStep(probe bool) component.Step {
	return component.Step{Name: vipStep(m.cfg, probe), Do: func(_ context.Context, r *component.Runner) error {
		return m.openVIP(r, probe)
	}}
}

func (m *Master) openVIP(r *component.Runner, probe bool) error {
	a, closeVIP, err := m.parts.openVIP(m.cfg, probe)
	if closeVIP != nil {
		r.OnStop("close the VIP handle", func(context.Context) error { closeVIP(); return nil })
	}
	m.vipAddr = a
	return err
}

// startControlPlane starts the apiserver and the leader-elected
// components; they build in the background.
func (m *Master) startControlPlane(ctx context.Context, r *component.Runner) error {
	m.api = m.parts.apiServer(m.cfg, m.readyTimeout)
	if m.parts.secretsKey != nil {
		sk := m.parts.secretsKey(m.cfg, func() (*clientv3.Client, error) { return m.parts.connect(m.cfg) }, r.Printf)
		if err := r.Start(ctx, sk); err != nil {
			return err
		}
		if a, ok := m.api.(*apiServer); ok && !m.creating {
			a.prepare = sk.Synced
		}
	}
	m.leaders = []component.Component{
		m.parts.controllerManager(m.cfg, m.api, m.readyTimeout),
		m.parts.scheduler(m.cfg, m.api, m.readyTimeout),
	}
	for _, c := range append([]component.Component{m.api}, m.leaders...) {
		if err := r.Start(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// servingSteps follow a running etcd member: the control plane ready, the
// join service, the VIP election and the control socket.
func (m *Master) servingSteps() []component.Step {
	steps := []component.Step{
		{Name: "kube-apiserver ready", Do: func(ctx context.Context, r *component.Runner) error {
			return r.Ready(ctx, m.api)
		}},
		{Name: "controller-manager and scheduler leases", Do: func(ctx context.Context, r *component.Runner) error {
			return r.Ready(ctx, m.leaders...)
		}},
		{Do: func(_ context.Context, r *component.Runner) error {
			cli, err := m.parts.connect(m.cfg)
			if err != nil {
				return err
			}
			m.etcdClient = cli
			r.OnStop("close the etcd client", func(context.Context) error { return cli.Close() })
			// Stopped after the VIP, before the apiserver drains.
			r.OnStop("hand etcd leadership over", func(ctx context.Context) error { return m.handOverEtcdLeadership(ctx, cli) })
			certs.Export(m.cfg.Layout().PKIDir())
			return recordVersions(m.cfg)
		}},
		{Name: "join service", Do: func(ctx context.Context, r *component.Runner) error {
			return r.Start(ctx, m.parts.joinService(m.cfg, m.state, m.etcdClient, m.describe))
		}},
		{Do: func(ctx context.Context, r *component.Runner) error {
			cr := &certRenewer{cfg: m.cfg, interval: renewInterval(), logf: r.Printf}
			if err := r.Start(ctx, cr); err != nil {
				return err
			}
			m.renewerMu.Lock()
			m.renewer = cr
			m.renewerMu.Unlock()
			// Applies the phases of `certs rotate-ca` (carotation.go).
			return r.Start(ctx, &caRotator{m: m, cli: m.etcdClient, renewer: cr, interval: 2 * time.Second, logf: r.Printf})
		}},
	}
	steps = append(steps, component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		return r.Start(ctx, &spaceKeeper{k: etcdspace.New(m.etcdClient, m.cfg.LocalEtcdURL(), etcdspace.Options{})})
	}})
	if m.parts.workers != nil {
		steps = append(steps, m.parts.workers(m)...)
	}
	if c := m.cfg; c.SnapshotInterval > 0 {
		steps = append(steps, component.Step{
			Name: fmt.Sprintf("scheduled snapshots (every %s, keep %d, in %s)", c.SnapshotInterval, c.SnapshotRetention, c.SnapshotDir),
			Do: func(ctx context.Context, r *component.Runner) error {
				src := snapshot.Source{Config: c, State: m.state, Client: m.etcdClient}
				sched := snapshot.Schedule{Dir: c.SnapshotDir, Interval: c.SnapshotInterval, Retention: c.SnapshotRetention}
				return r.Start(ctx, &snapshotScheduler{s: snapshot.NewScheduler(src, sched, r.Printf)})
			}})
	}
	if m.vipAddr != nil {
		m.vip = &vipElection{m: m, addr: m.vipAddr, timeout: m.readyTimeout}
		steps = append(steps, component.Step{
			Name: fmt.Sprintf("VIP %s elected (this master on %s)", m.cfg.VIP, m.vipAddr.Link().Attrs().Name),
			Do: func(ctx context.Context, r *component.Runner) error {
				if err := r.Start(ctx, m.vip); err != nil {
					return err
				}
				if err := r.Ready(ctx, m.vip); err != nil {
					return err
				}
				r.Printf("  VIP %s is held by %s", m.cfg.VIP, m.vip.Holder)
				return nil
			}})
	}
	// vip set, now or later: see vipset.go.
	steps = append(steps, component.Step{Do: func(ctx context.Context, r *component.Runner) error {
		return r.Start(ctx, &vipSettingWatcher{m: m, r: r, applied: m.cfg.VIP})
	}})
	return steps
}

// writeCredentials issues or renews the leaf certificates that are due
// (all: every one) and rewrites the files derived from them; it returns
// how many certificates it wrote.
func writeCredentials(c *config.Config, all bool) (int, error) {
	cas, err := pki.LoadClusterCAs(c)
	if err != nil {
		return 0, err
	}
	issue := pki.EnsureLeaves
	if all {
		issue = pki.RenewLeaves
	}
	written, err := issue(c, cas, time.Now())
	if err != nil {
		return written, err
	}
	// The trust bundles after the leaves: during a CA rotation each names
	// every CA a leaf in use is signed by.
	p := c.Layout().PKIDir()
	for _, k := range caKinds {
		if err := pki.WriteBundle(k.dir(c), k.name); err != nil {
			return written, err
		}
	}
	if err := apiserverconfig.WriteAuthenticationConfig(c.Layout()); err != nil {
		return written, err
	}
	// client-go reloads a CA file named by path (ClientsAllowCARotation,
	// every 5 minutes): the controller-manager and scheduler take up a
	// new bundle in place. The admin kubeconfig embeds it.
	ca := pki.BundlePath(p, pki.ClusterCA)
	for _, k := range []kubeconfig.Spec{
		{Path: c.Layout().AdminKubeconfig(), User: "kubernetes-admin", Server: c.APIServerURL(), CertFile: pki.CertPath(p, pki.Admin), KeyFile: pki.KeyPath(p, pki.Admin)},
		{Path: c.Layout().ControllerManagerKubeconfig(), User: "system:kube-controller-manager", Server: c.LocalAPIServerURL(), CertFile: pki.CertPath(p, pki.ControllerManager), KeyFile: pki.KeyPath(p, pki.ControllerManager), Reference: true},
		{Path: c.Layout().SchedulerKubeconfig(), User: "system:kube-scheduler", Server: c.LocalAPIServerURL(), CertFile: pki.CertPath(p, pki.Scheduler), KeyFile: pki.KeyPath(p, pki.Scheduler), Reference: true},
	} {
		k.ClusterName, k.CAFile = "kubernetes", ca
		if err := kubeconfig.Write(k); err != nil {
			return written, err
		}
	}
	return written, nil
}

// waitForLease waits until the named leader lease has a live holder (on a
// bigger cluster that may be another master).
func waitForLease(ctx context.Context, c *config.Config, name string, timeout time.Duration) error {
	// The local apiserver, not the admin kubeconfig's server: that is the
	// VIP, which this master may not hold and which may not be up yet.
	rc, err := clientcmd.BuildConfigFromFlags(c.LocalAPIServerURL(), c.Layout().AdminKubeconfig())
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	return poll.Until(ctx, 50*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", nil
	}, func() error { return fmt.Errorf("the %s lease has no holder after %s; see the log", name, timeout) })
}

func (m *Master) printReady() {
	p := m.run
	p.Printf("ready in %.1f s", p.Elapsed().Seconds())
	p.Printf("  kubectl --kubeconfig %s get --raw /readyz", m.cfg.Layout().AdminKubeconfig())
	p.Printf("  logs: %s", m.cfg.LogFile)
	if m.etcdClient != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if ms, err := etcd.Members(ctx, m.etcdClient); err == nil {
			for _, w := range etcd.Warnings(ms) {
				p.Printf("warning: %s", w)
			}
		}
		cancel()
	}
	if m.Token != "" {
		p.Printf("join token (valid 24 h, also in %s):", m.cfg.Layout().Token())
		p.Printf("  %s", m.Token)
		p.Printf("add a master: k8s-master join --token <token>")
	}
	if m.workerEndpoint != "" {
		p.Printf("add a worker: k8s-master token create --worker prints its kubeadm join line (apiserver %s)", m.workerEndpoint)
	}
}

func ports(c *config.Config) []preflight.Port {
	return []preflight.Port{
		{Name: "apiserver", Setting: "apiserver-port", Host: c.BindAddress, Port: c.APIServerPort},
		{Name: "etcd client", Setting: "etcd-client-port", Host: c.AdvertiseAddress, Port: c.EtcdClientPort},
		{Name: "etcd peer", Setting: "etcd-peer-port", Host: c.AdvertiseAddress, Port: c.EtcdPeerPort},
		{Name: "etcd metrics", Setting: "etcd-metrics-port", Host: "127.0.0.1", Port: c.EtcdMetricsPort},
		{Name: "controller-manager", Setting: "controller-manager-port", Host: "127.0.0.1", Port: c.ControllerManagerPort},
		{Name: "scheduler", Setting: "scheduler-port", Host: "127.0.0.1", Port: c.SchedulerPort},
		{Name: "join service", Setting: "join-port", Host: c.BindAddress, Port: c.JoinPort},
	}
}

// checkConflicts refuses flags that contradict the recorded cluster.
func checkConflicts(recorded, given *config.Config, explicit map[string]bool, verb string) error {
	diffs := config.Conflicts(recorded, given, explicit)
	if diffs == nil {
		return nil
	}
	hint := "drop those flags"
	if verb == "init" {
		hint += " and run: k8s-master start --data-dir " + given.DataDir
	}
	return fmt.Errorf("data directory %s already holds a cluster whose settings differ: %w; %s (%w)", given.DataDir, diffs, hint, config.Hint("use a new {data-dir} for a new cluster"))
}

func newClusterID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
