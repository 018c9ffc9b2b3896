// Package cluster puts a master together: it checks the host and the data
// directory, makes or loads the PKI, and starts etcd, the apiserver, the
// controller-manager and the scheduler in order; it stops them in reverse.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/controlplane"
	"github.com/k8s-master/k8s-master/pkg/datadir"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/kubeconfig"
	"github.com/k8s-master/k8s-master/pkg/logging"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/preflight"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// Options tune a run of init or start.
type Options struct {
	// Out receives the progress lines.
	Out io.Writer
	// Explicit names the flags the user set; init and start refuse them
	// when they contradict what the data directory recorded.
	Explicit map[string]bool
	// ReadyTimeout bounds the wait for the apiserver's /readyz.
	ReadyTimeout time.Duration
}

// Master is a running master.
type Master struct {
	cfg   *config.Config
	state *config.State
	logs  *logging.Sink
	lock  *datadir.Lock

	// etcdClient talks to the local member (join service, registration).
	etcdClient *clientv3.Client
	joinServer *join.Server
	// vipAddr is the VIP on this host's interface; vip runs its election.
	vipAddr *vip.Address
	vip     *vip.Manager
	// Token is the join token init made, "" otherwise.
	Token string

	etcd      *etcd.Member
	apiserver *controlplane.APIServer
	kcm       *controlplane.Supervised
	scheduler *controlplane.Supervised

	// Results of the background construction started by launchControlPlane.
	apiCh   chan built[*controlplane.APIServer]
	kcmCh   chan built[*controlplane.Supervised]
	schedCh chan built[*controlplane.Supervised]

	leadersCtx      context.Context
	cancelLeaders   context.CancelFunc
	cancelAPIServer context.CancelFunc
}

// Config is the configuration the master runs with.
func (m *Master) Config() *config.Config { return m.cfg }

// State is the cluster identity recorded in the data directory.
func (m *Master) State() *config.State { return m.state }

// Init creates a new cluster in an empty data directory and starts its
// first master. On a directory that already holds a cluster it resumes it,
// unless the flags given contradict it.
func Init(ctx context.Context, c *config.Config, o Options) (*Master, error) {
	p := newProgress(o.Out)
	ds, err := datadir.Inspect(c)
	if err != nil {
		return nil, err
	}
	if ds.State != nil {
		if err := checkConflicts(&ds.State.Config, c, o.Explicit, "init"); err != nil {
			return nil, err
		}
		p.printf("%s already holds cluster %s (initialised %s); resuming it. Next time run: k8s-master start --data-dir %s",
			c.DataDir, ds.State.ClusterID, ds.State.CreatedAt.Format(time.RFC3339), c.DataDir)
		return start(ctx, c, ds.State, o, p)
	}
	p.printf("k8s-master: initialising a new cluster in %s (node %s, %s)", c.DataDir, c.Name, c.AdvertiseAddress)
	var vipAddr *vip.Address
	if err := c.CheckIfaceHasVIP(); err != nil {
		return nil, err
	}
	if c.VIP != "" {
		if err := p.step(vipStep(c, true), func() error {
			vipAddr, err = openVIP(c, true)
			return err
		}); err != nil {
			return nil, err
		}
	}
	fresh, err := prepareFreshDir(c, ds, p)
	if err != nil {
		if vipAddr != nil {
			vipAddr.Close()
		}
		return nil, err
	}
	// From here on a failure removes what this init wrote.
	succeeded := false
	var m *Master
	defer func() {
		if !succeeded {
			if m != nil {
				m.stopAll(5 * time.Second)
			}
			fresh.undo(p)
		}
	}()
	logs, err := logging.Setup(c.LogFile, c.LogVerbosity)
	if err != nil {
		return nil, err
	}
	m = &Master{cfg: c, logs: logs, lock: fresh.lock, vipAddr: vipAddr}
	clusterID := newClusterID()

	if err := p.step("cluster PKI and credentials", func() error {
		if err := pki.CreateClusterSecrets(c, time.Now()); err != nil {
			return err
		}
		return m.ensureCredentials(true)
	}); err != nil {
		return nil, err
	}
	if err := p.step("etcd member ready", func() error {
		if m.etcd, err = etcd.Launch(c, etcd.Options{ClusterState: "new", ClusterToken: clusterID, Logger: logs.Zap}); err != nil {
			return err
		}
		m.launchControlPlane(ctx)
		return m.etcd.WaitReady(ctx)
	}); err != nil {
		return nil, err
	}

	pin, err := pki.ReadPin(c)
	if err != nil {
		return nil, err
	}
	m.state = &config.State{
		ClusterID:     clusterID,
		CreatedAt:     time.Now().UTC(),
		CAPin:         pin,
		EtcdClusterID: m.etcd.ClusterID(),
		Config:        *c,
	}
	if err := config.WriteState(c.StatePath(), m.state); err != nil {
		return nil, err
	}
	if err := fresh.commit(); err != nil {
		return nil, err
	}
	// The cluster exists now: later failures leave it for `start`.
	succeeded = true
	if err := m.finishControlPlane(ctx, o, p); err != nil {
		m.stopAll(10 * time.Second)
		return nil, fmt.Errorf("%w; the cluster was created, fix the cause and run: k8s-master start --data-dir %s", err, c.DataDir)
	}
	if err := p.step("first join token", func() error { return m.createFirstToken(ctx) }); err != nil {
		m.stopAll(10 * time.Second)
		return nil, fmt.Errorf("%w; the cluster was created: run k8s-master start --data-dir %s, then k8s-master token create", err, c.DataDir)
	}
	m.printReady(p)
	return m, nil
}

