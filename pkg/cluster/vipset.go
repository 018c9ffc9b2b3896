package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/component"
	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/join"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/poll"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// This file gives a running cluster a VIP, or moves it (`vip set`): the
// command checks the address and records it in etcd (vip.SettingKey);
// every master applies it while it runs (vipSettingWatcher), and a master
// that was down applies it when it starts again.

// vipSettingWatcher applies the cluster's VIP setting on this master: the
// address joins its apiserver and join service certificates (re-issued in
// place, which both reload), the admin kubeconfig, state.json (so `token
// create` and later starts use it) and cluster-info, and the master runs
// the election for it. It runs for the master's whole life.
type vipSettingWatcher struct {
	m *Master
	r *component.Runner
	// applied is the address this master runs with.
	applied string

	cancel context.CancelFunc
	done   chan struct{}
}

func (w *vipSettingWatcher) Name() string { return "VIP setting watcher" }

func (w *vipSettingWatcher) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		w.run(ctx)
	}()
	return nil
}

func (w *vipSettingWatcher) Stop(ctx context.Context) error {
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	return await(ctx, w.done, "the VIP setting watcher is still applying a setting")
}

func (w *vipSettingWatcher) run(ctx context.Context) {
	cli := w.m.etcdClient
	for ctx.Err() == nil {
		set, rev, err := vip.ReadSetting(ctx, cli)
		if err != nil {
			w.m.sleep(ctx, 2*time.Second)
			continue
		}
		if set != nil {
			w.apply(ctx, set)
		}
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), vip.SettingKey, clientv3.WithRev(rev+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if s, err := vip.ParseSetting(ev.Kv.Value); err == nil {
					w.apply(ctx, s)
				} else {
					klog.ErrorS(err, "Ignoring the VIP setting")
				}
			}
		}
		// The watch ended (no leader, compaction): read again.
		w.m.sleep(ctx, time.Second)
	}
}

// apply makes set this master's VIP and acknowledges it. A step that
// fails is logged and retried at the next change or start; what cannot
// be done on this host (no interface with the VIP's subnet) leaves this
// master out of the election only.
func (w *vipSettingWatcher) apply(ctx context.Context, set *vip.Setting) {
	m := w.m
	if set.Address == w.applied {
		w.ack(ctx, set.Address)
		return
	}
	log := klog.Background().WithName("vip")
	log.Info("Applying the cluster's VIP setting", "vip", set.Address, "previous", w.applied)

	c := *m.cfg
	c.VIP, c.VIPLeaseTTL = set.Address, set.LeaseTTL
	addr, iface, err := openVIPFor(&c, set.Interface)
	if err != nil {
		log.Error(err, "This master cannot hold the VIP (it still serves it in its certificates); fix the interface and restart it", "vip", set.Address)
	}
	c.VIPInterface = iface

	// The files first: once the election runs, clients may arrive on the
	// VIP and must find it in the serving certificate.
	if err := w.writeFiles(&c); err != nil {
		log.Error(err, "Could not write the certificates and settings for the VIP; restart this master to retry", "vip", set.Address)
		if addr != nil {
			addr.Close()
		}
		return
	}
	// Only a master whose apiserver serves the VIP may hold it: clients
	// verify the address against the certificate.
	if err := w.awaitServing(ctx, set.Address); err != nil {
		log.Error(err, "The apiserver does not serve a certificate for the VIP; not joining the election until this master restarts", "vip", set.Address)
		if addr != nil {
			addr.Close()
			addr = nil
		}
	}
	if _, err := m.applyWorkerObjects(ctx); err != nil {
		log.Error(err, "Could not update cluster-info for the VIP; another master's update or this master's next start does it")
	}

	// Hand the old VIP over (if any), then campaign for the new one.
	if m.vip != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = m.vip.Stop(sctx)
		cancel()
		m.vip = nil
	}
	if m.vipAddr != nil {
		m.vipAddr.Close()
		m.vipAddr = nil
	}
	if addr != nil {
		m.vipAddr = addr
		w.r.OnStop("close the VIP handle", func(context.Context) error { addr.Close(); return nil })
		m.vip = &vipElection{m: m, addr: addr, timeout: m.readyTimeout}
		if err := w.r.Start(ctx, m.vip); err != nil {
			log.Error(err, "Could not start the VIP election; restart this master to retry")
			return
		}
	}
	w.applied = set.Address
	log.Info("Applied the cluster's VIP setting", "vip", set.Address, "interface", iface)
	w.ack(ctx, set.Address)
}

