package controlplane

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs the gate on a loopback listener; 127.0.0.1 plays the VIP and
// requests to 127.0.0.2 (another local address) pass untouched.
func serve(t *testing.T, g *VIPGate, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(g.Wrap(h))
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestVIPGateDrainsThenRefuses(t *testing.T) {
	g := NewVIPGate(net.ParseIP("127.0.0.1"))
	release := make(chan struct{})
	var started atomic.Int32
	port := serve(t, g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started.Add(1)
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	vip, other := "http://127.0.0.1:"+port, "http://127.0.0.2:"+port

	slowDone := make(chan int, 1)
	go func() { slowDone <- get(t, vip+"/slow") }()
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	drained := make(chan struct{})
	go func() {
		g.Drain(context.Background())
		close(drained)
	}()
	// The drain starts on its own goroutine: a loaded machine may take a
	// while to run it, so wait (briefly when it is quick) for the VIP to
	// refuse new requests.
	code := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if code = get(t, vip+"/new"); code == http.StatusServiceUnavailable {
			break
		}
	}
	if code != http.StatusServiceUnavailable {
		t.Errorf("a new request on the VIP while draining: %d, want 503", code)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while a request was in flight on the VIP")
	default:
	}
	if code := get(t, other+"/new"); code != http.StatusOK {
		t.Errorf("a request on another address while draining: %d, want 200", code)
	}
	if code := get(t, vip+"/api/v1/pods?watch=true"); code != http.StatusServiceUnavailable {
		t.Errorf("a new watch on the VIP while draining: %d, want 503", code)
	}
	close(release)
	if code := <-slowDone; code != http.StatusOK {
		t.Errorf("the request in flight during the drain: %d, want 200", code)
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second): // generous for a loaded machine
		t.Fatal("Drain did not return once the request finished")
	}
	g.Reopen()
	if code := get(t, vip+"/new"); code != http.StatusOK {
		t.Errorf("after Reopen: %d, want 200", code)
	}
}

func TestVIPGateDrainGivesUpWithContext(t *testing.T) {
	g := NewVIPGate(net.ParseIP("127.0.0.1"))
	block := make(chan struct{})
	defer close(block)
	var started atomic.Int32
	port := serve(t, g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-block
	}))
	go http.Get("http://127.0.0.1:" + port + "/stuck")
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	g.Drain(ctx)
	// The upper bound only tells "gave up with the context" from "waited
	// for the request": a loaded machine may take a few seconds to run it.
	if took := time.Since(start); took < 90*time.Millisecond || took > 5*time.Second {
		t.Errorf("Drain with a stuck request took %s, want about the context's 100 ms", took)
	}
}