// Start runs the master recorded in the data directory.
func Start(ctx context.Context, c *config.Config, o Options) (*Master, error) {
	st, err := config.ReadState(c.StatePath())
	if errors.Is(err, config.ErrNoState) {
		if _, serr := os.Stat(c.DataDir); serr != nil {
			return nil, fmt.Errorf("data directory %s does not exist; run k8s-master init to create a cluster, or pass --data-dir", c.DataDir)
		}
		return nil, fmt.Errorf("%s holds no initialised master; run k8s-master init --data-dir %s", c.DataDir, c.DataDir)
	}
	if err != nil {
		return nil, err
	}
	if err := checkConflicts(&st.Config, c, o.Explicit, "start"); err != nil {
		return nil, err
	}
	p := newProgress(o.Out)
	p.printf("k8s-master: starting cluster %s from %s", st.ClusterID, c.DataDir)
	return start(ctx, c, st, o, p)
}

func start(ctx context.Context, flags *config.Config, st *config.State, o Options, p *progress) (*Master, error) {
	// The recorded settings rule; only where logs go comes from the flags.
	c := st.Config
	c.DataDir, c.LogFile, c.LogVerbosity = flags.DataDir, flags.LogFile, flags.LogVerbosity

	var vipAddr *vip.Address
	if err := p.step("preflight checks", func() error {
		if err := preflight.CheckPorts(ports(&c)); err != nil {
			return err
		}
		if _, err := preflight.CheckDataDir(c.DataDir); err != nil {
			return err
		}
		var err error
		vipAddr, err = openVIP(&c, false)
		return err
	}); err != nil {
		return nil, err
	}
	lock, err := datadir.Acquire(c.DataDir)
	if err != nil {
		if vipAddr != nil {
			vipAddr.Close()
		}
		return nil, err
	}
	pin, err := pki.ReadPin(&c)
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster CA: %w; restore %s from a backup", err, c.PKIDir())
	}
	if pin != st.CAPin {
		lock.Release()
		return nil, fmt.Errorf("data directory %s holds the CA of a different cluster (%s, but cluster %s has %s); restore the matching pki/ directory or use the data directory it belongs to", c.DataDir, pin, st.ClusterID, st.CAPin)
	}
	switch id, err := etcd.StoredClusterID(&c); {
	case errors.Is(err, etcd.ErrNoData):
		lock.Release()
		return nil, fmt.Errorf("data directory %s has no etcd data (%s is empty); restore it from a backup or snapshot", c.DataDir, c.EtcdDir())
	case err != nil:
		lock.Release()
		return nil, err
	case id != st.EtcdClusterID:
		lock.Release()
		return nil, fmt.Errorf("data directory %s holds etcd data of a different cluster (etcd cluster %s, but cluster %s has %s); restore the matching etcd/ directory or use the data directory it belongs to", c.DataDir, id, st.ClusterID, st.EtcdClusterID)
	}
	logs, err := logging.Setup(c.LogFile, c.LogVerbosity)
	if err != nil {
		lock.Release()
		return nil, err
	}
	m := &Master{cfg: &c, state: st, logs: logs, lock: lock, vipAddr: vipAddr}
	ok := false
	defer func() {
		if !ok {
			m.stopAll(10 * time.Second)
		}
	}()
	if err := p.step("certificates and credentials", func() error { return m.ensureCredentials(false) }); err != nil {
		return nil, err
	}
	if err := p.step("etcd member ready", func() error {
		// A member of a bigger cluster waits for its quorum as long as it
		// takes: after a power loss the masters come back one by one.
		if m.etcd, err = etcd.Launch(&c, etcd.Options{ClusterState: "existing", Logger: logs.Zap, ReadyTimeout: -1, Waiting: func(d time.Duration) {
			p.printf("  waiting for etcd for %.0f s: this member needs a quorum, so start the other masters too", d.Seconds())
		}}); err != nil {
			return err
		}
		// Unlike init, etcd may take long here (no quorum yet), longer than
		// the apiserver waits for it while being built: build it after.
		if err := m.etcd.WaitReady(ctx); err != nil {
			return err
		}
		m.launchControlPlane(ctx)
		return nil
	}); err != nil {
		return nil, err
	}
	if id := m.etcd.ClusterID(); id != st.EtcdClusterID {
		// The WAL said otherwise a moment ago; do not serve a mixed-up member.
		return nil, fmt.Errorf("etcd member of %s runs in cluster %s, but cluster %s has %s", c.DataDir, id, st.ClusterID, st.EtcdClusterID)
	}
	if err := m.finishControlPlane(ctx, o, p); err != nil {
		return nil, err
	}
	ok = true
	m.printReady(p)
	return m, nil
}

