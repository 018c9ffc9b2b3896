package vip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// ElectionKey names the VIP's holder. It is attached to the holder's
// session lease, so it vanishes when the holder stops renewing.
const ElectionKey = "/k8s-master/vip/holder"

// HolderInfo is the election key's value: who holds the VIP and where the
// other masters can check that it is still alive.
type HolderInfo struct {
	Name          string    `json:"name"`
	Address       string    `json:"address"`
	APIServerPort int       `json:"apiserverPort"`
	EtcdPeerPort  int       `json:"etcdPeerPort"`
	Since         time.Time `json:"since"`
	// VIP is the address the holder holds: while `vip set` moves the VIP,
	// the election key may still name a holder of the old one.
	VIP string `json:"vip,omitempty"`
}

// ReadHolder returns the current holder and its lease, or nil when nobody
// holds the VIP.
func ReadHolder(ctx context.Context, cli *clientv3.Client) (*HolderInfo, clientv3.LeaseID, error) {
	resp, err := cli.Get(ctx, ElectionKey)
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var h HolderInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		return nil, 0, fmt.Errorf("the VIP holder record is corrupt: %w", err)
	}
	return &h, clientv3.LeaseID(resp.Kvs[0].Lease), nil
}

// vipAddress is what the election does with the VIP on this host: an
// *Address in production, a recorder in the election's tests.
type vipAddress interface {
	Claim() error
	Held() (bool, error)
	Release() error
	Announce() error
}

// ErrStepDown, wrapped in a health check's error, makes a holder give the
// VIP up at once instead of after three failed checks (the master is
// leaving the cluster, say).
var ErrStepDown = errors.New("stepping down")

