package certauthcache

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
)

// countingAuth answers like the x509 authenticator (user = CommonName)
// unless told otherwise, and counts its calls.
type countingAuth struct {
	calls  int
	user   string // when set, the name it answers with instead
	err    error
	during func() // when set, run inside each call (a CA change mid-verification)
}

func (c *countingAuth) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	c.calls++
	if c.during != nil {
		c.during()
	}
	if req.TLS == nil {
		return nil, false, nil
	}
	if c.err != nil {
		return nil, false, c.err
	}
	name := req.TLS.PeerCertificates[0].Subject.CommonName
	if c.user != "" {
		name = c.user
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: name, Groups: []string{"g"}}}, true, nil
}

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func cert(cn string, raw byte, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{Raw: []byte{raw, raw, raw}, Subject: pkix.Name{CommonName: cn}, NotBefore: t0.Add(-time.Hour), NotAfter: notAfter}
}

func request(certs ...*x509.Certificate) *http.Request {
	return &http.Request{Header: http.Header{}, TLS: &tls.ConnectionState{PeerCertificates: certs}}
}

func newCache(inner authenticator.Request, now *time.Time) *Authenticator {
	a := New(inner, []string{"X-Remote-User", "X-Remote-Group"}, []string{"X-Remote-Extra-"})
	a.now = func() time.Time { return *now }
	return a
}

func mustAuth(t *testing.T, a *Authenticator, req *http.Request, want string) {
	t.Helper()
	resp, ok, err := a.AuthenticateRequest(req)
	if err != nil || !ok || resp.User.GetName() != want {
		t.Fatalf("AuthenticateRequest = %v, %v, %v; want user %q", resp, ok, err, want)
	}
}

func TestSameChainVerifiedOnce(t *testing.T) {
	now := t0
	inner := &countingAuth{}
	a := newCache(inner, &now)
	alice, bob := cert("alice", 1, t0.Add(time.Hour)), cert("bob", 2, t0.Add(time.Hour))
	for range 5 {
		mustAuth(t, a, request(alice), "alice")
		mustAuth(t, a, request(bob), "bob")
	}
	if inner.calls != 2 {
		t.Errorf("inner authenticator called %d times for 2 certificates, want 2", inner.calls)
	}
	// The same leaf with another intermediate is another chain.
	mustAuth(t, a, request(alice, cert("ca", 3, t0.Add(time.Hour))), "alice")
	if inner.calls != 3 {
		t.Errorf("a new chain with a known leaf was not verified (calls %d, want 3)", inner.calls)
	}
}

func TestEntryEnds(t *testing.T) {
	now := t0
	inner := &countingAuth{}
	a := newCache(inner, &now)
	long, short := cert("long", 1, t0.Add(time.Hour)), cert("short", 2, t0.Add(10*time.Second))
	for _, c := range []*x509.Certificate{long, short} {
		mustAuth(t, a, request(c), c.Subject.CommonName)
	}
	now = t0.Add(11 * time.Second) // past short's NotAfter, within the TTL
	mustAuth(t, a, request(long), "long")
	if inner.calls != 2 {
		t.Fatalf("calls %d after the long-lived certificate again, want 2 (cached)", inner.calls)
	}
	mustAuth(t, a, request(short), "short") // the inner one decides an expired certificate
	if inner.calls != 3 {
		t.Fatalf("calls %d after an expired certificate, want 3 (not cached past NotAfter)", inner.calls)
	}
	now = t0.Add(TTL)
	mustAuth(t, a, request(long), "long")
	if inner.calls != 4 {
		t.Fatalf("calls %d after the TTL, want 4", inner.calls)
	}
	// A chain not yet valid when next asked (clock stepped back) goes to
	// the inner authenticator again.
	now = t0.Add(-2 * time.Hour)
	mustAuth(t, a, request(long), "long")
	if inner.calls != 5 {
		t.Fatalf("calls %d before NotBefore, want 5", inner.calls)
	}
}