// ensureCredentials issues or renews the leaf certificates and rewrites the
// files derived from them.
func (m *Master) ensureCredentials(fresh bool) error {
	c := m.cfg
	cas, err := pki.LoadClusterCAs(c)
	if err != nil {
		return err
	}
	written, err := pki.EnsureLeaves(c, cas, time.Now())
	if err != nil {
		return err
	}
	if err := controlplane.WriteAuthenticationConfig(c); err != nil {
		return err
	}
	p := c.PKIDir()
	ca := pki.CertPath(p, pki.ClusterCA)
	for _, k := range []kubeconfig.Spec{
		{Path: c.AdminKubeconfig(), User: "kubernetes-admin", Server: c.APIServerURL(), CertFile: pki.CertPath(p, pki.Admin), KeyFile: pki.KeyPath(p, pki.Admin)},
		{Path: c.ControllerManagerKubeconfig(), User: "system:kube-controller-manager", Server: c.LocalAPIServerURL(), CertFile: pki.CertPath(p, pki.ControllerManager), KeyFile: pki.KeyPath(p, pki.ControllerManager)},
		{Path: c.SchedulerKubeconfig(), User: "system:kube-scheduler", Server: c.LocalAPIServerURL(), CertFile: pki.CertPath(p, pki.Scheduler), KeyFile: pki.KeyPath(p, pki.Scheduler)},
	} {
		if _, err := os.Stat(k.Path); err == nil && written == 0 && !fresh {
			continue
		}
		k.ClusterName, k.CAFile = "kubernetes", ca
		if err := kubeconfig.Write(k); err != nil {
			return err
		}
	}
	return nil
}

type built[T any] struct {
	v   T
	err error
}

// launchControlPlane builds and starts the apiserver in the background while
// etcd finishes starting, and builds the controller-manager and scheduler
// (neither talks to the apiserver until it runs).
func (m *Master) launchControlPlane(ctx context.Context) {
	c := m.cfg
	apiCtx, cancelAPI := context.WithCancel(context.WithoutCancel(ctx))
	m.cancelAPIServer = cancelAPI
	leadersCtx, cancelLeaders := context.WithCancel(context.WithoutCancel(ctx))
	m.cancelLeaders = cancelLeaders
	m.leadersCtx = leadersCtx

	m.apiCh = make(chan built[*controlplane.APIServer], 1)
	m.kcmCh = make(chan built[*controlplane.Supervised], 1)
	m.schedCh = make(chan built[*controlplane.Supervised], 1)
	go func() {
		a, err := controlplane.StartAPIServer(apiCtx, c)
		m.apiCh <- built[*controlplane.APIServer]{a, err}
	}()
	go func() {
		s, err := controlplane.NewControllerManager(leadersCtx, c)
		m.kcmCh <- built[*controlplane.Supervised]{s, err}
	}()
	go func() {
		s, err := controlplane.NewScheduler(leadersCtx, c)
		m.schedCh <- built[*controlplane.Supervised]{s, err}
	}()
}

