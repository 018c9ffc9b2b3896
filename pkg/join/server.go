package join

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/upgrade"
	"github.com/k8s-master/k8s-master/pkg/version"
	"github.com/k8s-master/k8s-master/pkg/vip"
)

// staleLearnerAfter is how long an added member may stay unstarted before a
// join service removes it as the leftover of a joiner that died.
const staleLearnerAfter = 90 * time.Second

// Server is the join service of one master.
type Server struct {
	cfg     *config.Config
	state   *config.State
	cli     *clientv3.Client
	store   *Store
	limiter *limiter
	now     func() time.Time

	mu        sync.Mutex // one join at a time through this master
	seenAdded map[uint64]time.Time

	srv  *http.Server
	done chan struct{}

	// describe words a refusal for the joiner, see NewServer.
	describe func(error) string
}

// NewServer prepares the join service; cli talks to the cluster's etcd.
// describe words a refusal that names settings (config.SettingError) for
// the joiner's command line, which prints the message as it arrives: cmd/
// passes its flag wording through cluster.Options. nil: err.Error().
func NewServer(c *config.Config, st *config.State, cli *clientv3.Client, describe func(error) string) *Server {
	if describe == nil {
		describe = func(err error) string { return err.Error() }
	}
	return &Server{
		cfg: c, state: st, cli: cli, store: NewStore(cli, nil), describe: describe,
		limiter: newLimiter(time.Now), now: time.Now,
		seenAdded: map[uint64]time.Time{}, done: make(chan struct{}),
	}
}

// loadLeaf reads the join service's pair, with the cluster CA appended to
// the chain: joiners find it by its pin.
func (s *Server) loadLeaf() (*tls.Certificate, error) {
	p := s.cfg.Layout().PKIDir()
	leaf, err := tls.LoadX509KeyPair(pki.CertPath(p, pki.JoinService), pki.KeyPath(p, pki.JoinService))
	if err != nil {
		return nil, fmt.Errorf("join service certificate: %w", err)
	}
	// The CA that signed it: the old one while a CA rotation's window runs.
	caPEM, err := os.ReadFile(pki.ServingCAPath(p, pki.ClusterCA))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, err
	}
	leaf.Certificate = append(leaf.Certificate, ca.Raw)
	return &leaf, nil
}

// Start listens on the join port and serves until Close.
func (s *Server) Start() error {
	leaf, err := s.loadLeaf()
	if err != nil {
		return err
	}
	// The pair is read again at each handshake, so a renewed certificate
	// (certs renew, or the hourly renewal) is served without a restart;
	// should the files be unreadable midway, the last good pair serves.
	var mu sync.Mutex
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if fresh, err := s.loadLeaf(); err == nil {
			leaf = fresh
		}
		return leaf, nil
	}
	addr := net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(s.cfg.JoinPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("join service on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.handleJoin)
	s.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		ErrorLog:          nil,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Join service stopped")
		}
	}()
	return nil
}