// ElectionConfig configures a Manager.
type ElectionConfig struct {
	// Self describes this master in the election key.
	Self HolderInfo
	// LeaseTTL is the session's TTL: a holder that dies keeps the VIP at
	// most this long (less when the others see its ports closed).
	LeaseTTL time.Duration
	// Client must talk to the local etcd member only: a master cut off from
	// the majority must fail to renew rather than reach it another way.
	Client *clientv3.Client
	// Healthy reports whether this master may hold the VIP (its apiserver
	// is ready and its etcd member sees a leader).
	Healthy func(context.Context) error
	Logger  klog.Logger
	// Drain, when set, finishes the requests in flight on the VIP before a
	// graceful release (stop, step-down, failed health checks; never a
	// lost session, which must drop the VIP at once); Undrain serves again
	// after a release that did not end in a stop.
	Drain   func(context.Context)
	Undrain func()
	// CampaignDelay, when set, says how long to hold a campaign back. A
	// master whose etcd member leads waits, so that a follower wins: the
	// holder would otherwise hand etcd's leadership away at once, and a
	// hand-over can fail a write in flight.
	CampaignDelay func(context.Context) time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Manager runs this master's part of the VIP election: it campaigns while
// healthy, holds the VIP while its session lives, and watches the holder
// otherwise.
type Manager struct {
	cfg  ElectionConfig
	addr vipAddress
	// lifetime is the address's valid lifetime on the interface, the
	// kernel's own deadline should this process die; tick is how often a
	// holder renews (a quarter of lifetime).
	lifetime time.Duration
	tick     time.Duration
	log      klog.Logger

	mu      sync.Mutex
	holding bool
	cancel  context.CancelFunc
	done    chan struct{}
	// The last health check's result, when it finished and its number:
	// checks run in the background so that a takeover does not wait for
	// one (a TLS handshake and /readyz cost tens of milliseconds).
	health    error
	healthAt  time.Time
	healthSeq int

	// A standby keeps a renewed lease ready, so that its campaign is one
	// transaction: spareRenewed is when its last renewal was sent. Only the
	// run goroutine touches these.
	spare        clientv3.LeaseID
	spareTTL     time.Duration
	spareRenewed time.Time
}

// AddressLifetime is the valid lifetime the holder gives the address for a
// session TTL: a third of it, at least a second (the kernel counts whole
// seconds). It must end well before the lease can expire, so that a dead
// holder's address is gone before anyone else may claim the VIP.
func AddressLifetime(ttl time.Duration) time.Duration {
	return max(time.Second, (ttl / 3).Truncate(time.Second))
}

// NewManager prepares the election for the VIP at addr.
func NewManager(cfg ElectionConfig, addr *Address) (*Manager, error) {
	if addr == nil {
		return nil, errors.New("no VIP address")
	}
	m, err := newManager(cfg, addr, addr.lifetime)
	if err != nil {
		return nil, err
	}
	addr.SetLogger(m.log)
	return m, nil
}

func newManager(cfg ElectionConfig, addr vipAddress, lifetime time.Duration) (*Manager, error) {
	if cfg.LeaseTTL < 2*time.Second {
		return nil, fmt.Errorf("VIP lease TTL %s is under 2 s", cfg.LeaseTTL)
	}
	if lifetime > cfg.LeaseTTL-time.Second {
		return nil, fmt.Errorf("VIP address lifetime %s must end at least a second before the %s lease", lifetime, cfg.LeaseTTL)
	}
	if cfg.Client == nil || cfg.Healthy == nil {
		return nil, errors.New("VIP election needs an etcd client and a health check")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log.GetSink() == nil {
		log = klog.Background()
	}
	return &Manager{cfg: cfg, addr: addr, lifetime: lifetime, tick: lifetime / 4, log: log.WithName("vip")}, nil
}

// Start runs the election until Stop.
func (m *Manager) Start() {
	registerMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		healthDone := make(chan struct{})
		go func() {
			defer close(healthDone)
			m.healthLoop(ctx)
		}()
		m.run(ctx)
		<-healthDone
	}()
}

// healthLoop checks this master's health twice per address lifetime.
func (m *Manager) healthLoop(ctx context.Context) {
	ticker := time.NewTicker(m.tick * 2)
	defer ticker.Stop()
	for {
		err := m.cfg.Healthy(ctx)
		m.mu.Lock()
		m.health, m.healthAt = err, m.cfg.Now()
		m.healthSeq++
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// healthy returns the latest health check's result and number; a check
// that has not finished for 4 ticks counts as failed.
func (m *Manager) healthy() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.healthAt.IsZero():
		return m.healthSeq, errors.New("not checked yet")
	case m.cfg.Now().Sub(m.healthAt) > m.tick*8:
		return m.healthSeq, fmt.Errorf("%w for %s", errHealthStalled, m.cfg.Now().Sub(m.healthAt).Round(time.Millisecond))
	}
	return m.healthSeq, m.health
}

var errHealthStalled = errors.New("the health check has not answered")

// Stop gives the VIP up if this master holds it (address removed first,
// then the election key, so that the next holder can take it at once) and
// ends the election. It returns when done or when ctx ends.
func (m *Manager) Stop(ctx context.Context) {
	if m.cancel == nil {
		return
	}
	m.cancel()
	select {
	case <-m.done:
	case <-ctx.Done():
	}
}

// Holding tells whether this master holds the VIP now.
func (m *Manager) Holding() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holding
}

func (m *Manager) setHolding(v bool) {
	m.mu.Lock()
	changed := m.holding != v
	m.holding = v
	m.mu.Unlock()
	if changed {
		transitions.Inc()
		if v {
			holderGauge.Set(1)
		} else {
			holderGauge.Set(0)
		}
	}
}

func (m *Manager) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (m *Manager) run(ctx context.Context) {
	// A leftover address from an earlier run of this process is not ours to
	// keep: the election decides.
	if err := m.addr.Release(); err != nil {
		m.log.Error(err, "Could not remove a leftover VIP")
	}
	var vacantSince time.Time
	unhealthyLogged := false
	for ctx.Err() == nil {
		if _, err := m.healthy(); err != nil {
			if !unhealthyLogged {
				m.log.Info("Not campaigning for the VIP while unhealthy", "reason", err.Error())
				unhealthyLogged = true
			}
			m.sleep(ctx, m.tick/2)
			continue
		}
		unhealthyLogged = false
		if m.cfg.CampaignDelay != nil {
			if d := m.cfg.CampaignDelay(ctx); d > 0 && !m.sleep(ctx, d) {
				continue
			}
		}
		c, err := m.campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Info("VIP campaign failed; retrying", "err", err.Error())
			}
			m.sleep(ctx, m.tick*2)
			continue
		}
		if c.won {
			if vacantSince.IsZero() {
				vacantSince = c.granted
			}
			m.hold(ctx, c, vacantSince)
			vacantSince = time.Time{}
			continue
		}
		vacantSince = m.watch(ctx, c.rev)
	}
	if m.spare != 0 {
		m.revoke(m.spare)
	}
}

