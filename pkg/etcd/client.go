package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// NewClient connects to endpoints with this master's etcd client
// certificate (the apiserver's).
func NewClient(c *config.Config, endpoints ...string) (*clientv3.Client, error) {
	tlsCfg, err := ClientTLSConfig(c)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	if len(endpoints) == 0 {
		endpoints = []string{c.LocalEtcdURL()}
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// ClientTLSConfig is the TLS configuration of this master's etcd clients.
// It verifies each member against the etcd trust bundle as it is at that
// handshake, not as it was when the client was made: the master's clients
// live as long as the process, and a CA rotation changes the bundle (the
// client certificate pair is reloaded per handshake already).
func ClientTLSConfig(c *config.Config) (*tls.Config, error) {
	info := ClientTLS(c)
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, err
	}
	dir := c.Layout().EtcdPKIDir()
	cfg.RootCAs = nil
	// Verification is VerifyConnection's, below.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyMember(cs, pki.TrustFile(dir, pki.EtcdCA))
	}
	return cfg, nil
}

// verifyMember checks a member's certificate chain against the bundle in
// trustFile. The name is checked when the client sent one (SNI); an
// endpoint given by IP address sends none, and then any certificate of
// the etcd CA passes: that CA signs only the masters' etcd certificates.
func verifyMember(cs tls.ConnectionState, trustFile string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the etcd member presented no certificate")
	}
	data, err := os.ReadFile(trustFile)
	if err != nil {
		return fmt.Errorf("read the etcd trust bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no certificate", trustFile)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		DNSName:       cs.ServerName,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verify the etcd member against %s: %w", trustFile, err)
	}
	return nil
}

// MemberStatus is one member as seen from the cluster.
type MemberStatus struct {
	ID         uint64   `json:"-"`
	IDHex      string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
	Healthy    bool     `json:"healthy"`
	DBSize     int64    `json:"dbSizeBytes"`
	// DBSizeInUse is the part of DBSize that holds data; the rest is free
	// pages a defragmentation gives back. DBSizeQuota is the member's
	// backend quota (its master's etcd-quota-bytes).
	DBSizeInUse int64 `json:"dbSizeInUseBytes"`
	DBSizeQuota int64 `json:"dbSizeQuotaBytes"`
	// Alarm is "NOSPACE" while etcd refuses writes for want of space.
	Alarm string `json:"alarm,omitempty"`
	// Version is the member's etcd server version (v3.7.0).
	Version string `json:"etcdVersion,omitempty"`
	// RaftIndex is the member's last raft log index, RaftAppliedIndex how
	// far it has applied: a member has caught up with another once its
	// applied index reaches the other's raft index.
	RaftIndex        uint64 `json:"raftIndex"`
	RaftAppliedIndex uint64 `json:"raftAppliedIndex"`
	Error            string `json:"error,omitempty"`
}

// noSpaceAlarm matches how a member's status lists the NOSPACE alarm
// (protobuf text: "memberID:... alarm:NOSPACE", spacing not fixed).
var noSpaceAlarm = regexp.MustCompile(`alarm:\s*NOSPACE`)

// Started tells whether the member has run at least once (an added member
// that never started has no name yet).
func (m MemberStatus) Started() bool { return m.Name != "" }

// Members lists the members and asks each one for its status, each with a
// short timeout so that a dead member only costs that.
func Members(ctx context.Context, cli *clientv3.Client) ([]MemberStatus, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.MemberList(lctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	out := make([]MemberStatus, len(resp.Members))
	done := make(chan struct{}, len(resp.Members))
	for i, m := range resp.Members {
		out[i] = MemberStatus{ID: m.ID, IDHex: fmt.Sprintf("%x", m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner}
		go func(ms *MemberStatus) {
			defer func() { done <- struct{}{} }()
			if len(ms.ClientURLs) == 0 {
				ms.Error = "not started"
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			st, err := cli.Status(sctx, ms.ClientURLs[0])
			if err != nil {
				ms.Error = err.Error()
				return
			}
			// NOSPACE is reported apart: such a member serves reads,
			// deletes and its quorum; only writes wait (pkg/etcdspace).
			var errs []string
			for _, e := range st.Errors {
				if noSpaceAlarm.MatchString(e) {
					ms.Alarm = "NOSPACE"
				} else {
					errs = append(errs, e)
				}
			}
			ms.Healthy = len(errs) == 0 && st.Leader != 0
			if !ms.Healthy && len(errs) > 0 {
				ms.Error = errs[0]
			} else if st.Leader == 0 {
				ms.Error = "sees no leader"
			}
			ms.Leader = st.Leader == ms.ID
			ms.DBSize, ms.DBSizeInUse, ms.DBSizeQuota = st.DbSize, st.DbSizeInUse, st.DbSizeQuota
			ms.Version = "v" + st.Version
			ms.RaftIndex, ms.RaftAppliedIndex = st.RaftIndex, st.RaftAppliedIndex
		}(&out[i])
	}
	for range resp.Members {
		<-done
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ClientEndpoints lists the client URLs of started members, except skip.
func ClientEndpoints(ms []MemberStatus, skip uint64) []string {
	var eps []string
	for _, m := range ms {
		if m.ID != skip {
			eps = append(eps, m.ClientURLs...)
		}
	}
	return eps
}

// InitialCluster renders "name=peerURL,..." for started members plus a new
// one.
func InitialCluster(ms []MemberStatus, newName, newPeerURL string) string {
	s := ""
	for _, m := range ms {
		if !m.Started() {
			continue
		}
		for _, u := range m.PeerURLs {
			if s != "" {
				s += ","
			}
			s += m.Name + "=" + u
		}
	}
	if newName != "" {
		if s != "" {
			s += ","
		}
		s += newName + "=" + newPeerURL
	}
	return s
}
