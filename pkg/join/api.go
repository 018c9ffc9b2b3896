package join

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/pki"
	"github.com/k8s-master/k8s-master/pkg/version"
)

// Path of the one endpoint of the join service.
const Path = "/v1/join"

// Request is what a joining master sends, after it has checked the
// server's CA against the token's pin.
type Request struct {
	TokenID string `json:"tokenID"`
	Secret  string `json:"secret"`
	// Name is the joiner's node and etcd member name.
	Name string `json:"name"`
	// PeerURL is the joiner's etcd peer URL.
	PeerURL string `json:"peerURL"`
	// Force skips the quorum guard.
	Force bool `json:"force,omitempty"`
	// Versions is what the joiner runs; absent from releases before
	// v0.2.0 (version.Legacy).
	Versions *version.Versions `json:"versions,omitempty"`
}

// MaxRequestBytes bounds a join request's body.
const MaxRequestBytes = 16 << 10

// DecodeRequest reads one JSON join request and checks its shape; the
// credentials are the store's business.
func DecodeRequest(r io.Reader) (*Request, error) {
	var req Request
	// Unknown fields are ignored: a newer joiner may send more.
	dec := json.NewDecoder(r)
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("malformed join request: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed join request: more than one JSON value")
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return &req, nil
}

// Validate checks a request's shape (not its credentials).
func (r *Request) Validate() error {
	if !validChars(r.TokenID, idLen) || !validChars(r.Secret, secretLen) {
		return fmt.Errorf("%w: bad token ID or secret format", ErrMalformed)
	}
	if msgs := validation.IsDNS1123Subdomain(r.Name); len(msgs) > 0 {
		return fmt.Errorf("invalid name %q: %s", r.Name, strings.Join(msgs, "; "))
	}
	u, err := url.Parse(r.PeerURL)
	if err != nil || u.Scheme != "https" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("invalid peer URL %q: want https://<ip>:<port>", r.PeerURL)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || ip.IsUnspecified() || u.Port() == "" {
		return fmt.Errorf("invalid peer URL %q: want https://<ip>:<port>", r.PeerURL)
	}
	return nil
}

// Response hands the joiner what every master of the cluster shares.
type Response struct {
	ClusterID     string `json:"clusterID"`
	CAPin         string `json:"caPin"`
	EtcdClusterID string `json:"etcdClusterID"`
	// MemberID is the joiner's etcd member ID (hex).
	MemberID string `json:"memberID"`
	// InitialCluster is etcd's --initial-cluster for the joiner.
	InitialCluster string `json:"initialCluster"`
	// Resume is true when the joiner already was a member.
	Resume bool `json:"resume,omitempty"`
	// EtcdEndpoints are the client URLs of the other members.
	EtcdEndpoints []string `json:"etcdEndpoints"`
	// Cluster-wide settings.
	ServiceCIDR   string `json:"serviceCIDR"`
	PodCIDR       string `json:"podCIDR,omitempty"`
	ClusterDomain string `json:"clusterDomain"`
	VIP           string `json:"vip,omitempty"`
	VIPLeaseTTL   int    `json:"vipLeaseTTL,omitempty"`
	// Files maps paths relative to the data directory (pki/ca.key, ...)
	// to their contents: the CAs with their keys, the service-account keys
	// and the secrets-encryption config.
	Files map[string][]byte `json:"files"`
}

// SharedFiles are the data-directory files every master of a cluster has
// alike, relative to the data directory (the zero Layout's paths: the keys
// of Response.Files); the joiner writes them all 0600 except certificates
// and the SA public key.
var SharedFiles = sharedFiles(layout.Layout{})

func sharedFiles(l layout.Layout) []string {
	p, e := l.PKIDir(), l.EtcdPKIDir()
	return []string{
		pki.CertPath(p, pki.ClusterCA), pki.KeyPath(p, pki.ClusterCA),
		pki.CertPath(p, pki.FrontProxyCA), pki.KeyPath(p, pki.FrontProxyCA),
		pki.CertPath(e, pki.EtcdCA), pki.KeyPath(e, pki.EtcdCA),
		filepath.Join(p, pki.SAKey), filepath.Join(p, pki.SAPub),
		l.EncryptionConfig(),
	}
}

// RotationFiles are the staged and retired CAs of a CA rotation under way
// (pki.NextName, pki.OldName), relative to the data directory: sent when
// they exist, so that a master joining mid-rotation trusts what the
// others trust from its first start (its etcd member verifies its peers
// with the etcd bundle they make), then converges to the recorded phase.
var RotationFiles = rotationFiles(layout.Layout{})

func rotationFiles(l layout.Layout) []string {
	var out []string
	for _, ca := range []struct{ dir, name string }{
		{l.PKIDir(), pki.ClusterCA}, {l.PKIDir(), pki.FrontProxyCA}, {l.EtcdPKIDir(), pki.EtcdCA},
	} {
		for _, stem := range []string{pki.NextName(ca.name), pki.OldName(ca.name)} {
			out = append(out, pki.CertPath(ca.dir, stem), pki.KeyPath(ca.dir, stem))
		}
	}
	return out
}

// ErrorResponse is the body of every refusal.
type ErrorResponse struct {
	Error string `json:"error"`
	// RetryAfterSeconds is set when the joiner should try again later
	// (another join in progress, or back-off after failures).
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
}