// campaignResult is the session a won campaign holds, or the revision a
// lost one watches from.
type campaignResult struct {
	won   bool
	lease clientv3.LeaseID
	ttl   time.Duration
	// granted is taken before the lease was asked for: the lease lives at
	// least ttl from then.
	granted time.Time
	rev     int64
}

// campaign puts this master in the election key if it is free.
func (m *Manager) campaign(ctx context.Context) (campaignResult, error) {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.LeaseTTL)
	defer cancel()
	if err := m.readySpare(cctx); err != nil {
		return campaignResult{}, err
	}
	lease, ttl, granted := m.spare, m.spareTTL, m.spareRenewed
	self := m.cfg.Self
	self.Since = m.cfg.Now().UTC()
	val, _ := json.Marshal(self)
	resp, err := m.cfg.Client.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(ElectionKey), "=", 0)).
		Then(clientv3.OpPut(ElectionKey, string(val), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(ElectionKey)).
		Commit()
	if err != nil {
		// The put may have landed: then the watch finds this master's
		// name on the spare lease and ends that session. A lease that is
		// gone is of no more use.
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			m.spare = 0
		}
		return campaignResult{}, fmt.Errorf("claim the election key: %w", err)
	}
	if !resp.Succeeded {
		return campaignResult{rev: resp.Header.Revision}, nil
	}
	m.spare = 0
	return campaignResult{won: true, lease: lease, ttl: ttl, granted: granted}, nil
}

// readySpare makes sure the spare lease has long enough to live for a
// claim: the address must lapse (its lifetime, plus slack) before the
// lease can. Otherwise it asks for a new lease.
func (m *Manager) readySpare(ctx context.Context) error {
	if m.spare != 0 && m.cfg.Now().Sub(m.spareRenewed) < m.spareTTL-m.lifetime-500*time.Millisecond {
		return nil
	}
	if m.spare != 0 {
		m.revoke(m.spare)
		m.spare = 0
	}
	sent := m.cfg.Now()
	grant, err := m.cfg.Client.Grant(ctx, int64(m.cfg.LeaseTTL/time.Second))
	if err != nil {
		return fmt.Errorf("grant a session lease: %w", err)
	}
	m.spare, m.spareTTL, m.spareRenewed = grant.ID, time.Duration(grant.TTL)*time.Second, sent
	return nil
}

// renewSpare keeps the spare lease alive while this master waits.
func (m *Manager) renewSpare(ctx context.Context) {
	if m.spare == 0 {
		if err := m.readySpare(ctx); err != nil {
			m.log.V(2).Info("Could not get a spare VIP lease", "err", err.Error())
		}
		return
	}
	sent := m.cfg.Now()
	kctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := m.cfg.Client.KeepAliveOnce(kctx, m.spare)
	switch {
	case err == nil:
		m.spareRenewed = sent
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		m.spare = 0
	}
}

func (m *Manager) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = m.cfg.Client.Revoke(ctx, id)
}

