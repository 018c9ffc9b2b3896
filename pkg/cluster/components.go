package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/controlplane"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/etcdspace"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/secretskey"
	"github.com/k8s-master/k8s-master/pkg/snapshot"
	"github.com/k8s-master/k8s-master/pkg/version"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// This file adapts each long-running part of a master to the component
// shape. The parts' own packages stay free of the lifecycle; what the
// master needs of them beyond Start, Ready and Stop is in the part
// interfaces below, so that tests can put fakes in their place.

// etcdPart is the local etcd member.
type etcdPart interface {
	component.Component
	component.Readier
	// ClusterID is the etcd cluster ID (hex) once the member runs.
	ClusterID() string
	// HasLeader tells whether the member sees a raft leader now.
	HasLeader() bool
	// TrustStale tells whether the etcd trust bundle on disk differs
	// from the one the member runs with; Reload restarts the member in
	// place to load it.
	TrustStale() bool
	Reload(ctx context.Context) error
}

// apiPart is the local kube-apiserver.
type apiPart interface {
	component.Component
	component.Readier
	// Served is closed once /readyz answered ok.
	Served() <-chan struct{}
	// Gate drains requests on the VIP before a graceful hand-over; nil
	// without a VIP or before the apiserver is built.
	Gate() *controlplane.VIPGate
}

// builder makes the parts of a master; tests replace its functions.
type builder struct {
	etcd              func(c *config.Config, o etcd.Options) etcdPart
	apiServer         func(c *config.Config, timeout time.Duration) apiPart
	controllerManager func(c *config.Config, api apiPart, timeout time.Duration) component.Component
	scheduler         func(c *config.Config, api apiPart, timeout time.Duration) component.Component
	joinService       func(c *config.Config, st *config.State, cli *clientv3.Client, describe func(error) string) component.Component
	// connect opens the master's etcd client (local member).
	connect func(c *config.Config) (*clientv3.Client, error)
	// openVIP checks the VIP against this host and opens its address
	// (nil without a VIP); closeVIP releases the handle.
	openVIP func(c *config.Config, probe bool) (a *vip.Address, closeVIP func(), err error)
	// The membership steps of a join: admission by the cluster, promotion
	// of the caught-up learner, and taking the learner back.
	admit         func(ctx context.Context, tok join.Token, req join.Request, waiting func(string)) (*join.Response, error)
	promote       func(ctx context.Context, c *config.Config, resp *join.Response) error
	removeLearner func(c *config.Config, resp *join.Response) error
	// workers are the steps that serve worker nodes (objects for kubelets
	// and kubeadm, the serving-CSR approver); nil: none.
	workers func(m *Master) []component.Step
	// secretsKey keeps the encryption configuration file equal to the
	// cluster's desired one (pkg/secretskey); nil: the file stays as made.
	secretsKey func(c *config.Config, connect func() (*clientv3.Client, error), logf func(string, ...any)) secretsKeyPart
}

// secretsKeyPart applies the cluster's encryption configuration; the
// apiserver is built only once Synced returned.
type secretsKeyPart interface {
	component.Component
	Synced(ctx context.Context) error
}

// realParts builds the upstream components.
var realParts = builder{
	etcd: func(c *config.Config, o etcd.Options) etcdPart { return &etcdMember{cfg: c, opts: o} },
	apiServer: func(c *config.Config, timeout time.Duration) apiPart {
		return &apiServer{cfg: c, timeout: timeout, served: make(chan struct{})}
	},
	controllerManager: func(c *config.Config, api apiPart, timeout time.Duration) component.Component {
		return &leaderElected{name: "kube-controller-manager", cfg: c, api: api, timeout: timeout, build: controlplane.NewControllerManager}
	},
	scheduler: func(c *config.Config, api apiPart, timeout time.Duration) component.Component {
		return &leaderElected{name: "kube-scheduler", cfg: c, api: api, timeout: timeout, build: controlplane.NewScheduler}
	},
	joinService: func(c *config.Config, st *config.State, cli *clientv3.Client, describe func(error) string) component.Component {
		return &joinService{cfg: c, state: st, cli: cli, describe: describe}
	},
	connect: func(c *config.Config) (*clientv3.Client, error) { return etcd.NewClient(c) },
	openVIP: func(c *config.Config, probe bool) (*vip.Address, func(), error) {
		a, err := openVIP(c, probe)
		if err != nil || a == nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	},
	admit:         join.Send,
	promote:       promote,
	removeLearner: removeLearner,
	workers:       (*Master).workerSteps,
	secretsKey: func(c *config.Config, connect func() (*clientv3.Client, error), logf func(string, ...any)) secretsKeyPart {
		return secretskey.NewApplier(c.Name, c.Layout(), connect, logf)
	},
}