func TestNewCAsForgetEverything(t *testing.T) {
	now := t0
	inner := &countingAuth{}
	a := newCache(inner, &now)
	c := cert("alice", 1, t0.Add(time.Hour))
	mustAuth(t, a, request(c), "alice")
	a.Enqueue()
	inner.err = errors.New("x509: certificate signed by unknown authority")
	if _, ok, err := a.AuthenticateRequest(request(c)); ok || err == nil {
		t.Fatalf("after the CAs changed a cached success was reused (ok %v, err %v)", ok, err)
	}
	// Failures are not cached: once the inner one accepts again, so do we.
	inner.err = nil
	mustAuth(t, a, request(c), "alice")
	if inner.calls != 3 {
		t.Errorf("calls %d, want 3", inner.calls)
	}
}

// An answer verified against CAs that changed while it was being verified
// is not stored: the next request is verified again.
func TestCAChangeDuringVerification(t *testing.T) {
	now := t0
	inner := &countingAuth{}
	a := newCache(inner, &now)
	inner.during = a.Enqueue
	c := cert("alice", 1, t0.Add(time.Hour))
	mustAuth(t, a, request(c), "alice")
	inner.during = nil
	mustAuth(t, a, request(c), "alice")
	mustAuth(t, a, request(c), "alice")
	if inner.calls != 2 {
		t.Errorf("inner called %d times, want 2 (the first answer not kept, the second kept)", inner.calls)
	}
}

func TestUncacheableRequests(t *testing.T) {
	now := t0
	c := cert("alice", 1, t0.Add(time.Hour))
	for name, set := range map[string]func(*http.Request){
		"bearer token": func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") },
		"websocket token": func(r *http.Request) {
			r.Header.Set("Sec-WebSocket-Protocol", "base64url.bearer.authorization.k8s.io.eA")
		},
		"front-proxy user":  func(r *http.Request) { r.Header.Set("X-Remote-User", "bob") },
		"front-proxy group": func(r *http.Request) { r.Header.Set("x-remote-group", "admins") },
		"front-proxy extra": func(r *http.Request) { r.Header.Set("X-Remote-Extra-Scopes", "s") },
	} {
		inner := &countingAuth{}
		a := newCache(inner, &now)
		for range 3 {
			r := request(c)
			set(r)
			mustAuth(t, a, r, "alice")
		}
		if inner.calls != 3 {
			t.Errorf("%s: inner called %d times for 3 requests, want 3 (never cached)", name, inner.calls)
		}
	}
	// No TLS client certificate: nothing to key on.
	inner := &countingAuth{}
	a := newCache(inner, &now)
	for range 2 {
		if _, _, err := a.AuthenticateRequest(&http.Request{Header: http.Header{}}); err != nil {
			t.Fatal(err)
		}
	}
	if inner.calls != 2 {
		t.Errorf("requests without TLS: inner called %d times, want 2", inner.calls)
	}
}

// An answer that is not the certificate's own name (anonymous, or another
// authenticator of the union) is passed on but never reused.
func TestOtherAnswersNotCached(t *testing.T) {
	now := t0
	inner := &countingAuth{user: "system:anonymous"}
	a := newCache(inner, &now)
	c := cert("front-proxy-client", 1, t0.Add(time.Hour))
	for range 2 {
		mustAuth(t, a, request(c), "system:anonymous")
	}
	if inner.calls != 2 {
		t.Errorf("inner called %d times, want 2", inner.calls)
	}
}

func TestBoundedSize(t *testing.T) {
	now := t0
	inner := &countingAuth{}
	a := newCache(inner, &now)
	for i := range maxEntries + 10 {
		c := &x509.Certificate{Raw: []byte{byte(i), byte(i >> 8), byte(i >> 16)}, Subject: pkix.Name{CommonName: "n"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
		mustAuth(t, a, request(c), "n")
	}
	if n := len(a.entries); n > maxEntries {
		t.Errorf("%d entries, want at most %d", n, maxEntries)
	}
}
