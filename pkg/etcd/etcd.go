// Package etcd runs this master's embedded etcd member.
package etcd

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Raft timing for masters on one LAN (round trips well under 5 ms): half of
// etcd's defaults (100/1000 ms), keeping the 10x ratio etcd's tuning guide
// asks for. A crashed leader is replaced within about 0.5-1 s instead of
// 1-2 s, which the VIP's failover depends on, and a fresh single-member
// cluster elects itself within 50-500 ms (etcd leaves a random 1..N election
// ticks to wait even then).
const (
	HeartbeatInterval = 50  // ms
	ElectionTimeout   = 500 // ms
)

// Options are what the member needs beyond the master's Config.
type Options struct {
	// ClusterState is "new" for init and "existing" for a member that joins.
	ClusterState string
	// InitialCluster is "name=peerURL,..."; empty means just this member.
	InitialCluster string
	// ClusterToken seeds the IDs etcd derives for a new cluster. It must be
	// unique per cluster: two clusters bootstrapped with the same member
	// names, peer URLs and token get the same cluster ID.
	ClusterToken string
	Logger       *zap.Logger
	// ReadyTimeout bounds the wait for the member to serve (a new
	// single-member cluster needs well under a second); negative means no
	// limit: a member of a cluster without quorum waits until enough other
	// masters are back.
	ReadyTimeout time.Duration
	// Waiting, when set, is called every 10 s while the member is not ready.
	Waiting func(elapsed time.Duration)
	// Joining marks a learner's first start. Its member catches up from a
	// snapshot of the leader, and when its first publish was applied on
	// the leader before that snapshot was made, the member never applies
	// the publish entry itself and waits out etcd's whole request timeout
	// (5 s + 2 election timeouts) before it publishes again and serves.
	// WaitReady then restarts the member once, which publishes at once.
	Joining bool
}

// Member is a running etcd member. A joining member may be restarted by
// WaitReady; Err and Stopped report on whichever instance runs.
type Member struct {
	cfg  *config.Config
	opts Options

	mu   sync.Mutex
	etcd *embed.Etcd // nil while WaitReady or Reload restarts it
	// trust is the trust bundle the running instance loaded: etcd builds
	// its client and peer trust pools once, at start.
	trust []byte
	// endStreams, closed, ends the running instance's stream RPCs.
	endStreams chan struct{}

	errc     chan error
	stopped  chan struct{}
	stopOnce sync.Once
	restarts int // by WaitReady; read by tests
}

// Launch starts the member and returns as soon as its listeners are bound:
// clients may dial it at once (their connections wait in the backlog), so
// the apiserver can be built while etcd finishes starting. Use WaitReady.
func Launch(c *config.Config, o Options) (*Member, error) {
	m := &Member{cfg: c, opts: o, errc: make(chan error, 1), stopped: make(chan struct{})}
	e, err := m.launch()
	if err != nil {
		return nil, err
	}
	m.etcd = e
	go m.watch(e)
	return m, nil
}

func (m *Member) launch() (*embed.Etcd, error) {
	cfg, err := embedConfig(m.cfg, m.opts)
	if err != nil {
		return nil, err
	}
	trust, err := os.ReadFile(cfg.PeerTLSInfo.TrustedCAFile)
	if err != nil {
		return nil, fmt.Errorf("etcd trust bundle: %w", err)
	}
	endStreams := make(chan struct{})
	cfg.GRPCAdditionalServerOptions = append(cfg.GRPCAdditionalServerOptions, grpc.ChainStreamInterceptor(endStreamsOn(endStreams)))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	// Only this process (root) may use the socket without a certificate.
	if err := os.Chmod(m.cfg.Layout().EtcdSocket(), 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("restrict the etcd socket: %w", err)
	}
	m.mu.Lock()
	m.trust = trust
	m.endStreams = endStreams
	m.mu.Unlock()
	return e, nil
}

// endStreamsOn ends every stream RPC (watches, lease keep-alives) once
// done is closed. Closing a member waits for its RPCs to end, up to etcd's
// request timeout (6 s here) per listener, and a watch never ends on its
// own; ended, the clients re-establish their streams when the member is
// back.
func endStreamsOn(done <-chan struct{}) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		go func() {
			select {
			case <-done:
				cancel()
			case <-ctx.Done():
			}
		}()
		return handler(srv, &streamWithContext{ServerStream: ss, ctx: ctx})
	}
}

type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }

// TrustStale tells whether the trust bundle on disk differs from the one
// the running member loaded (a CA rotation changed it): only a restart of
// the member (Reload) makes etcd use it.
func (m *Member) TrustStale() bool {
	data, err := os.ReadFile(pki.TrustFile(m.cfg.Layout().EtcdPKIDir(), pki.EtcdCA))
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return !sameCerts(data, m.trust)
}

