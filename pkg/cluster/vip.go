package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/poll"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// OpenVIP is openVIP for other commands (reset): no LAN probe.
func OpenVIP(c *config.Config) (*vip.Address, error) { return openVIP(c, false) }

// openVIP checks the VIP settings against this host before anything
// starts: the interface exists and is up, the VIP lies in one of its
// subnets and is not a node address; with probe, that no other host
// answers for it (a new cluster's VIP must be free; on a running cluster a
// master holds it).
func openVIP(c *config.Config, probe bool) (*vip.Address, error) {
	if err := c.CheckIfaceHasVIP(); err != nil {
		return nil, err
	}
	if c.VIP == "" {
		return nil, nil
	}
	a, err := vip.OpenOn(c.VIPInterface, net.ParseIP(c.VIP), vip.AddressLifetime(c.VIPLease()))
	if err != nil {
		return nil, err
	}
	if probe {
		if err := a.CheckFree(time.Second); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// vipStep is the progress line of the VIP check.
func vipStep(c *config.Config, probe bool) string {
	if probe {
		return fmt.Sprintf("VIP %s: interface, subnet, free on the LAN", c.VIP)
	}
	return fmt.Sprintf("VIP %s: interface and subnet", c.VIP)
}

// vipElection is this master's part in the VIP election. It starts once
// the local control plane is ready (only a master that serves may hold the
// VIP); Ready waits until some master holds it; Stop hands the VIP over
// before anything else of this master stops, so that clients move while
// this one still answers.
type vipElection struct {
	m       *Master
	addr    *vip.Address
	timeout time.Duration

	mgr *vip.Manager
	// Holder is who held the VIP when Ready returned.
	Holder string

	stopMover context.CancelFunc
	moverDone chan struct{}
	// leads: the local member led etcd, with other voters, at the last
	// look (every leaderCheckInterval).
	leads atomic.Bool
}

func (v *vipElection) Name() string { return "VIP election" }

func (v *vipElection) Start(context.Context) error {
	m, c := v.m, v.m.cfg
	// One kept connection: the check runs every 500 ms for the master's
	// whole life.
	client, err := clusterCAClient(c, time.Second, "localhost")
	if err != nil {
		return err
	}
	readyz := c.LocalAPIServerURL() + "/readyz"
	healthy := func(ctx context.Context) error {
		if m.leaving.Load() {
			return fmt.Errorf("%w: this master is leaving the cluster", vip.ErrStepDown)
		}
		if m.etcdReloading.Load() {
			return fmt.Errorf("%w: the local etcd member restarts to load a new trust bundle", vip.ErrStepDown)
		}
		if !m.etcd.HasLeader() {
			return errors.New("the local etcd member sees no leader")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("local apiserver: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("local apiserver /readyz: %s", resp.Status)
		}
		return nil
	}
	ec := vip.ElectionConfig{
		Self:     vip.HolderInfo{Name: c.Name, Address: c.AdvertiseAddress, APIServerPort: c.APIServerPort, EtcdPeerPort: c.EtcdPeerPort, VIP: v.addr.IP().String()},
		LeaseTTL: c.VIPLease(),
		Client:   m.etcdClient,
		Healthy:  healthy,
		Logger:   klog.Background(),
		// Read from what keepLeadershipAway last saw: no request on
		// the way to a takeover.
		CampaignDelay: func(context.Context) time.Duration {
			if v.leads.Load() {
				return leaderCampaignDelay
			}
			return 0
		},
	}
	if g := m.api.Gate(); g != nil {
		ec.Drain, ec.Undrain = g.Drain, g.Reopen
	}
	mgr, err := vip.NewManager(ec, v.addr)
	if err != nil {
		return err
	}
	v.mgr = mgr
	// Known before the first campaign: when vip set starts every
	// master's election at once, the leader must already hold back.
	lctx, lcancel := context.WithTimeout(context.Background(), time.Second)
	v.leads.Store(leadsWithOthers(lctx, m.etcdClient, c.LocalEtcdURL()))
	lcancel()
	mgr.Start()
	ctx, cancel := context.WithCancel(context.Background())
	v.stopMover, v.moverDone = cancel, make(chan struct{})
	go func() {
		defer close(v.moverDone)
		keepLeadershipAway(ctx, m.etcdClient, c.LocalEtcdURL(), mgr.Holding, &v.leads)
	}()
	return nil
}

// keepLeadershipAway hands etcd's leadership to another healthy voter
// while this master holds the VIP. A holder that also leads etcd costs
// clients more when it is cut off: the others must first elect a leader,
// and the new leader extends every lease by an election timeout, so the
// holder's session outlives it by 1-2 s. Apart, a partition of the holder
// costs the lease's TTL and no more. With no other healthy voter the
// holder keeps leading. cli must talk to the local member (MoveLeader
// goes to the leader). It keeps leads up to date for the campaign.
func keepLeadershipAway(ctx context.Context, cli *clientv3.Client, localURL string, holding func() bool, leads *atomic.Bool) {
	t := time.NewTicker(leaderCheckInterval)
	defer t.Stop()
	log := klog.Background().WithName("vip")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		leading := leadsWithOthers(ctx, cli, localURL)
		leads.Store(leading)
		if !leading || !holding() {
			continue
		}
		ms, err := etcd.Members(ctx, cli)
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, localURL)
		cancel()
		if err != nil {
			continue
		}
		to, ok := leadershipTransferee(ms, st.Header.MemberId)
		if !ok {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cli.MoveLeader(mctx, to.ID)
		cancel()
		if err != nil {
			log.V(2).Info("Could not hand etcd leadership away from the VIP holder; retrying", "to", to.Name, "err", err.Error())
			continue
		}
		log.Info("Handed etcd leadership away from the VIP holder", "to", to.Name)
	}
}

// leaderCampaignDelay holds back the campaign of a master whose member
// leads etcd: long enough for a follower that saw the VIP free at the same
// moment to win (a campaign is one transaction), short against the lease.
const leaderCampaignDelay = 300 * time.Millisecond

// leadsWithOthers tells whether the local member leads etcd and has other
// voters to hand the leadership to.
func leadsWithOthers(ctx context.Context, cli *clientv3.Client, localURL string) bool {
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := cli.Status(sctx, localURL)
	if err != nil || st.Leader != st.Header.MemberId {
		return false
	}
	ml, err := cli.MemberList(sctx)
	if err != nil {
		return false
	}
	voters := 0
	for _, mb := range ml.Members {
		if !mb.IsLearner {
			voters++
		}
	}
	return voters > 1
}

// leaderCheckInterval is how often the holder checks whether it leads
// etcd: the window in which a partition of the holder still costs an
// etcd election.
const leaderCheckInterval = 250 * time.Millisecond

// leadershipTransferee is the healthy voter other than self that is
// furthest along (raft moves leadership only to a caught-up member).
func leadershipTransferee(ms []etcd.MemberStatus, self uint64) (etcd.MemberStatus, bool) {
	var best etcd.MemberStatus
	found := false
	for _, m := range ms {
		if m.ID == self || m.Learner || !m.Healthy {
			continue
		}
		if !found || m.RaftAppliedIndex > best.RaftAppliedIndex {
			best, found = m, true
		}
	}
	return best, found
}

// Ready waits until some master holds the VIP.
func (v *vipElection) Ready(ctx context.Context) error {
	var h *vip.HolderInfo
	var last error
	return poll.Until(ctx, 50*time.Millisecond, v.timeout, func(ctx context.Context) (bool, error) {
		h, last = readHolder(ctx, v.m.etcdClient)
		if h != nil {
			v.Holder = h.Name
		}
		return h != nil, nil
	}, func() error {
		return fmt.Errorf("no master holds VIP %s after %s (last error: %v); see the log", v.m.cfg.VIP, v.timeout, last)
	})
}

func (v *vipElection) Stop(ctx context.Context) error {
	if v.stopMover != nil {
		v.stopMover()
		select {
		case <-v.moverDone:
		case <-ctx.Done():
		}
	}
	if v.mgr != nil {
		v.mgr.Stop(ctx)
	}
	return nil
}

// readHolder reads the election key with a short timeout of its own.
func readHolder(ctx context.Context, cli *clientv3.Client) (*vip.HolderInfo, error) {
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h, _, err := vip.ReadHolder(gctx, cli)
	return h, err
}

// handOverVIP waits until the election key no longer names this master:
// a master leaving the cluster steps down first, so that clients move
// before its member goes.
func handOverVIP(ctx context.Context, a *Admin, timeout time.Duration) error {
	var last error
	return poll.Until(ctx, 100*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		var h *vip.HolderInfo
		h, last = readHolder(ctx, a.cli)
		return last == nil && (h == nil || h.Name != a.Config.Name), nil
	}, func() error {
		return fmt.Errorf("this master still holds VIP %s after %s (last error: %v)", a.Config.VIP, timeout, last)
	})
}