// etcdMember is the embedded etcd member.
type etcdMember struct {
	cfg  *config.Config
	opts etcd.Options

	m        *etcd.Member
	stopOnce sync.Once
	closed   chan struct{} // closed once the member has closed
	exited   chan error
}

func (e *etcdMember) Name() string { return "etcd" }

// Start binds the member's listeners; clients may dial it at once.
func (e *etcdMember) Start(context.Context) error {
	m, err := etcd.Launch(e.cfg, e.opts)
	if err != nil {
		return err
	}
	e.m = m
	e.exited = make(chan error, 1)
	go func() {
		select {
		case err := <-m.Err():
			e.exited <- err
		case <-m.Stopped():
			e.exited <- errors.New("the member stopped")
		}
	}()
	return nil
}

// Ready waits until the member serves: it has a quorum and published
// itself.
func (e *etcdMember) Ready(ctx context.Context) error { return e.m.WaitReady(ctx) }

func (e *etcdMember) Exited() <-chan error { return e.exited }

// Stop closes the member gracefully (leadership is handed over first when
// there are other voters).
func (e *etcdMember) Stop(ctx context.Context) error {
	if e.m == nil {
		return nil
	}
	e.stopOnce.Do(func() {
		e.closed = make(chan struct{})
		go func() { e.m.Close(); close(e.closed) }()
	})
	return await(ctx, e.closed, "etcd is still closing")
}

func (e *etcdMember) ClusterID() string { return e.m.ClusterID() }
func (e *etcdMember) HasLeader() bool   { return e.m != nil && e.m.HasLeader() }
func (e *etcdMember) TrustStale() bool  { return e.m != nil && e.m.TrustStale() }
func (e *etcdMember) Reload(ctx context.Context) error {
	if e.m == nil {
		return errors.New("the etcd member has not started")
	}
	return e.m.Reload(ctx)
}

// apiServer is kube-apiserver. Start builds it in the background (about a
// second of work that overlaps etcd's start); Ready waits for the build
// and /readyz.
type apiServer struct {
	cfg     *config.Config
	timeout time.Duration

	// prepare runs before the build (the encryption configuration synced
	// from etcd); nil: nothing.
	prepare func(ctx context.Context) error

	cancel context.CancelFunc
	built  chan struct{} // closed once a or buildErr is set
	a      *controlplane.APIServer
	err    error
	served chan struct{}
	exited chan error
}

func (s *apiServer) Name() string { return "kube-apiserver" }

func (s *apiServer) Start(ctx context.Context) error {
	// The server lives until Stop, not until the start-up's context ends.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.built, s.exited = cancel, make(chan struct{}), make(chan error, 1)
	go func() {
		if s.prepare != nil {
			if s.err = s.prepare(runCtx); s.err != nil {
				close(s.built)
				return
			}
		}
		s.a, s.err = controlplane.StartAPIServer(runCtx, s.cfg)
		close(s.built)
		if s.err != nil {
			return
		}
		<-s.a.Done()
		s.exited <- s.a.Err()
	}()
	return nil
}

func (s *apiServer) Ready(ctx context.Context) error {
	if err := await(ctx, s.built, ""); err != nil {
		return err
	}
	if s.err != nil {
		return s.err
	}
	if err := s.a.WaitReady(ctx, s.timeout); err != nil {
		return err
	}
	close(s.served)
	return nil
}

func (s *apiServer) Served() <-chan struct{} { return s.served }

func (s *apiServer) Gate() *controlplane.VIPGate {
	select {
	case <-s.built:
		if s.a != nil {
			return s.a.Gate
		}
	default:
	}
	return nil
}

func (s *apiServer) Exited() <-chan error { return s.exited }

