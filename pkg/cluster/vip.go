package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/datadir"
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
	ttl := time.Duration(c.VIPLeaseTTL) * time.Second
	a, err := vip.OpenOn(c.VIPInterface, net.ParseIP(c.VIP), vip.AddressLifetime(ttl))
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

// startVIP joins the VIP election. It runs once the local control plane is
// ready: only a master that serves may hold the VIP.
func (m *Master) startVIP() error {
	c := m.cfg
	if m.vipAddr == nil {
		return nil
	}
	// One kept connection: the check runs every 500 ms for the master's
	// whole life.
	client, err := clusterCAClient(c, time.Second, "localhost")
	if err != nil {
		return err
	}
	readyz := c.LocalAPIServerURL() + "/readyz"
	leaving := filepath.Join(c.DataDir, datadir.LeavingMarker)
	healthy := func(ctx context.Context) error {
		if _, err := os.Stat(leaving); err == nil {
			return fmt.Errorf("%w: this master is leaving the cluster", vip.ErrStepDown)
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
	mgr, err := vip.NewManager(vip.ElectionConfig{
		Self:     vip.HolderInfo{Name: c.Name, Address: c.AdvertiseAddress, APIServerPort: c.APIServerPort, EtcdPeerPort: c.EtcdPeerPort},
		LeaseTTL: time.Duration(c.VIPLeaseTTL) * time.Second,
		Client:   m.etcdClient,
		Healthy:  healthy,
		Logger:   klog.Background(),
		Drain:    m.apiserver.Gate.Drain,
		Undrain:  m.apiserver.Gate.Reopen,
	}, m.vipAddr)
	if err != nil {
		return err
	}
	m.vip = mgr
	mgr.Start()
	return nil
}

// waitVIPHolder waits until some master holds the VIP and names it.
func (m *Master) waitVIPHolder(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		h, _, err := vip.ReadHolder(gctx, m.etcdClient)
		cancel()
		if err == nil && h != nil {
			return h.Name, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no master holds VIP %s after %s (last error: %v); see the log", m.cfg.VIP, timeout, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopVIP gives the VIP up before anything else stops, so that another
// master takes it while this one still answers.
func (m *Master) stopVIP(timeout time.Duration) {
	if m.vip != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		m.vip.Stop(ctx)
		cancel()
		m.vip = nil
	}
	if m.vipAddr != nil {
		m.vipAddr.Close()
		m.vipAddr = nil
	}
}

// handOverVIP waits until the election key no longer names this master:
// a master leaving the cluster steps down first (its health check sees the
// leaving marker), so that clients move before its member goes.
func handOverVIP(ctx context.Context, a *Admin, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		h, _, err := vip.ReadHolder(gctx, a.cli)
		cancel()
		if err == nil && (h == nil || h.Name != a.Config.Name) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("this master still holds VIP %s after %s (last error: %v)", a.Config.VIP, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
