package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

// tlsServer serves with a leaf of ca for 127.0.0.1, sending the CA in the
// chain like the join service does.
func tlsServer(t *testing.T, ca *pki.CA, withCA bool) *httptest.Server {
	t.Helper()
	return tlsServerWith(t, ca, withCA, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the request reached the server: the secret was sent")
	}))
}

// tlsServerWith is tlsServer answering with h.
func tlsServerWith(t *testing.T, ca *pki.CA, withCA bool, h http.Handler) *httptest.Server {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueLeaf(pki.LeafSpec{Name: "s", CommonName: "s", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.ServerAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if withCA {
		pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestPinnedTLS(t *testing.T) {
	ours, _ := pki.NewCA("ours", time.Now())
	theirs, _ := pki.NewCA("theirs", time.Now())
	dial := func(srv *httptest.Server, pin string) error {
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), pinnedTLS(pin, "127.0.0.1"))
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(tlsServer(t, ours, true), pki.Pin(ours.Cert)); err != nil {
		t.Fatalf("the right CA was refused: %v", err)
	}
	for name, tc := range map[string]struct {
		srv *httptest.Server
		pin string
	}{
		"another CA":            {tlsServer(t, theirs, true), pki.Pin(ours.Cert)},
		"pinned CA not sent":    {tlsServer(t, ours, false), pki.Pin(ours.Cert)},
		"leaf signed elsewhere": {tlsServer(t, theirs, true), pki.Pin(theirs.Cert) + "0"},
	} {
		if err := dial(tc.srv, tc.pin); err == nil || !strings.Contains(err.Error(), "CA pin") {
			t.Errorf("%s: err = %v", name, err)
		}
	}

	// Through Send: refused before any request is made.
	srv := tlsServer(t, theirs, true)
	tok := Token{ID: "abc123", Secret: strings.Repeat("s", 32), Endpoints: []string{srv.Listener.Addr().String()}, CAPin: pki.Pin(ours.Cert)}
	_, err := Send(context.Background(), tok, Request{Name: "m2", PeerURL: "https://127.0.0.1:2380"}, func(string) {})
	if !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Send err = %v, want ErrPinMismatch", err)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(func() time.Time { return now })
	if l.blocked("a") != 0 {
		t.Fatal("a fresh source is blocked")
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for _, w := range want {
		l.fail("a")
		if got := l.blocked("a"); got != w {
			t.Fatalf("after a failure blocked %s, want %s", got, w)
		}
	}
	if l.blocked("b") != 0 {
		t.Fatal("another source is blocked too")
	}
	for range 10 {
		l.fail("a")
	}
	if got := l.blocked("a"); got != time.Minute {
		t.Fatalf("back-off not capped: %s", got)
	}
	now = now.Add(2 * time.Minute)
	if l.blocked("a") != 0 {
		t.Fatal("still blocked after the back-off")
	}
	l.succeed("a")
	l.fail("a")
	if got := l.blocked("a"); got != time.Second {
		t.Fatalf("success did not reset: %s", got)
	}
}

func TestRequestValidate(t *testing.T) {
	good := Request{TokenID: "abc123", Secret: strings.Repeat("a", 32), Name: "m2", PeerURL: "https://10.0.0.2:2380"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Request){
		"short secret": func(r *Request) { r.Secret = "x" },
		"bad name":     func(r *Request) { r.Name = "M_2" },
		"http peer":    func(r *Request) { r.PeerURL = "http://10.0.0.2:2380" },
		"host name":    func(r *Request) { r.PeerURL = "https://m2:2380" },
		"no port":      func(r *Request) { r.PeerURL = "https://10.0.0.2" },
		"with path":    func(r *Request) { r.PeerURL = "https://10.0.0.2:2380/x" },
		"unspecified":  func(r *Request) { r.PeerURL = "https://0.0.0.0:2380" },
	} {
		r := good
		mut(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeRequest feeds the join service's request decoder arbitrary
// bodies: it must never panic, and what it accepts must be a well-formed
// request that survives a round trip unchanged.
func FuzzDecodeRequest(f *testing.F) {
	good := `{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"https://10.0.0.12:2380"}`
	for _, seed := range []string{
		good, "", "{}", "null", "[]", `{"tokenID":1}`, good + good, good + " x",
		`{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"M_2","peerURL":"https://10.0.0.12:2380"}`,
		`{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"http://10.0.0.12:2380"}`,
		`{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"https://0.0.0.0:2380"}`,
		`{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"https://u@10.0.0.12:2380/x?y"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(bytes.NewReader(body))
		if err != nil {
			if req != nil {
				t.Fatal("a refused request came back non-nil")
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted request does not validate: %v", err)
		}
		data, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeRequest(bytes.NewReader(data))
		if err != nil || *again != *req {
			t.Fatalf("round trip changed the request: %+v -> %+v (%v)", req, again, err)
		}
	})
}

func TestDecodeRequest(t *testing.T) {
	good := `{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"https://10.0.0.12:2380","extra":1}`
	if req, err := DecodeRequest(strings.NewReader(good)); err != nil || req.Name != "m2" {
		t.Fatalf("good request: %+v, %v", req, err)
	}
	for name, body := range map[string]string{
		"empty":        "",
		"two values":   good + good,
		"wrong type":   `{"tokenID":1}`,
		"short secret": `{"tokenID":"abcdef","secret":"0123","name":"m2","peerURL":"https://10.0.0.12:2380"}`,
		"bad name":     `{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"M_2","peerURL":"https://10.0.0.12:2380"}`,
		"http peer":    `{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"http://10.0.0.12:2380"}`,
		"no port":      `{"tokenID":"abcdef","secret":"0123456789abcdef0123456789abcdef","name":"m2","peerURL":"https://10.0.0.12"}`,
	} {
		if _, err := DecodeRequest(strings.NewReader(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