// hold keeps the VIP while the session lives: every tick it renews the
// lease and, only when the renewal came back quickly, the address's
// lifetime. It gives the VIP up at once when the session is lost, when it
// cannot renew in time, after three failed health checks, or on Stop.
func (m *Manager) hold(ctx context.Context, c campaignResult, vacantSince time.Time) {
	lease, ttl := c.lease, c.ttl
	log := m.log.WithValues("lease", fmt.Sprintf("%x", int64(lease)))
	won := m.cfg.Now()
	if err := m.addr.Claim(); err != nil {
		log.Error(err, "Won the VIP election but cannot add the VIP; resigning")
		m.resign(lease)
		m.sleep(ctx, m.tick*4)
		return
	}
	m.setHolding(true)
	announceErr := m.addr.Announce()
	took := m.cfg.Now().Sub(vacantSince)
	lastTakeover.Set(took.Seconds())
	log.Info("Holding the VIP", "takeover", took.String(), "leaseRenewedAgo", won.Sub(c.granted).String(), "claimAndAnnounce", m.cfg.Now().Sub(won).String())
	if announceErr != nil {
		log.Error(announceErr, "Could not announce the VIP")
	}

	// A renewal answered later than this may leave the address outliving
	// the lease: such an answer renews the lease but not the address.
	maxRTT := ttl - m.lifetime - 500*time.Millisecond
	lastRenewal := c.granted
	failedChecks := 0
	lastCheck, _ := m.healthy()
	burst := 2 // more gratuitous ARPs shortly after the takeover
	nextAnnounce := m.cfg.Now().Add(announceInterval)
	ticker := time.NewTicker(m.tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			m.drain()
			m.release(lease, "stopping")
			return
		case <-ticker.C:
		}
		sent := m.cfg.Now()
		var renewErr error
		if sent.Sub(lastRenewal) < m.tick*3/2 {
			// Renewed a tick ago: this tick refreshes the address only.
			// The lease is renewed every other tick, so when the holder
			// is cut off its lease ends between TTL − 2 ticks and TTL
			// after the cut, on average a tick before the TTL; the
			// address, refreshed at most a tick after a renewal, still
			// lapses long before the lease (and at most 1.5 s after the
			// cut).
			m.refreshAddress(log, &burst)
		} else {
			kctx, cancel := context.WithTimeout(ctx, maxRTT)
			renewErr = m.renew(kctx, lease)
			cancel()
			if ctx.Err() != nil {
				m.drain()
				m.release(lease, "stopping")
				return
			}
			switch {
			case errors.Is(renewErr, errSessionLost):
				m.release(0, "session lost: "+renewErr.Error())
				return
			case renewErr == nil && m.cfg.Now().Sub(sent) < maxRTT:
				lastRenewal = sent
				m.refreshAddress(log, &burst)
			}
		}
		if m.cfg.Now().Sub(lastRenewal) > ttl-500*time.Millisecond {
			m.release(0, fmt.Sprintf("could not renew the session within %s (last error: %v)", ttl-500*time.Millisecond, renewErr))
			return
		}
		// Each new check result counts once; a stalled check counts every
		// tick.
		if seq, err := m.healthy(); seq != lastCheck || errors.Is(err, errHealthStalled) {
			lastCheck = seq
			if err != nil {
				failedChecks++
				if failedChecks >= 3 || errors.Is(err, ErrStepDown) {
					m.drain()
					m.release(lease, "unhealthy: "+err.Error())
					if m.cfg.Undrain != nil {
						m.cfg.Undrain()
					}
					return
				}
			} else {
				failedChecks = 0
			}
		}
		if burst > 0 || m.cfg.Now().After(nextAnnounce) {
			if burst > 0 {
				burst--
			}
			nextAnnounce = m.cfg.Now().Add(announceInterval)
			if err := m.addr.Announce(); err != nil {
				log.Error(err, "Could not announce the VIP")
			}
		}
	}
}

// refreshAddress renews the address's lifetime, adding it again (and
// announcing it more) if something removed it.
func (m *Manager) refreshAddress(log klog.Logger, burst *int) {
	held, err := m.addr.Held()
	if err == nil && !held {
		log.Info("The VIP was removed from the interface while held; adding it again")
		*burst = 2
	}
	if err := m.addr.Claim(); err != nil {
		log.Error(err, "Could not refresh the VIP")
	}
}

