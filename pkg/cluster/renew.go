package cluster

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// RenewInterval is how often a running master checks its leaf
// certificates; one is renewed once within pki.RenewBefore (90 days) of
// its expiry, so an hourly look leaves months of margin.
const RenewInterval = time.Hour

// TestRenewIntervalEnv overrides RenewInterval for the certificate-renewal
// lab test only (leaves that last minutes need checks every few seconds).
const TestRenewIntervalEnv = "K8S_MASTER_TEST_RENEW_INTERVAL"

// renewInterval is RenewInterval unless a test overrides it.
func renewInterval() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(TestRenewIntervalEnv)); err == nil && d > 0 {
		return d
	}
	return RenewInterval
}

// certRenewer renews this master's leaf certificates while it runs. Every
// part of the process takes the new files without a restart: the
// apiserver watches its serving, kubelet-client and front-proxy files,
// etcd and the join service load their pairs at each handshake, and the
// controller-manager and scheduler kubeconfigs name their files, which
// client-go reloads.
type certRenewer struct {
	cfg      *config.Config
	interval time.Duration
	logf     func(string, ...any)

	mu     sync.Mutex // one renewal at a time
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *certRenewer) Name() string { return "certificate renewal" }

func (r *certRenewer) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n, err := r.renew(false); err != nil {
					r.logf("warning: certificate renewal failed (the current certificates stay in use; retried in %s): %v", r.interval, err)
				} else if n > 0 {
					r.logf("renewed %d leaf certificates due within %s of expiry", n, pki.RenewMargin())
				}
			}
		}
	}()
	return nil
}

func (r *certRenewer) Stop(context.Context) error {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	return nil
}

// renew writes the due certificates (all: every one) and the files made
// from them.
func (r *certRenewer) renew(all bool) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The expiry metrics read the files at each scrape: nothing to tell.
	return writeCredentials(r.cfg, all)
}

// RenewCertificates re-issues every leaf certificate of this master now
// (certs renew) and returns how many it wrote.
func (m *Master) RenewCertificates(context.Context) (int, error) {
	m.renewerMu.Lock()
	r := m.renewer
	m.renewerMu.Unlock()
	if r == nil {
		return 0, fmt.Errorf("this master is still starting; try again once it is ready")
	}
	return r.renew(true)
}