// finishControlPlane waits for the apiserver to be ready, starts the
// controller-manager and scheduler that moment, and waits for their leases.
func (m *Master) finishControlPlane(ctx context.Context, o Options, p *progress) error {
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	if err := p.step("kube-apiserver ready", func() error {
		r := <-m.apiCh
		m.apiCh = nil
		m.apiserver = r.v
		if r.err != nil {
			return r.err
		}
		readyErr := m.apiserver.WaitReady(ctx, timeout)
		k, s := <-m.kcmCh, <-m.schedCh
		m.kcm, m.scheduler = k.v, s.v
		if err := errors.Join(readyErr, k.err, s.err); err != nil {
			return err
		}
		m.kcm.Start(m.leadersCtx)
		m.scheduler.Start(m.leadersCtx)
		return nil
	}); err != nil {
		return err
	}
	if err := p.step("controller-manager and scheduler leases", func() error {
		return waitForLeases(ctx, m.cfg, timeout)
	}); err != nil {
		return err
	}
	if err := p.step("join service", m.startJoinService); err != nil {
		return err
	}
	if m.vipAddr == nil {
		return nil
	}
	if err := m.startVIP(); err != nil {
		return err
	}
	var holder string
	if err := p.step(fmt.Sprintf("VIP %s elected (this master on %s)", m.cfg.VIP, m.vipAddr.Link().Attrs().Name), func() error {
		var err error
		holder, err = m.waitVIPHolder(ctx, timeout)
		return err
	}); err != nil {
		return err
	}
	p.printf("  VIP %s is held by %s", m.cfg.VIP, holder)
	return nil
}

// startJoinService registers this master in the cluster and serves joins.
func (m *Master) startJoinService() error {
	c := m.cfg
	cli, err := etcd.NewClient(c)
	if err != nil {
		return err
	}
	m.etcdClient = cli
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info := join.MasterInfo{Name: c.Name, AdvertiseAddress: c.AdvertiseAddress, APIServerPort: c.APIServerPort, JoinPort: c.JoinPort}
	if err := join.NewStore(cli, nil).RegisterMaster(ctx, info); err != nil {
		return fmt.Errorf("register this master in etcd: %w", err)
	}
	m.joinServer = join.NewServer(c, m.state, cli)
	return m.joinServer.Start()
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
	return fsutil.WriteFileAtomic(filepath.Join(m.cfg.DataDir, "token"), []byte(m.Token+"\n"), 0o600)
}

// waitForLeases waits until both leader leases have a live holder (on a
// bigger cluster that may be another master).
func waitForLeases(ctx context.Context, c *config.Config, timeout time.Duration) error {
	// The local apiserver, not the admin kubeconfig's server: that is the
	// VIP, which this master may not hold and which may not be up yet.
	rc, err := clientcmd.BuildConfigFromFlags(c.LocalAPIServerURL(), c.AdminKubeconfig())
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		for {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the %s lease has no holder after %s; see the log", name, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func (m *Master) printReady(p *progress) {
	p.printf("ready in %.1f s", p.elapsed().Seconds())
	p.printf("  kubectl --kubeconfig %s get --raw /readyz", m.cfg.AdminKubeconfig())
	p.printf("  logs: %s", m.cfg.LogFile)
	if m.etcdClient != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if ms, err := etcd.Members(ctx, m.etcdClient); err == nil {
			for _, w := range etcd.Warnings(ms) {
				p.printf("warning: %s", w)
			}
		}
		cancel()
	}
	if m.Token != "" {
		p.printf("join token (valid 24 h, also in %s):", filepath.Join(m.cfg.DataDir, "token"))
		p.printf("  %s", m.Token)
		p.printf("add a master: k8s-master join --token <token>")
	}
}