// Stop cancels the server's context and waits for it to stop serving; one
// still being built notices the cancelled context once it runs.
func (s *apiServer) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	if err := await(ctx, s.built, "still being built"); err != nil {
		return err
	}
	if s.a == nil {
		return nil
	}
	return await(ctx, s.a.Done(), "still serving")
}

// leaderElected is the controller-manager or the scheduler: built in the
// background at Start (neither talks to the apiserver while being built),
// run under the supervisor from the moment the apiserver serves. Ready
// waits until its lease has a holder, which on a bigger cluster may be
// another master.
type leaderElected struct {
	name    string
	cfg     *config.Config
	api     apiPart
	timeout time.Duration
	build   func(ctx context.Context, c *config.Config) (*controlplane.Supervised, error)

	cancel  context.CancelFunc
	built   chan struct{}
	s       *controlplane.Supervised
	err     error
	running chan struct{}
}

func (l *leaderElected) Name() string { return l.name }

func (l *leaderElected) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.built, l.running = cancel, make(chan struct{}), make(chan struct{})
	go func() {
		l.s, l.err = l.build(runCtx, l.cfg)
		close(l.built)
		if l.err != nil {
			return
		}
		select {
		case <-l.api.Served():
			l.s.Start(runCtx)
			close(l.running)
		case <-runCtx.Done():
		}
	}()
	return nil
}

func (l *leaderElected) Ready(ctx context.Context) error {
	if err := await(ctx, l.built, ""); err != nil {
		return err
	}
	if l.err != nil {
		return l.err
	}
	if err := await(ctx, l.running, ""); err != nil {
		return err
	}
	return waitForLease(ctx, l.cfg, l.name, l.timeout)
}

// Stop cancels the component; it releases its lease while the apiserver
// still answers (it is stopped before the apiserver).
func (l *leaderElected) Stop(ctx context.Context) error {
	if l.cancel == nil {
		return nil
	}
	l.cancel()
	if err := await(ctx, l.built, "still being built"); err != nil {
		return err
	}
	select {
	case <-l.running:
	default:
		return nil // never ran
	}
	return await(ctx, l.s.Done(), "still running")
}

// joinService registers this master in the cluster and serves joins.
type joinService struct {
	cfg   *config.Config
	state *config.State
	cli   *clientv3.Client
	srv   *join.Server

	describe func(error) string
}

func (j *joinService) Name() string { return "join service" }

func (j *joinService) Start(ctx context.Context) error {
	c := j.cfg
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	vs := version.Local()
	info := join.MasterInfo{Name: c.Name, AdvertiseAddress: c.AdvertiseAddress, APIServerPort: c.APIServerPort, JoinPort: c.JoinPort, Versions: &vs}
	if err := join.NewStore(j.cli, nil).RegisterMaster(rctx, info); err != nil {
		return fmt.Errorf("register this master in etcd: %w", err)
	}
	j.srv = join.NewServer(c, j.state, j.cli, j.describe)
	return j.srv.Start()
}

func (j *joinService) Stop(context.Context) error {
	if j.srv != nil {
		j.srv.Close()
	}
	return nil
}

// await waits until ch closes. When ctx ends first it returns ctx's error,
// prefixed by what the part was still doing, if doing is given.
func await(ctx context.Context, ch <-chan struct{}, doing string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		if doing == "" {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
}

// snapshotScheduler takes this master's scheduled snapshots.
type snapshotScheduler struct {
	s      *snapshot.Scheduler
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *snapshotScheduler) Name() string { return "scheduled snapshots" }

func (s *snapshotScheduler) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.s.Run(ctx)
	}()
	return nil
}

// Stop ends the schedule; a snapshot being written is abandoned (its
// temporary file removed), never left half-written under its name.
func (s *snapshotScheduler) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	return await(ctx, s.done, "a snapshot is still being written")
}

// spaceKeeper keeps the etcd database within its quota (pkg/etcdspace).
type spaceKeeper struct {
	k      *etcdspace.Keeper
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *spaceKeeper) Name() string { return "etcd space keeper" }

func (s *spaceKeeper) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.k.Run(ctx)
	}()
	return nil
}

// Stop ends the keeper; a defragmentation under way goes on in etcd to its
// end (it cannot be interrupted), only the wait for it is abandoned.
func (s *spaceKeeper) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	return await(ctx, s.done, "the etcd space keeper is still running")
}