// Close stops serving (joins in progress get a few seconds to finish).
func (s *Server) Close() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, code int, retryAfter int, format string, a ...any) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeJSON(w, code, ErrorResponse{Error: fmt.Sprintf(format, a...), RetryAfterSeconds: retryAfter})
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	source, _, _ := net.SplitHostPort(r.RemoteAddr)
	if r.Method != http.MethodPost {
		refuse(w, http.StatusMethodNotAllowed, 0, "use POST")
		return
	}
	if wait := s.limiter.blocked(source); wait > 0 {
		refuse(w, http.StatusTooManyRequests, int(wait.Seconds())+1, "too many failed join attempts from %s; wait %s", source, wait.Round(time.Second))
		return
	}
	req, err := DecodeRequest(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		s.limiter.fail(source)
		refuse(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()

	if _, err := s.store.Check(ctx, req.TokenID, req.Secret); err != nil {
		switch {
		case errors.Is(err, ErrUnknownToken), errors.Is(err, ErrBadSecret):
			s.limiter.fail(source)
			klog.InfoS("Join refused", "source", source, "token", req.TokenID, "reason", err)
			refuse(w, http.StatusUnauthorized, 0, "%v", err)
		case errors.Is(err, ErrExpired), errors.Is(err, ErrRevoked), errors.Is(err, ErrUsedUp):
			s.limiter.fail(source)
			klog.InfoS("Join refused", "source", source, "token", req.TokenID, "reason", err)
			refuse(w, http.StatusForbidden, 0, "%v", err)
		default:
			refuse(w, http.StatusServiceUnavailable, 5, "cannot check the token: %v", err)
		}
		return
	}
	s.limiter.succeed(source)

	s.mu.Lock()
	defer s.mu.Unlock()
	resp, code, retry, err := s.admit(ctx, req)
	if err != nil {
		klog.InfoS("Join not admitted", "name", req.Name, "reason", err)
		refuse(w, code, retry, "%s", s.describe(err))
		return
	}
	klog.InfoS("Join admitted", "name", req.Name, "peerURL", req.PeerURL, "memberID", resp.MemberID, "resume", resp.Resume)
	writeJSON(w, http.StatusOK, resp)
}

// admit adds the joiner as an etcd learner (or finds it already a member)
// and assembles what it needs.
func (s *Server) admit(ctx context.Context, req *Request) (*Response, int, int, error) {
	// The VIP `vip set` recorded rules over the one init recorded here.
	vipAddr, vipTTL := s.state.Config.VIP, s.state.Config.VIPLeaseTTL
	set, _, err := vip.ReadSetting(ctx, s.cli)
	if err != nil {
		return nil, http.StatusServiceUnavailable, 5, err
	}
	if set != nil {
		vipAddr, vipTTL = set.Address, set.LeaseTTL
	}
	members, err := etcd.Members(ctx, s.cli)
	if err != nil {
		return nil, http.StatusServiceUnavailable, 5, err
	}
	var self *etcd.MemberStatus
	for i, m := range members {
		samePeer := len(m.PeerURLs) > 0 && m.PeerURLs[0] == req.PeerURL
		switch {
		case m.Name == req.Name && samePeer:
			// It has run before: its data lives on that machine. A
			// joiner only gets here with an empty data directory.
			return nil, http.StatusConflict, 0, fmt.Errorf("%s is already a member of this cluster and has run; if that machine lost its data, remove the member first (k8s-master member remove %s) and join again", req.Name, req.Name)
		case m.Name == req.Name:
			return nil, http.StatusConflict, 0, fmt.Errorf("a member named %s already exists with peer URL %s; %w, or remove the old one with: k8s-master member remove %s", req.Name, strings.Join(m.PeerURLs, ","), config.Hint("pick another {name}"), req.Name)
		case samePeer && m.Started():
			return nil, http.StatusConflict, 0, fmt.Errorf("member %s already uses peer URL %s; remove it first with: k8s-master member remove %s", m.Name, req.PeerURL, m.Name)
		case samePeer:
			self = &members[i] // added by an earlier attempt that never started
		}
	}

	resume := self != nil
	var memberID uint64
	if resume {
		memberID = self.ID
	} else {
		if err := s.removeStaleLearners(ctx, members); err != nil {
			return nil, http.StatusServiceUnavailable, 5, err
		}
		for _, m := range members {
			if m.Learner {
				return nil, http.StatusConflict, 3, fmt.Errorf("another master (%s) is joining; this one waits and retries", nameOrPeer(m))
			}
		}
		if err := s.checkJoinerVersion(ctx, req, members); err != nil {
			return nil, http.StatusPreconditionFailed, 0, err
		}
		if !req.Force {
			if err := etcd.CheckAdd(members); err != nil {
				return nil, http.StatusPreconditionFailed, 0, err
			}
		}
		add, err := s.cli.MemberAddAsLearner(ctx, []string{req.PeerURL})
		if err != nil {
			if etcd.IsTooManyLearners(err) {
				return nil, http.StatusConflict, 3, errors.New("another master is joining; this one waits and retries")
			}
			return nil, http.StatusServiceUnavailable, 5, fmt.Errorf("etcd member add: %w", err)
		}
		memberID = add.Member.ID
		if err := s.store.Consume(ctx, req.TokenID); err != nil {
			// The member was added: report the use problem but let the
			// join go on rather than strand a learner.
			klog.ErrorS(err, "Could not count a join token use", "token", req.TokenID)
		}
	}

	files := map[string][]byte{}
	for _, rel := range SharedFiles {
		data, err := os.ReadFile(filepath.Join(s.cfg.DataDir, rel))
		if err != nil {
			return nil, http.StatusInternalServerError, 0, fmt.Errorf("read %s: %w", rel, err)
		}
		files[rel] = data
	}
	for _, rel := range RotationFiles {
		data, err := os.ReadFile(filepath.Join(s.cfg.DataDir, rel))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, http.StatusInternalServerError, 0, fmt.Errorf("read %s: %w", rel, err)
		}
		files[rel] = data
	}
	return &Response{
		ClusterID:      s.state.ClusterID,
		CAPin:          s.state.CAPin,
		EtcdClusterID:  s.state.EtcdClusterID,
		MemberID:       fmt.Sprintf("%x", memberID),
		InitialCluster: etcd.InitialCluster(withoutID(members, memberID), req.Name, req.PeerURL),
		Resume:         resume,
		EtcdEndpoints:  etcd.ClientEndpoints(members, memberID),
		ServiceCIDR:    s.state.Config.ServiceCIDR,
		PodCIDR:        s.state.Config.PodCIDR,
		ClusterDomain:  s.state.Config.ClusterDomain,
		VIP:            vipAddr,
		VIPLeaseTTL:    vipTTL,
		Files:          files,
	}, http.StatusOK, 0, nil
}