// drain lets the requests in flight on the VIP finish, for at most
// 500 ms: the address, refreshed at most a tick ago, outlives that.
func (m *Manager) drain() {
	if m.cfg.Drain == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := m.cfg.Now()
	m.cfg.Drain(ctx)
	m.log.V(2).Info("Drained the requests on the VIP", "took", m.cfg.Now().Sub(start).String())
}

// announceInterval spaces the periodic gratuitous ARPs that keep switches
// and neighbours pointed at the holder.
const announceInterval = 5 * time.Second

var errSessionLost = errors.New("VIP session lost")

// renew extends the session and checks that the key still names it.
func (m *Manager) renew(ctx context.Context, lease clientv3.LeaseID) error {
	if _, err := m.cfg.Client.KeepAliveOnce(ctx, lease); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("%w: the lease is gone", errSessionLost)
		}
		return err
	}
	resp, err := m.cfg.Client.Get(ctx, ElectionKey)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		return fmt.Errorf("%w: the election key no longer names this master", errSessionLost)
	}
	return nil
}

// release removes the address first, then (lease != 0) resigns.
func (m *Manager) release(lease clientv3.LeaseID, why string) {
	if err := m.addr.Release(); err != nil {
		m.log.Error(err, "Could not remove the VIP")
	}
	m.setHolding(false)
	m.log.Info("Gave up the VIP", "reason", why)
	if lease != 0 {
		m.resign(lease)
	}
}

// resign deletes the election key if it is still ours, then ends the
// session; the other masters see the delete and one takes over at once.
func (m *Manager) resign(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = m.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(ElectionKey), "=", lease)).
		Then(clientv3.OpDelete(ElectionKey)).
		Commit()
	_, _ = m.cfg.Client.Revoke(ctx, lease)
}

// watch waits until the VIP is free (the key deleted or expired) and
// returns when this master noticed. While it waits it checks whether the
// holder's process is gone: see holderDead.
func (m *Manager) watch(ctx context.Context, rev int64) time.Time {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := m.cfg.Client.Watch(wctx, ElectionKey, clientv3.WithRev(rev+1))
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	probe := time.NewTicker(200 * time.Millisecond)
	defer probe.Stop()
	ttlTick := time.NewTicker(leasePollSlow)
	defer ttlTick.Stop()
	var lw leaseWatch
	var holder *HolderInfo
	var holderLease clientv3.LeaseID
	var deadSince time.Time
	refresh := func() bool {
		gctx, gcancel := context.WithTimeout(ctx, time.Second)
		defer gcancel()
		h, l, err := ReadHolder(gctx, m.cfg.Client)
		if err != nil {
			return false
		}
		if h == nil {
			return true
		}
		if l != holderLease {
			deadSince = time.Time{}
		}
		holder, holderLease = h, l
		return false
	}
	if refresh() {
		return m.cfg.Now()
	}
	for {
		select {
		case <-ctx.Done():
			return time.Time{}
		case wr, ok := <-events:
			if !ok || wr.Canceled {
				// Watches end on compaction or a lost member; the poll
				// covers the gap until a new one.
				events = m.cfg.Client.Watch(wctx, ElectionKey)
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return m.cfg.Now()
				}
			}
			if refresh() {
				return m.cfg.Now()
			}
		case <-poll.C:
			m.renewSpare(ctx)
			if _, err := m.healthy(); err != nil {
				// Back to the health gate; campaigning resumes from there.
				return time.Time{}
			}
			if refresh() {
				return m.cfg.Now()
			}
		case <-ttlTick.C:
			if holder == nil || holder.Name == m.cfg.Self.Name {
				continue
			}
			if lw.lease != holderLease {
				lw = leaseWatch{lease: holderLease}
			}
			expired, next := m.pollLease(ctx, &lw)
			ttlTick.Reset(next)
			if expired {
				m.log.Info("The VIP holder's session expired (it renewed nothing for its TTL); ending it", "holder", holder.Name)
				m.revoke(holderLease)
				return m.cfg.Now()
			}
		case <-probe.C:
			if holder == nil {
				continue
			}
			if holder.Name == m.cfg.Self.Name {
				// Our own session from before a restart (that process is
				// gone, and so is its claim) or from a campaign whose
				// answer was lost.
				m.log.Info("Ending the VIP session of this master's previous run")
				m.revoke(holderLease)
				if holderLease == m.spare {
					m.spare = 0
				}
				return m.cfg.Now()
			}
			if !holderDead(holder) {
				deadSince = time.Time{}
				continue
			}
			now := m.cfg.Now()
			if deadSince.IsZero() {
				deadSince = now
				continue
			}
			// The dead holder renewed its address at the latest when we
			// first saw its ports closed; the kernel drops the address one
			// lifetime later (plus its 250 ms timer slack). Only then may
			// the VIP move, or two hosts would answer for it.
			if now.Sub(deadSince) < m.lifetime+400*time.Millisecond {
				continue
			}
			m.log.Info("The VIP holder's process is gone (its ports refuse connections); ending its session", "holder", holder.Name)
			m.revoke(holderLease)
			return deadSince
		}
	}
}