// sameCerts tells whether two PEM bundles hold the same certificates, in
// any order (a rotation rewrites the bundle in another order).
func sameCerts(a, b []byte) bool {
	set := func(data []byte) []string {
		var out []string
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			if block.Type == "CERTIFICATE" {
				out = append(out, string(block.Bytes))
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(set(a), set(b))
}

// Reload restarts the member in place on its data, gracefully (a leader
// hands its leadership over first), so that it loads the trust bundle
// anew. Clients of the local member wait meanwhile (etcd's client waits
// for a connection rather than failing); the process's other parts go on.
// The caller makes sure the cluster keeps its quorum without this member.
func (m *Member) Reload(ctx context.Context) error {
	m.mu.Lock()
	old := m.etcd
	m.etcd = nil
	if old != nil {
		// Watches end first, so that Close does not wait them out; then
		// Close hands leadership over and stops the server.
		close(m.endStreams)
	}
	m.mu.Unlock()
	if old == nil {
		return errors.New("the etcd member is restarting already")
	}
	old.Close()
	e, err := m.launch()
	if err != nil {
		// The process cannot serve without its member: fail it.
		select {
		case m.errc <- fmt.Errorf("restart the etcd member to load the new trust bundle: %w", err):
		default:
		}
		return fmt.Errorf("restart the etcd member: %w", err)
	}
	m.mu.Lock()
	m.etcd = e
	m.mu.Unlock()
	go m.watch(e)
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("the restarted etcd member failed: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("the restarted etcd member is not ready: %w", ctx.Err())
	}
}

// current is the running instance, nil during a restart.
func (m *Member) current() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// watch passes on the fatal error or the stop of instance e, unless e was
// retired by a restart.
func (m *Member) watch(e *embed.Etcd) {
	select {
	case err, ok := <-e.Err():
		if !ok || m.current() != e {
			return
		}
		select {
		case m.errc <- err:
		default:
		}
	case <-e.Server.StopNotify():
		if m.current() == e {
			m.stopOnce.Do(func() { close(m.stopped) })
		}
	}
}

// publishStuck tells whether e's member has its own client URLs in its
// membership (only its publish sets them) but is not ready: the publish
// entry came inside the snapshot it caught up from.
func publishStuck(e *embed.Etcd) bool {
	select {
	case <-e.Server.ReadyNotify():
		return false
	default:
	}
	self := e.Server.Cluster().Member(e.Server.MemberID())
	return self != nil && len(self.ClientURLs) > 0
}

// restart stops the joining member and starts it again on its data, which
// now holds the snapshot: the leader sends it entries instead, and its new
// publish is applied like any entry.
func (m *Member) restart() error {
	m.mu.Lock()
	old := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if m.opts.Logger != nil {
		m.opts.Logger.Warn("restarting the joining member: its first publish was applied inside the snapshot it caught up from, so etcd would wait out its request timeout before serving")
	}
	// Stop the server first: embed's Close otherwise waits for the stuck
	// publish before it shuts its client listeners.
	old.Server.HardStop()
	old.Close()
	e, err := m.launch()
	if err != nil {
		return fmt.Errorf("restart the joining etcd member: %w", err)
	}
	m.mu.Lock()
	m.etcd = e
	m.restarts++
	m.mu.Unlock()
	go m.watch(e)
	return nil
}

// WaitReady waits until the member serves clients (it has joined a quorum
// and published itself). On failure the member is stopped.
func (m *Member) WaitReady(ctx context.Context) error {
	timeout := m.opts.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	var expired <-chan time.Time
	if timeout > 0 {
		expired = time.After(timeout)
	}
	start := time.Now()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	// A joining member whose publish is stuck is restarted once, after a
	// grace that lets an entry applied just after the snapshot trigger it.
	var check <-chan time.Time
	if m.opts.Joining {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		check = t.C
	}
	var stuckSince time.Time
	fail := func(err error) error {
		m.Close()
		return err
	}
	for {
		e := m.current()
		select {
		case <-e.Server.ReadyNotify():
			return nil
		case err := <-m.errc:
			return fail(fmt.Errorf("etcd failed while starting: %w", err))
		case <-expired:
			return fail(fmt.Errorf("etcd was not ready after %s; see the log for why (no quorum?)", timeout))
		case <-tick.C:
			if m.opts.Waiting != nil {
				m.opts.Waiting(time.Since(start))
			}
		case <-check:
			switch {
			case !publishStuck(e):
				stuckSince = time.Time{}
			case stuckSince.IsZero():
				stuckSince = time.Now()
			case time.Since(stuckSince) >= stuckPublishGrace:
				check = nil
				if err := m.restart(); err != nil {
					return fail(err)
				}
			}
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

// stuckPublishGrace is how long a joining member may show its own
// published attributes without being ready before WaitReady restarts it.
// Applying the publish entry closes readiness within milliseconds, so
// this only waits out a busy machine; a needless restart costs ~0.3 s.
const stuckPublishGrace = 250 * time.Millisecond

func embedConfig(c *config.Config, o Options) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Layout().EtcdDir()
	peer, err := url.Parse(c.EtcdPeerURL())
	if err != nil {
		return nil, err
	}
	advClient, err := url.Parse(c.EtcdAdvertiseClientURL())
	if err != nil {
		return nil, err
	}
	localClient, err := url.Parse(c.LocalEtcdURL())
	if err != nil {
		return nil, err
	}
	// sun_path holds 107 bytes and a NUL.
	if sock := c.Layout().EtcdSocket(); len(sock) > 107 {
		return nil, fmt.Errorf("the etcd socket path %s is longer than a unix socket allows (107 bytes): choose a shorter --data-dir", sock)
	}
	socket, err := url.Parse(c.LocalEtcdSocketURL())
	if err != nil {
		return nil, err
	}
	metrics, err := url.Parse("http://" + config.Host("127.0.0.1", c.EtcdMetricsPort))
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.AdvertiseClientUrls = []url.URL{*advClient}
	cfg.ListenClientUrls = []url.URL{*advClient}
	if localClient.Host != advClient.Host {
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, *localClient)
	}
	cfg.ListenClientUrls = append(cfg.ListenClientUrls, *socket)
	cfg.ListenMetricsUrls = []url.URL{*metrics}
	cfg.Metrics = "basic"

	cfg.ClusterState = o.ClusterState
	if cfg.ClusterState == "" {
		cfg.ClusterState = embed.ClusterStateFlagNew
	}
	cfg.InitialCluster = o.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = c.Name + "=" + peer.String()
	}
	if cfg.ClusterState == embed.ClusterStateFlagNew && o.ClusterToken == "" {
		return nil, fmt.Errorf("a new etcd cluster needs a unique cluster token")
	}
	cfg.InitialClusterToken = o.ClusterToken
	cfg.StrictReconfigCheck = true
	if cfg.QuotaBackendBytes, err = c.EtcdQuota.Bytes(); err != nil {
		return nil, err
	}
	cfg.PreVote = true
	cfg.TickMs = HeartbeatInterval
	cfg.ElectionMs = ElectionTimeout

	dir := c.Layout().EtcdPKIDir()
	tls := transport.TLSInfo{
		// The bundle: during a CA rotation, the old and the new etcd CA.
		TrustedCAFile:  pki.TrustFile(dir, pki.EtcdCA),
		ClientCertAuth: true,
	}
	cfg.ClientTLSInfo = tls
	cfg.ClientTLSInfo.CertFile = pki.CertPath(dir, pki.EtcdServer)
	cfg.ClientTLSInfo.KeyFile = pki.KeyPath(dir, pki.EtcdServer)
	cfg.PeerTLSInfo = tls
	cfg.PeerTLSInfo.CertFile = pki.CertPath(dir, pki.EtcdPeer)
	cfg.PeerTLSInfo.KeyFile = pki.KeyPath(dir, pki.EtcdPeer)

	if o.Logger != nil {
		cfg.Logger = "zap"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(o.Logger)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd configuration: %w", err)
	}
	return cfg, nil
}

// ClusterID is the etcd cluster ID in the hex form etcdctl prints.
func (m *Member) ClusterID() string {
	if e := m.current(); e != nil {
		return e.Server.Cluster().ID().String()
	}
	return ""
}

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.errc }

// Stopped is closed when the member has stopped.
func (m *Member) Stopped() <-chan struct{} { return m.stopped }

// Close stops the member gracefully (leadership is handed over first when
// there are other voters) and releases its ports.
func (m *Member) Close() {
	if e := m.current(); e != nil {
		e.Close()
	}
}

// ClientTLS returns the files this master's etcd clients present and
// verify the members with.
func ClientTLS(c *config.Config) transport.TLSInfo {
	l := c.Layout()
	return transport.TLSInfo{
		TrustedCAFile: pki.TrustFile(l.EtcdPKIDir(), pki.EtcdCA),
		CertFile:      pki.CertPath(l.PKIDir(), pki.APIServerEtcdClient),
		KeyFile:       pki.KeyPath(l.PKIDir(), pki.APIServerEtcdClient),
	}
}

// HasData tells whether the data directory already holds a member's data.
func HasData(c *config.Config) bool {
	ok, _ := filepath.Glob(filepath.Join(c.Layout().EtcdWALDir(), "*.wal"))
	return len(ok) > 0
}

// HasLeader tells whether the member knows a raft leader now (a member
// cut off from the majority soon does not).
func (m *Member) HasLeader() bool {
	e := m.current()
	return e != nil && e.Server.Leader() != 0
}