// removeStaleLearners removes members that were added but have not started
// for staleLearnerAfter: joiners that died before starting their member.
func (s *Server) removeStaleLearners(ctx context.Context, members []etcd.MemberStatus) error {
	now := s.now()
	for _, m := range members {
		if m.Started() || !m.Learner {
			continue
		}
		first, ok := s.seenAdded[m.ID]
		if !ok {
			s.seenAdded[m.ID] = now
			continue
		}
		if now.Sub(first) < staleLearnerAfter {
			continue
		}
		klog.InfoS("Removing a learner that never started", "member", fmt.Sprintf("%x", m.ID), "peerURLs", m.PeerURLs)
		if _, err := s.cli.MemberRemove(ctx, m.ID); err != nil {
			return fmt.Errorf("remove stale learner %x: %w", m.ID, err)
		}
		delete(s.seenAdded, m.ID)
	}
	return nil
}

func withoutID(ms []etcd.MemberStatus, id uint64) []etcd.MemberStatus {
	var out []etcd.MemberStatus
	for _, m := range ms {
		if m.ID != id {
			out = append(out, m)
		}
	}
	return out
}

func nameOrPeer(m etcd.MemberStatus) string {
	if m.Name != "" {
		return m.Name
	}
	return strings.Join(m.PeerURLs, ",")
}

// limiter slows down a source after failed attempts: 1 s after the first,
// doubling to 60 s, forgotten after 10 minutes of quiet.
type limiter struct {
	mu    sync.Mutex
	now   func() time.Time
	state map[string]*failures
}

type failures struct {
	count int
	until time.Time
	last  time.Time
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, state: map[string]*failures{}}
}

func (l *limiter) blocked(source string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.state[source]
	if f == nil {
		return 0
	}
	return max(0, f.until.Sub(l.now()))
}

func (l *limiter) fail(source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.state) > 10000 {
		for k, f := range l.state {
			if now.Sub(f.last) > 10*time.Minute {
				delete(l.state, k)
			}
		}
	}
	f := l.state[source]
	if f == nil || now.Sub(f.last) > 10*time.Minute {
		f = &failures{}
		l.state[source] = f
	}
	f.count++
	f.last = now
	f.until = now.Add(min(time.Second<<min(f.count-1, 6), time.Minute))
}

func (l *limiter) succeed(source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.state, source)
}

// checkJoinerVersion refuses a joiner that would skip a Kubernetes minor
// version or run older than a master of the cluster (pkg/upgrade).
func (s *Server) checkJoinerVersion(ctx context.Context, req *Request, members []etcd.MemberStatus) error {
	joiner := version.Legacy
	if req.Versions != nil {
		joiner = *req.Versions
	}
	registered, err := s.store.Masters(ctx)
	if err != nil {
		return fmt.Errorf("read the masters' versions: %w", err)
	}
	var peers []upgrade.Peer
	for _, info := range registered {
		if !slices.ContainsFunc(members, func(m etcd.MemberStatus) bool { return m.Name == info.Name }) {
			continue // registered, but no longer a member
		}
		p := upgrade.Peer{Name: info.Name, Versions: version.Legacy, Reachable: true}
		if info.Versions != nil {
			p.Versions = *info.Versions
		}
		peers = append(peers, p)
	}
	return upgrade.CheckJoin(req.Name, joiner, peers)
}
