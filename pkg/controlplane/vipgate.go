package controlplane

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// VIPGate lets a graceful VIP hand-over finish the requests in flight on
// the VIP before the address goes: once the address is gone their replies
// could not leave this host, and their clients would wait for a timeout.
// While draining, new requests on the VIP get a quick 503 and a closed
// connection, so clients retry at once and reach the next holder.
type VIPGate struct {
	vip      net.IP
	draining atomic.Bool
	inFlight atomic.Int64
}

// NewVIPGate gates requests that arrive on vip (nil: none).
func NewVIPGate(vip net.IP) *VIPGate { return &VIPGate{vip: vip} }

// Wrap puts the gate in front of h.
func (g *VIPGate) Wrap(h http.Handler) http.Handler {
	if g == nil || g.vip == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.onVIP(r) {
			h.ServeHTTP(w, r)
			return
		}
		if g.draining.Load() {
			w.Header().Set("Connection", "close")
			http.Error(w, "this master is handing the VIP over to another; retry", http.StatusServiceUnavailable)
			return
		}
		if longRunning(r) {
			// A watch never drains; it ends with the hand-over.
			h.ServeHTTP(w, r)
			return
		}
		g.inFlight.Add(1)
		defer g.inFlight.Add(-1)
		h.ServeHTTP(w, r)
	})
}

func (g *VIPGate) onVIP(r *http.Request) bool {
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.Equal(g.vip)
}

func longRunning(r *http.Request) bool {
	if r.URL.Query().Get("watch") == "true" || strings.Contains(r.URL.Path, "/watch/") {
		return true
	}
	for _, sub := range []string{"/exec", "/attach", "/portforward", "/proxy", "/log"} {
		if strings.HasSuffix(r.URL.Path, sub) || strings.Contains(r.URL.Path, sub+"/") {
			return true
		}
	}
	return false
}

// Drain refuses new requests on the VIP and waits until those in flight
// are done or ctx ends.
func (g *VIPGate) Drain(ctx context.Context) {
	if g == nil || g.vip == nil {
		return
	}
	g.draining.Store(true)
	// ctx's end is the caller's limit on the drain, not a failure.
	_ = wait.PollUntilContextCancel(ctx, 2*time.Millisecond, true, func(context.Context) (bool, error) {
		return g.inFlight.Load() == 0, nil
	})
}

// Reopen serves requests on the VIP again (after a drain that did not end
// in a stop: the master keeps running and may hold the VIP later).
func (g *VIPGate) Reopen() {
	if g != nil {
		g.draining.Store(false)
	}
}
