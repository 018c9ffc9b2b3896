// Package join lets a new master join a cluster: pasteable join tokens,
// their store in etcd, the join service every master runs, and the client a
// joining master uses.
package join

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/nodebootstrap"
)

// A join token is one string a person can paste:
//
//	km1:<id>.<secret>@<host:port>[,<host:port>...]/sha256:<64 hex digits>
//
// id is 6 and secret 32 characters of [a-z0-9] (about 165 bits); the
// endpoints are join services (the VIP when there is one); the pin is the
// SHA-256 of the cluster CA's public key (SubjectPublicKeyInfo).
const (
	tokenPrefix  = "km1:"
	idLen        = 6
	secretLen    = 32
	tokenAlpha   = "abcdefghijklmnopqrstuvwxyz0123456789"
	pinPrefix    = "sha256:"
	maxEndpoints = 16
)

// Token is a parsed join token.
type Token struct {
	ID        string
	Secret    string
	Endpoints []string // host:port, IPv6 hosts in brackets
	CAPin     string   // "sha256:<hex>"
}

// String renders the token in its pasteable form.
func (t Token) String() string {
	return tokenPrefix + t.ID + "." + t.Secret + "@" + strings.Join(t.Endpoints, ",") + "/" + t.CAPin
}

// Redacted is the token with its secret hidden, for logs and messages.
func (t Token) Redacted() string {
	return tokenPrefix + t.ID + ".<secret>@" + strings.Join(t.Endpoints, ",") + "/" + t.CAPin
}

// ErrMalformed wraps every parse failure.
var ErrMalformed = errors.New("malformed join token")

// ParseToken parses and validates a token string.
func ParseToken(s string) (Token, error) {
	bad := func(why string) (Token, error) {
		return Token{}, fmt.Errorf("%w: %s (expected km1:<id>.<secret>@<host:port>,.../sha256:<pin>, as printed by k8s-master init or token create)", ErrMalformed, why)
	}
	s = strings.TrimSpace(s)
	if nodebootstrap.IsWorkerToken(s) {
		return Token{}, fmt.Errorf("%w: this is a worker token (<6>.<16>, made by k8s-master token create --worker), for kubeadm join or a kubelet's bootstrap kubeconfig on a worker; a master joins with a master token (km1:..., from k8s-master token create)", ErrMalformed)
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return bad("it does not start with " + tokenPrefix)
	}
	cred, rest, ok := strings.Cut(rest, "@")
	if !ok {
		return bad("no @ before the endpoints")
	}
	id, secret, ok := strings.Cut(cred, ".")
	if !ok {
		return bad("no . between token ID and secret")
	}
	if !validChars(id, idLen) {
		return bad(fmt.Sprintf("the token ID must be %d characters of a-z and 0-9", idLen))
	}
	if !validChars(secret, secretLen) {
		return bad(fmt.Sprintf("the secret must be %d characters of a-z and 0-9", secretLen))
	}
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		return bad("no /sha256:<pin> after the endpoints")
	}
	eps, pin := rest[:i], rest[i+1:]
	hexPin, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok || len(hexPin) != 64 {
		return bad("the CA pin must be sha256: and 64 hex digits")
	}
	if _, err := hex.DecodeString(hexPin); err != nil || strings.ToLower(hexPin) != hexPin {
		return bad("the CA pin must be lower-case hex")
	}
	if eps == "" {
		return bad("no endpoints")
	}
	endpoints := strings.Split(eps, ",")
	if len(endpoints) > maxEndpoints {
		return bad("too many endpoints")
	}
	for _, ep := range endpoints {
		if err := validEndpoint(ep); err != nil {
			return bad(fmt.Sprintf("endpoint %q: %v", ep, err))
		}
	}
	return Token{ID: id, Secret: secret, Endpoints: endpoints, CAPin: pin}, nil
}

func validChars(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune(tokenAlpha, r) {
			return false
		}
	}
	return true
}

func validEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return errors.New("port must be 1-65535")
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return errors.New("host must be an IP address")
	}
	if ip.IsUnspecified() {
		return errors.New("host must not be unspecified")
	}
	if net.JoinHostPort(ip.String(), strconv.Itoa(p)) != ep {
		return errors.New("not in canonical host:port form")
	}
	return nil
}

// NewToken makes a token with fresh random ID and secret.
func NewToken(endpoints []string, caPin string) (Token, error) {
	id, err := randomString(idLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(secretLen)
	if err != nil {
		return Token{}, err
	}
	t := Token{ID: id, Secret: secret, Endpoints: endpoints, CAPin: caPin}
	// Round-trip so that a token we print always parses.
	if _, err := ParseToken(t.String()); err != nil {
		return Token{}, err
	}
	return t, nil
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	out := make([]byte, n)
	for i, v := range b {
		// 252 = 7*36: rejection sampling keeps the distribution uniform.
		for v >= 252 {
			var one [1]byte
			if _, err := rand.Read(one[:]); err != nil {
				return "", err
			}
			v = one[0]
		}
		out[i] = tokenAlpha[int(v)%len(tokenAlpha)]
	}
	return string(out), nil
}

// HashSecret is what the cluster stores instead of the secret. The secret
// has about 165 bits of entropy, so a plain SHA-256 is enough: there is
// nothing to brute-force.
func HashSecret(id, secret string) string {
	sum := sha256.Sum256([]byte("k8s-master join token\x00" + id + "\x00" + secret))
	return hex.EncodeToString(sum[:])
}
