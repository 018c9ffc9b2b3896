package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// lan records who holds the VIP, standing in for the interfaces of several
// hosts, with the kernel's rule that an address not refreshed within its
// lifetime goes away: a claim while another host holds it is the failure
// the election exists to prevent.
type lan struct {
	mu         sync.Mutex
	holders    map[string]time.Time // until when each holds it
	violations []string
}

const fakeLifetime = time.Second

type fakeAddress struct {
	name      string
	lan       *lan
	announces atomic.Int32
}

func (a *fakeAddress) Claim() error {
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	now := time.Now()
	for other, until := range a.lan.holders {
		if other != a.name && until.After(now) {
			a.lan.violations = append(a.lan.violations, fmt.Sprintf("%s claimed while %s held the VIP", a.name, other))
		}
	}
	a.lan.holders[a.name] = now.Add(fakeLifetime)
	return nil
}

func (a *fakeAddress) Held() (bool, error) {
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	return a.lan.holders[a.name].After(time.Now()), nil
}

func (a *fakeAddress) Release() error {
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	delete(a.lan.holders, a.name)
	return nil
}

func (a *fakeAddress) Announce() error { a.announces.Add(1); return nil }

func (l *lan) holder() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var hs []string
	for h, until := range l.holders {
		if until.After(time.Now()) {
			hs = append(hs, h)
		}
	}
	return hs
}

func (l *lan) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
}

type candidate struct {
	name    string
	mgr     *Manager
	addr    *fakeAddress
	cli     *clientv3.Client
	healthy atomic.Bool
	// ports stand for its apiserver and etcd peer listeners: open while
	// the candidate "runs", closed by die.
	ports []net.Listener
	// drainedHolding counts drains that ran while the VIP was still on
	// this candidate, drains all drains.
	drainedHolding, drains atomic.Int32
}

// die makes the candidate look like a crashed master to the others: its
// ports refuse and its renewals fail (so its address lapses).
func (c *candidate) die() {
	for _, ln := range c.ports {
		ln.Close()
	}
	c.cli.Close()
}

