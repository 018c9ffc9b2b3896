// Package nodebootstrap is the control plane's side of adding worker
// nodes: standard bootstrap tokens (`<6>.<16>`, Secrets in kube-system) and
// the objects that stock kubelets and unmodified `kubeadm join` read from
// the cluster (cluster-info, the kubeadm and kubelet ConfigMaps, and the
// RBAC that lets bootstrappers and nodes get their certificates).
package nodebootstrap

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// NodeGroup is the group every worker token adds to system:bootstrappers:
// kubeadm's, so that tokens made here and by `kubeadm token create` get the
// same rights.
const NodeGroup = "system:bootstrappers:kubeadm:default-node-token"

var tokenRE = regexp.MustCompile(bootstrapapi.BootstrapTokenPattern)

// Token is a worker (bootstrap) token: `<id>.<secret>`.
type Token struct {
	ID     string
	Secret string
}

func (t Token) String() string { return t.ID + "." + t.Secret }

// ErrMalformed wraps every parse failure.
var ErrMalformed = errors.New("malformed worker token")

// ParseToken parses a worker token.
func ParseToken(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Token{}, fmt.Errorf("%w: expected <6 characters>.<16 characters> of a-z and 0-9, as printed by k8s-master token create --worker", ErrMalformed)
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

// IsWorkerToken tells whether s has a worker token's form, so that a
// command expecting a master token can say what it was given.
func IsWorkerToken(s string) bool { return tokenRE.MatchString(strings.TrimSpace(s)) }

// NewToken makes a token with a fresh random ID and secret.
func NewToken() (Token, error) {
	s, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return Token{}, fmt.Errorf("generate a worker token: %w", err)
	}
	return ParseToken(s)
}

// Secret is the bootstrap-token Secret of t: the apiserver authenticates
// it (as system:bootstrap:<id> in system:bootstrappers and NodeGroup), the
// bootstrap signer signs cluster-info with it, and the token cleaner
// deletes it once expired.
func Secret(t Token, ttl time.Duration, description string, now time.Time) *corev1.Secret {
	data := map[string]string{
		bootstrapapi.BootstrapTokenIDKey:               t.ID,
		bootstrapapi.BootstrapTokenSecretKey:           t.Secret,
		bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		bootstrapapi.BootstrapTokenUsageSigningKey:     "true",
		bootstrapapi.BootstrapTokenExtraGroupsKey:      NodeGroup,
	}
	if ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = now.Add(ttl).UTC().Format(time.RFC3339)
	}
	if description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = description
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(t.ID), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data:       byteMap(data),
	}
}

func byteMap(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

// CreateToken stores a new worker token valid for ttl (0: no expiry).
func CreateToken(ctx context.Context, cs kubernetes.Interface, ttl time.Duration, description string) (Token, error) {
	t, err := NewToken()
	if err != nil {
		return Token{}, err
	}
	if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, Secret(t, ttl, description, time.Now()), metav1.CreateOptions{}); err != nil {
		return Token{}, fmt.Errorf("store the worker token as a Secret in kube-system: %w", err)
	}
	return t, nil
}

// Info is a worker token as `token list` shows it, without its secret.
type Info struct {
	ID          string    `json:"id"`
	Expires     time.Time `json:"expires,omitzero"`
	Description string    `json:"description,omitempty"`
	Usages      []string  `json:"usages"`
	Groups      []string  `json:"groups,omitempty"`
}

// State is "valid" or "expired" (the token cleaner deletes expired ones
// shortly after).
func (i Info) State(now time.Time) string {
	if !i.Expires.IsZero() && !now.Before(i.Expires) {
		return "expired"
	}
	return "valid"
}

// ListTokens lists the bootstrap-token Secrets in kube-system, newest
// expiry first.
func ListTokens(ctx context.Context, cs kubernetes.Interface) ([]Info, error) {
	list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken)})
	if err != nil {
		return nil, fmt.Errorf("list the bootstrap-token Secrets in kube-system: %w", err)
	}
	var out []Info
	for _, s := range list.Items {
		if i, ok := infoOf(&s); ok {
			out = append(out, i)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Expires.After(out[b].Expires) })
	return out, nil
}

func infoOf(s *corev1.Secret) (Info, bool) {
	id := string(s.Data[bootstrapapi.BootstrapTokenIDKey])
	if !bootstraputil.IsValidBootstrapTokenID(id) || s.Name != bootstraputil.BootstrapTokenSecretName(id) {
		return Info{}, false
	}
	i := Info{ID: id, Description: string(s.Data[bootstrapapi.BootstrapTokenDescriptionKey])}
	if exp, err := time.Parse(time.RFC3339, string(s.Data[bootstrapapi.BootstrapTokenExpirationKey])); err == nil {
		i.Expires = exp
	}
	for k, v := range s.Data {
		if u, ok := strings.CutPrefix(k, bootstrapapi.BootstrapTokenUsagePrefix); ok && string(v) == "true" {
			i.Usages = append(i.Usages, u)
		}
	}
	sort.Strings(i.Usages)
	if g := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); g != "" {
		i.Groups = strings.Split(g, ",")
	}
	return i, true
}

// ErrNoSuchToken is returned by RevokeToken for an unknown ID.
var ErrNoSuchToken = errors.New("no such worker token")

// RevokeToken deletes the worker token's Secret: the apiserver refuses
// the token at once. Nodes that already joined keep their certificates.
func RevokeToken(ctx context.Context, cs kubernetes.Interface, id string) error {
	if t, err := ParseToken(id); err == nil {
		id = t.ID
	}
	if !bootstraputil.IsValidBootstrapTokenID(id) {
		return fmt.Errorf("%w: %q is not a worker token ID (6 characters of a-z and 0-9); see k8s-master token list", ErrNoSuchToken, id)
	}
	err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %s (expired tokens are deleted by the token cleaner); see k8s-master token list", ErrNoSuchToken, id)
	}
	if err != nil {
		return fmt.Errorf("delete the Secret of worker token %s: %w", id, err)
	}
	return nil
}

// JoinCommand is the line a person pastes on a worker: endpoint is
// host:port of the apiserver (the VIP when there is one), caPin the
// "sha256:<hex>" of the cluster CA's public key.
func JoinCommand(endpoint string, t Token, caPin string) string {
	return fmt.Sprintf("kubeadm join %s --token %s --discovery-token-ca-cert-hash %s", endpoint, t, caPin)
}

// CheckToken tells whether t is a worker token the cluster knows, so that
// no kubeconfig is written for a token the apiserver would refuse.
func CheckToken(ctx context.Context, cs kubernetes.Interface, t Token) error {
	s, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstraputil.BootstrapTokenSecretName(t.ID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %s (revoked, expired or never made); make one with k8s-master token create --worker", ErrNoSuchToken, t.ID)
	}
	if err != nil {
		return fmt.Errorf("read worker token %s: %w", t.ID, err)
	}
	if subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(t.Secret)) != 1 {
		return fmt.Errorf("%w: worker token %s has another secret; check the token you pasted", ErrNoSuchToken, t.ID)
	}
	if i, ok := infoOf(s); !ok || i.State(time.Now()) != "valid" {
		return fmt.Errorf("%w: worker token %s has expired; make one with k8s-master token create --worker", ErrNoSuchToken, t.ID)
	}
	return nil
}