// Wait blocks until ctx ends (a signal) or a component fails, then stops
// the master in reverse order within timeout. It returns the failure.
func (m *Master) Wait(ctx context.Context, stopTimeout time.Duration, out io.Writer) error {
	var failure error
	select {
	case <-ctx.Done():
	case err := <-m.etcd.Err():
		failure = fmt.Errorf("etcd failed: %w", err)
	case <-m.etcd.Stopped():
		failure = errors.New("etcd stopped unexpectedly; see the log")
	case <-m.apiserver.Done():
		failure = fmt.Errorf("kube-apiserver stopped unexpectedly: %v; see the log", m.apiserver.Err())
	}
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, datadir.LeavingMarker)); err == nil && failure != nil {
		// `leave` removed our member: etcd stopping is the expected end.
		failure = nil
		if out != nil {
			fmt.Fprintln(out, "k8s-master: this master left the cluster")
		}
	}
	if out != nil {
		fmt.Fprintln(out, "k8s-master: stopping")
	}
	t := time.Now()
	m.stopAll(stopTimeout)
	if out != nil {
		fmt.Fprintf(out, "k8s-master: stopped in %.1f s\n", time.Since(t).Seconds())
	}
	return failure
}

// stopAll stops whatever is running, in reverse start order: leader-elected
// components first (they release their leases while the apiserver still
// answers), then the apiserver, then etcd.
func (m *Master) stopAll(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	// The VIP goes first: clients move to another master while this one
	// still answers.
	m.stopVIP(timeout / 4)
	if m.joinServer != nil {
		m.joinServer.Close()
	}
	wait := func(ch <-chan struct{}, what string, share float64) {
		if ch == nil {
			return
		}
		budget := time.Duration(float64(time.Until(deadline)) * share)
		select {
		case <-ch:
		case <-time.After(budget):
			klog.InfoS("Gave up waiting for a component to stop", "component", what, "after", budget)
		}
	}
	if m.cancelLeaders != nil {
		m.cancelLeaders()
		if m.kcm != nil {
			wait(m.kcm.Done(), "kube-controller-manager", 0.3)
		}
		if m.scheduler != nil {
			wait(m.scheduler.Done(), "kube-scheduler", 0.3)
		}
	}
	if m.cancelAPIServer != nil {
		m.cancelAPIServer()
		if m.apiserver == nil && m.apiCh != nil {
			// Still being built: it notices the cancelled context once
			// it runs, so wait for it to exist first.
			select {
			case r := <-m.apiCh:
				m.apiserver = r.v
			case <-time.After(time.Until(deadline) / 2):
			}
		}
		if m.apiserver != nil {
			wait(m.apiserver.Done(), "kube-apiserver", 0.7)
		}
	}
	if m.etcd != nil {
		done := make(chan struct{})
		go func() { m.etcd.Close(); close(done) }()
		wait(done, "etcd", 1)
	}
	if m.etcdClient != nil {
		m.etcdClient.Close()
	}
	if m.logs != nil {
		m.logs.Close()
	}
	m.lock.Release()
}

func ports(c *config.Config) []preflight.Port {
	return []preflight.Port{
		{Name: "apiserver", Flag: "--apiserver-port", Host: c.BindAddress, Port: c.APIServerPort},
		{Name: "etcd client", Flag: "--etcd-client-port", Host: c.AdvertiseAddress, Port: c.EtcdClientPort},
		{Name: "etcd peer", Flag: "--etcd-peer-port", Host: c.AdvertiseAddress, Port: c.EtcdPeerPort},
		{Name: "etcd metrics", Flag: "--etcd-metrics-port", Host: "127.0.0.1", Port: c.EtcdMetricsPort},
		{Name: "controller-manager", Flag: "--controller-manager-port", Host: "127.0.0.1", Port: c.ControllerManagerPort},
		{Name: "scheduler", Flag: "--scheduler-port", Host: "127.0.0.1", Port: c.SchedulerPort},
		{Name: "join service", Flag: "--join-port", Host: c.BindAddress, Port: c.JoinPort},
	}
}

// checkConflicts refuses flags that contradict the recorded cluster.
func checkConflicts(recorded, given *config.Config, explicit map[string]bool, verb string) error {
	diffs := config.Conflicts(recorded, given, explicit)
	if len(diffs) == 0 {
		return nil
	}
	hint := "drop those flags"
	if verb == "init" {
		hint += " and run: k8s-master start --data-dir " + given.DataDir
	}
	return fmt.Errorf("data directory %s already holds a cluster whose settings differ: %s; %s (use a new --data-dir for a new cluster)", given.DataDir, strings.Join(diffs, "; "), hint)
}

func newClusterID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
