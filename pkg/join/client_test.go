package join

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Send waits the Retry-After the cluster names (another master joining),
// tells the operator why, and asks again; an interrupted wait returns the
// context's error.
func TestSendRetriesLater(t *testing.T) {
	ca, err := pki.NewCA("ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pin := pki.Pin(ca.Cert)
	var calls atomic.Int32
	var busyFor atomic.Int32
	busyFor.Store(1)
	srv := tlsServerWith(t, ca, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= busyFor.Load() {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(ErrorResponse{Error: "another master is joining", RetryAfterSeconds: 1})
			return
		}
		_ = json.NewEncoder(w).Encode(Response{ClusterID: "c1", CAPin: pin})
	}))
	tok := Token{ID: "abc123", Secret: strings.Repeat("s", 32), Endpoints: []string{srv.Listener.Addr().String()}, CAPin: pin}
	req := Request{Name: "m2", PeerURL: "https://127.0.0.1:2380"}

	var notes []string
	start := time.Now()
	resp, err := Send(context.Background(), tok, req, func(s string) { notes = append(notes, s) })
	if err != nil || resp.ClusterID != "c1" {
		t.Fatalf("Send = %+v, %v", resp, err)
	}
	if calls.Load() != 2 || len(notes) != 1 || !strings.Contains(notes[0], "another master is joining") {
		t.Fatalf("%d requests, notes %q; want 2 requests and one note of the wait", calls.Load(), notes)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("asked again after %s, before the 1 s Retry-After", waited)
	}

	busyFor.Store(1 << 30)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Send(ctx, tok, req, func(string) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("interrupted Send err = %v, want the context's error", err)
	}
}