// writeFiles re-issues the leaves whose names changed (apiserver and join
// service serving certificates), rewrites the admin kubeconfig and records
// the VIP in state.json, with the certificate renewer held off so that it
// cannot write certificates of the old settings in between.
func (w *vipSettingWatcher) writeFiles(c *config.Config) error {
	m := w.m
	m.renewerMu.Lock()
	r := m.renewer
	m.renewerMu.Unlock()
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	m.cfg.VIP, m.cfg.VIPLeaseTTL, m.cfg.VIPInterface = c.VIP, c.VIPLeaseTTL, c.VIPInterface
	if _, err := writeCredentials(m.cfg, false); err != nil {
		return err
	}
	m.state.Config.VIP, m.state.Config.VIPLeaseTTL, m.state.Config.VIPInterface = c.VIP, c.VIPLeaseTTL, c.VIPInterface
	return config.WriteState(m.cfg.Layout().State(), m.state)
}

// awaitServing waits until the local apiserver's serving certificate names
// address. The apiserver reloads its files when they change, but it may
// read the new key with the old certificate (they are written one after
// the other), keep the old pair, and look again only a minute later: so
// the certificate file is written again (same bytes) every 1.5 s until
// the new pair is served.
func (w *vipSettingWatcher) awaitServing(ctx context.Context, address string) error {
	c := w.m.cfg
	ip := net.ParseIP(address)
	certFile := pki.CertPath(c.Layout().PKIDir(), pki.APIServer)
	host := config.Host("127.0.0.1", c.APIServerPort)
	lastTouch := time.Now()
	var last error
	return poll.Until(ctx, 200*time.Millisecond, 90*time.Second, func(ctx context.Context) (bool, error) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} // only the certificate's names are read
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := d.DialContext(dctx, "tcp", host)
		cancel()
		if err != nil {
			last = err
			return false, nil
		}
		certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
		conn.Close()
		if len(certs) > 0 && slices.ContainsFunc(certs[0].IPAddresses, ip.Equal) {
			return true, nil
		}
		last = fmt.Errorf("the apiserver at %s still serves a certificate without %s", host, address)
		if time.Since(lastTouch) > 1500*time.Millisecond {
			lastTouch = time.Now()
			if data, err := os.ReadFile(certFile); err == nil {
				_ = fsutil.WriteFileAtomic(certFile, data, 0o644)
			}
		}
		return false, nil
	}, func() error { return fmt.Errorf("after 90 s: %w", last) })
}

func (w *vipSettingWatcher) ack(ctx context.Context, address string) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := vip.MarkApplied(actx, w.m.etcdClient, w.m.cfg.Name, address); err != nil {
		klog.ErrorS(err, "Could not record that this master applied the VIP setting", "vip", address)
	}
}

// openVIPFor opens the VIP on the named interface when it holds the VIP's
// subnet here, else on the interface that does.
func openVIPFor(c *config.Config, iface string) (*vip.Address, string, error) {
	names := []string{""}
	if iface != "" {
		names = []string{iface, ""}
	}
	var errs []error
	for _, name := range names {
		cc := *c
		cc.VIPInterface = name
		a, err := openVIP(&cc, false)
		if err == nil {
			return a, a.Link().Attrs().Name, nil
		}
		errs = append(errs, err)
	}
	return nil, "", errors.Join(errs...)
}