// How often a standby asks for the holder's remaining lease TTL: slowly
// while the holder renews (the answer stays at 2 s or more), quickly once
// it is under 2 s, so that the end of the last second is seen within
// leasePollFast.
const (
	leasePollSlow = 250 * time.Millisecond
	leasePollFast = 50 * time.Millisecond
)

// leaseWatch follows the holder's lease as the etcd leader counts it.
type leaseWatch struct {
	lease clientv3.LeaseID
	// zeroAt is when an answer of TTL 0 came back, in raft term term.
	zeroAt time.Time
	term   uint64
}

// pollLease asks for the holder's remaining TTL and tells whether the
// lease has certainly expired, and when to ask again. etcd revokes expired
// leases only every 500 ms; a standby that sees the expiry itself takes
// over up to that much sooner, so a holder cut off from the network costs
// its TTL and little more.
//
// etcd answers the remaining time in whole seconds, rounded toward zero:
// TTL 0 means less than a second was left when the leader answered. An
// answer of 0 again to a request sent a second or more after the first 0
// came back, in the same raft term, proves the lease expired at that
// leader with no renewal in between (a renewal restarts the full TTL, and
// the answer would be at least 1). The leader refuses renewals of an
// expired lease, so from then on the holder cannot extend its address,
// which lapsed long before (its lifetime is a third of the TTL): ending
// the session is what etcd's own revoke would do a little later.
func (m *Manager) pollLease(ctx context.Context, w *leaseWatch) (bool, time.Duration) {
	sent := m.cfg.Now()
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	resp, err := m.cfg.Client.TimeToLive(tctx, w.lease)
	cancel()
	if err != nil {
		w.zeroAt = time.Time{}
		return false, leasePollSlow
	}
	switch {
	case resp.TTL >= 2:
		w.zeroAt = time.Time{}
		return false, leasePollSlow
	case resp.TTL == 1:
		w.zeroAt = time.Time{}
		return false, leasePollFast
	case resp.TTL == 0:
		if w.zeroAt.IsZero() || resp.GetRaftTerm() != w.term {
			w.zeroAt, w.term = m.cfg.Now(), resp.GetRaftTerm()
			return false, leasePollFast
		}
		if sent.Sub(w.zeroAt) >= time.Second {
			return true, leasePollSlow
		}
		// Ask next just as the second since the first 0 is over.
		return false, max(time.Millisecond, min(leasePollFast, time.Second-sent.Sub(w.zeroAt)))
	}
	// -1: gone or long expired; the watch reports the delete.
	return false, leasePollSlow
}

// holderDead tells whether the holder's host refuses connections on both
// its apiserver and etcd peer ports: its kernel answers, but the master
// process (which serves both) is gone. A timeout proves nothing (a
// partition looks the same) and leaves the decision to the lease.
func holderDead(h *HolderInfo) bool {
	for _, port := range []int{h.APIServerPort, h.EtcdPeerPort} {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, fmt.Sprint(port)), 150*time.Millisecond)
		if err == nil {
			conn.Close()
			return false
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return false
		}
	}
	return true
}
