// Package certauthcache remembers the apiserver's client-certificate
// authentications. Upstream's x509 authenticator verifies the client's
// certificate chain on every request, an ECDSA signature check that took
// 8.5 % of k8s-master's CPU under 8 API workers (profile in README), and in
// one process every controller-manager and scheduler request pays it too.
// The chain of a TLS connection is the same for each of its requests, and
// its verification depends only on the certificates, the trusted CAs and
// the time; so a success is kept, keyed by the certificates' bytes, until
// the CAs change (the apiserver's CA content provider notifies us), any
// certificate of the chain leaves its validity period, or a short TTL ends.
//
// Only requests whose authentication can depend on nothing but the
// certificates are cached: no Authorization header (tokens), no
// Sec-WebSocket-Protocol (tokens of WebSocket clients) and none of the
// front-proxy's identity headers; and only responses naming the
// certificate's CommonName as the user, which is what the x509
// authenticator returns. Failures are never cached.
package certauthcache

import (
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
)

// TTL bounds how long a success is reused even when nothing changed: a CA
// that expires, or a CA file replaced without a notification, is seen
// within it (upstream reloads CA files once a minute).
const TTL = 30 * time.Second

// maxEntries bounds the memory: one entry per client certificate in use
// (kubelets, components, admins), about 200 bytes each.
const maxEntries = 4096

// Authenticator wraps the apiserver's request authenticator. It is a
// dynamiccertificates.Listener: register it with the client CA provider so
// that a new CA bundle forgets every entry.
type Authenticator struct {
	inner          authenticator.Request
	headerNames    []string // request headers whose presence makes a request uncacheable
	headerPrefixes []string
	now            func() time.Time

	mu sync.Mutex
	// generation is bumped by Enqueue, which also empties entries: every
	// entry present was stored under the current generation.
	generation uint64
	entries    map[[sha256.Size]byte]entry
}

type entry struct {
	resp      *authenticator.Response
	notBefore time.Time // latest NotBefore of the chain
	expires   time.Time // earliest NotAfter of the chain, or stored + TTL
}

// New wraps inner. identityHeaders are the request-header authenticator's
// username, UID and group headers; identityPrefixes its extra-header
// prefixes: a request carrying any of them is never cached.
func New(inner authenticator.Request, identityHeaders, identityPrefixes []string) *Authenticator {
	a := &Authenticator{inner: inner, now: time.Now, entries: map[[sha256.Size]byte]entry{}}
	for _, h := range identityHeaders {
		a.headerNames = append(a.headerNames, http.CanonicalHeaderKey(h))
	}
	for _, p := range identityPrefixes {
		a.headerPrefixes = append(a.headerPrefixes, strings.ToLower(p))
	}
	return a
}

// Enqueue forgets every entry: the trusted CAs changed.
func (a *Authenticator) Enqueue() {
	a.mu.Lock()
	a.generation++
	clear(a.entries)
	a.mu.Unlock()
}

// AuthenticateRequest implements authenticator.Request.
func (a *Authenticator) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	if !a.cacheable(req) {
		return a.inner.AuthenticateRequest(req)
	}
	key := chainKey(req)
	now := a.now()
	a.mu.Lock()
	e, found := a.entries[key]
	gen := a.generation
	a.mu.Unlock()
	if found && now.Before(e.expires) && !now.Before(e.notBefore) {
		return e.resp, true, nil
	}
	// gen was read before the inner authenticator loads its CAs: if they
	// change meanwhile, Enqueue bumps the generation and this answer is
	// not stored.
	resp, ok, err := a.inner.AuthenticateRequest(req)
	if err != nil || !ok || resp == nil || resp.User == nil {
		return resp, ok, err
	}
	certs := req.TLS.PeerCertificates
	if resp.User.GetName() != certs[0].Subject.CommonName || len(resp.Audiences) != 0 {
		return resp, ok, err // not the x509 authenticator's answer
	}
	e = entry{resp: resp, expires: now.Add(TTL)}
	for _, c := range certs {
		if c.NotAfter.Before(e.expires) {
			e.expires = c.NotAfter
		}
		if c.NotBefore.After(e.notBefore) {
			e.notBefore = c.NotBefore
		}
	}
	a.mu.Lock()
	if a.generation == gen {
		if len(a.entries) >= maxEntries {
			a.evict(now)
		}
		a.entries[key] = e
	}
	a.mu.Unlock()
	return resp, ok, err
}

// evict drops expired entries, and everything if none had expired; under mu.
func (a *Authenticator) evict(now time.Time) {
	for k, e := range a.entries {
		if !now.Before(e.expires) {
			delete(a.entries, k)
		}
	}
	if len(a.entries) >= maxEntries {
		clear(a.entries)
	}
}

func (a *Authenticator) cacheable(req *http.Request) bool {
	if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		return false
	}
	if _, ok := req.Header["Authorization"]; ok {
		return false
	}
	if _, ok := req.Header["Sec-Websocket-Protocol"]; ok {
		return false
	}
	for _, h := range a.headerNames {
		if _, ok := req.Header[h]; ok {
			return false
		}
	}
	if len(a.headerPrefixes) > 0 {
		for h := range req.Header {
			l := strings.ToLower(h)
			for _, p := range a.headerPrefixes {
				if strings.HasPrefix(l, p) {
					return false
				}
			}
		}
	}
	return true
}

// chainKey hashes every certificate the client presented, each prefixed
// with its length so that no two chains share a key.
func chainKey(req *http.Request) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, c := range req.TLS.PeerCertificates {
		binary.BigEndian.PutUint64(n[:], uint64(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}