func listen(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// testLeaseTTL is the candidates' session TTL unless a test needs another.
const testLeaseTTL = 3 * time.Second

func newCandidate(t *testing.T, endpoint, name string, l *lan) *candidate {
	t.Helper()
	return newCandidateTTL(t, endpoint, name, l, testLeaseTTL)
}

func newCandidateTTL(t *testing.T, endpoint, name string, l *lan, ttl time.Duration) *candidate {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c := &candidate{name: name, addr: &fakeAddress{name: name, lan: l}, cli: cli}
	c.healthy.Store(true)
	api, apiPort := listen(t)
	peer, peerPort := listen(t)
	c.ports = []net.Listener{api, peer}
	self := HolderInfo{Name: name, Address: "127.0.0.1", APIServerPort: apiPort, EtcdPeerPort: peerPort}
	c.mgr, err = newManager(ElectionConfig{
		Self: self, LeaseTTL: ttl, Client: cli,
		Healthy: func(context.Context) error {
			if !c.healthy.Load() {
				return errors.New("made unhealthy by the test")
			}
			return nil
		},
		Drain: func(context.Context) {
			c.drains.Add(1)
			if held, _ := c.addr.Held(); held {
				c.drainedHolding.Add(1)
			}
		},
	}, c.addr, fakeLifetime)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitHolder(t *testing.T, l *lan, not string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if hs := l.holder(); len(hs) == 1 && hs[0] != not {
			return hs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no single holder other than %q within %s (holders: %v)", not, within, l.holder())
	return ""
}

func TestElectionOneHolderAndHandOver(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	l := &lan{holders: map[string]time.Time{}}
	cands := map[string]*candidate{}
	for _, n := range []string{"m1", "m2", "m3"} {
		cands[n] = newCandidate(t, endpoint, n, l)
		cands[n].mgr.Start()
	}
	defer func() {
		for _, c := range cands {
			c.mgr.Stop(context.Background())
		}
	}()

	first := waitHolder(t, l, "", 5*time.Second)
	if !cands[first].mgr.Holding() || cands[first].addr.announces.Load() == 0 {
		t.Errorf("%s holds the address but Holding=%v, announces=%d", first, cands[first].mgr.Holding(), cands[first].addr.announces.Load())
	}
	h, _, err := ReadHolder(context.Background(), cands[first].cli)
	if err != nil || h == nil || h.Name != first {
		t.Fatalf("election key names %+v (%v), want %s", h, err, first)
	}
	// It stays put while healthy: no churn between healthy masters.
	time.Sleep(2 * time.Second)
	if hs := l.holder(); len(hs) != 1 || hs[0] != first {
		t.Fatalf("holder changed without cause: %v", hs)
	}

	// Graceful stop: the address goes first, then the key; another master
	// takes over at once, not after the lease TTL.
	// Waiting for the lease would take at least the TTL less a keep-alive
	// interval (a third of it): 2 s. That, not a figure a loaded machine
	// may miss, is the bound.
	start := time.Now()
	cands[first].mgr.Stop(context.Background())
	second := waitHolder(t, l, first, testLeaseTTL*2/3)
	t.Logf("hand-over on stop: %s", time.Since(start).Round(time.Millisecond))
	if held, _ := cands[first].addr.Held(); held {
		t.Error("the stopped master still has the VIP")
	}
	if d, dh := cands[first].drains.Load(), cands[first].drainedHolding.Load(); d != 1 || dh != 1 {
		t.Errorf("stopping the holder drained %d times, %d of them before the VIP went; want 1 and 1", d, dh)
	}

	// Unhealthy holder: resigns after three failed checks, and does not
	// campaign again while unhealthy.
	cands[second].healthy.Store(false)
	third := waitHolder(t, l, second, 5*time.Second)
	if d := cands[second].drains.Load(); d != 1 {
		t.Errorf("the unhealthy holder drained %d times before it resigned, want 1", d)
	}
	time.Sleep(time.Second)
	if hs := l.holder(); len(hs) != 1 || hs[0] != third {
		t.Fatalf("after the unhealthy holder resigned: holders %v, want only %s", hs, third)
	}
	// Healthy again: it waits as a standby, no flapping back.
	cands[second].healthy.Store(true)
	time.Sleep(2 * time.Second)
	if hs := l.holder(); len(hs) != 1 || hs[0] != third {
		t.Fatalf("holder moved back after recovery: %v", hs)
	}
	l.check(t)
}

// A crashed holder: its renewals stop, so its address lapses after its
// lifetime, and its ports refuse. m2 must take over after the address is
// gone (never overlapping it) and before the lease would end.
func TestElectionHolderCrashes(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	l := &lan{holders: map[string]time.Time{}}
	// A long lease keeps "saw the ports refuse" (about the address
	// lifetime) and "waited for the lease" (at least two thirds of the
	// TTL, 6 s) far apart, so a loaded machine cannot blur them.
	const ttl = 9 * time.Second
	a := newCandidateTTL(t, endpoint, "m1", l, ttl)
	a.mgr.Start()
	defer a.mgr.Stop(context.Background())
	waitHolder(t, l, "", 5*time.Second)
	b := newCandidateTTL(t, endpoint, "m2", l, ttl)
	b.mgr.Start()
	defer b.mgr.Stop(context.Background())

	start := time.Now()
	a.die()
	waitHolder(t, l, "m1", ttl+2*time.Second)
	took := time.Since(start)
	if took < fakeLifetime {
		t.Errorf("m2 took over after %s, before m1's address lifetime (%s) ran out", took, fakeLifetime)
	}
	if took > ttl/2 {
		t.Errorf("m2 took over after %s: it waited for the lease instead of seeing m1's ports refuse", took)
	}
	t.Logf("takeover after the holder crashed: %s", took.Round(time.Millisecond))
	l.check(t)
}

func TestHolderDead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	open := ln.Addr().(*net.TCPAddr).Port
	closed := testkit.FreePorts(t, 2)
	closed1, closed2 := closed[0], closed[1]
	if !holderDead(&HolderInfo{Address: "127.0.0.1", APIServerPort: closed1, EtcdPeerPort: closed2}) {
		t.Error("both ports refuse, yet the holder counts as alive")
	}
	if holderDead(&HolderInfo{Address: "127.0.0.1", APIServerPort: closed1, EtcdPeerPort: open}) {
		t.Error("the etcd port answers, yet the holder counts as dead")
	}
	if holderDead(&HolderInfo{Address: "127.0.0.1", APIServerPort: open, EtcdPeerPort: closed1}) {
		t.Error("the apiserver port answers, yet the holder counts as dead")
	}
}

func TestAddressLifetime(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		2 * time.Second: time.Second, 3 * time.Second: time.Second,
		6 * time.Second: 2 * time.Second, 10 * time.Second: 3 * time.Second,
	} {
		got := AddressLifetime(ttl)
		if got != want {
			t.Errorf("AddressLifetime(%s) = %s, want %s", ttl, got, want)
		}
		if ttl-got < time.Second {
			t.Errorf("TTL %s: lifetime %s leaves under a second before the lease ends", ttl, got)
		}
	}
	if _, err := newManager(ElectionConfig{LeaseTTL: 3 * time.Second, Client: &clientv3.Client{}, Healthy: func(context.Context) error { return nil }}, &fakeAddress{}, 3*time.Second); err == nil {
		t.Error("an address lifetime equal to the TTL was accepted")
	}
}

// A standby sees the holder's lease expire by itself, within a poll of the
// expiry and never before it, instead of waiting up to 500 ms for etcd's
// revoke loop; while the holder renews, never.
func TestPollLeaseSeesExpiry(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	l := &lan{holders: map[string]time.Time{}}
	c := newCandidate(t, endpoint, "m2", l)
	ctx := context.Background()
	poll := func(lease clientv3.LeaseID, until time.Time) time.Time {
		w := leaseWatch{lease: lease}
		for time.Now().Before(until) {
			expired, next := c.mgr.pollLease(ctx, &w)
			if expired {
				return time.Now()
			}
			time.Sleep(next)
		}
		return time.Time{}
	}

	const ttl = 2 * time.Second
	sent := time.Now()
	g, err := c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	seen := poll(g.ID, granted.Add(ttl+2*time.Second))
	switch {
	case seen.IsZero():
		t.Fatal("the expiry of an unrenewed lease was never seen")
	case seen.Before(sent.Add(ttl)):
		t.Fatalf("expiry seen %s after the grant was sent, before its TTL %s ran out", seen.Sub(sent), ttl)
	case seen.After(granted.Add(ttl + 200*time.Millisecond)):
		t.Errorf("expiry seen %s after the TTL ran out; the fast poll should see it within about 100 ms", seen.Sub(granted.Add(ttl)))
	}
	t.Logf("expiry seen %s after the TTL ran out", seen.Sub(granted.Add(ttl)).Round(time.Millisecond))

	g, err = c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	renew, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for renew.Err() == nil {
			_, _ = c.cli.KeepAliveOnce(renew, g.ID)
			time.Sleep(300 * time.Millisecond)
		}
	}()
	if at := poll(g.ID, time.Now().Add(3*ttl)); !at.IsZero() {
		t.Errorf("a renewed lease was reported expired after %s", at.Sub(granted))
	}
}

// A master that holds its campaign back (its member leads etcd) lets
// another that saw the VIP free at the same moment win.
func TestCampaignDelayLetsOthersWin(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	l := &lan{holders: map[string]time.Time{}}
	for round := 0; round < 3; round++ {
		leader := newCandidate(t, endpoint, "leader", l)
		leader.mgr.cfg.CampaignDelay = func(context.Context) time.Duration { return 300 * time.Millisecond }
		follower := newCandidate(t, endpoint, "follower", l)
		leader.mgr.Start()
		follower.mgr.Start()
		if h := waitHolder(t, l, "", 5*time.Second); h != "follower" {
			t.Errorf("round %d: %s won the VIP, want the master without a campaign delay", round, h)
		}
		leader.mgr.Stop(context.Background())
		follower.mgr.Stop(context.Background())
	}
	l.check(t)
}