// sleep waits d or until ctx ends.
func (m *Master) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// SetVIP gives the cluster the VIP address (or moves it there): the same
// checks as init --vip on this host (a unicast address of this master's
// LAN, in the subnet of iface or of the interface that holds it, outside
// the service range, no master's address, and free: nobody answers for
// it), then it is recorded for every master. It waits until every master
// applied it and one holds it, and returns a join token naming it.
func (a *Admin) SetVIP(ctx context.Context, address, iface string, note func(string)) (string, error) {
	c := *a.Config
	if ip := net.ParseIP(address); ip != nil {
		address = ip.String()
	}
	current := c.VIP
	if set, _, err := vip.ReadSetting(ctx, a.cli); err != nil {
		return "", err
	} else if set != nil {
		current = set.Address
	}
	c.VIP, c.VIPInterface = address, iface
	if c.VIPLeaseTTL == 0 {
		c.VIPLeaseTTL = config.Default().VIPLeaseTTL
	}
	if err := c.ValidateVIP(); err != nil {
		return "", err
	}
	masters, err := a.Store().Masters(ctx)
	if err != nil {
		return "", err
	}
	for _, mi := range masters {
		if mi.AdvertiseAddress == address {
			return "", &config.SettingError{Setting: "vip", Value: config.Bare(address), Problem: "is the address of master " + mi.Name + "; pick a free address of the same subnet"}
		}
	}
	if address != current {
		// Nobody may answer for a new address; the current one is held.
		note(vipStep(&c, true))
		addr, err := openVIP(&c, true)
		if err != nil {
			return "", err
		}
		addr.Close()
		if err := vip.WriteSetting(ctx, a.cli, vip.Setting{Address: address, LeaseTTL: c.VIPLeaseTTL, Interface: iface, SetAt: time.Now().UTC()}); err != nil {
			return "", err
		}
		note(fmt.Sprintf("VIP %s recorded for every master", address))
	}
	var waiting []string
	err = poll.Until(ctx, 200*time.Millisecond, time.Minute, func(ctx context.Context) (bool, error) {
		applied, err := vip.Applied(ctx, a.cli)
		if err != nil {
			return false, nil
		}
		waiting = waiting[:0]
		for _, mi := range masters {
			if applied[mi.Name] != address {
				waiting = append(waiting, mi.Name)
			}
		}
		return len(waiting) == 0, nil
	}, func() error {
		return fmt.Errorf("masters %v have not applied VIP %s within a minute; each applies it when it runs (see its log), and a stopped master when it starts", waiting, address)
	})
	if err != nil {
		return "", err
	}
	note(fmt.Sprintf("every master (%d) put VIP %s in its certificates, admin kubeconfig and state", len(masters), address))
	var holder string
	err = poll.Until(ctx, 100*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, error) {
		h, err := readHolder(ctx, a.cli)
		if err != nil || h == nil || h.VIP != address {
			return false, nil
		}
		holder = h.Name
		return true, nil
	}, func() error {
		return fmt.Errorf("no master holds VIP %s after 30 s; see the masters' logs (k8s-master status shows the holder)", address)
	})
	if err != nil {
		return "", err
	}
	note(fmt.Sprintf("VIP %s is held by %s", address, holder))
	a.Config.VIP, a.Config.VIPLeaseTTL = address, c.VIPLeaseTTL
	// etcd may be briefly busy right after the elections moved: retry.
	var tok join.Token
	err = poll.Until(ctx, time.Second, 20*time.Second, func(ctx context.Context) (bool, error) {
		tok, err = a.CreateToken(ctx, 24*time.Hour, 0, "made by vip set")
		return err == nil, nil
	}, func() error {
		return fmt.Errorf("VIP %s is set, but a join token naming it could not be made: %w; run k8s-master token create", address, err)
	})
	if err != nil {
		return "", err
	}
	return tok.String(), nil
}
