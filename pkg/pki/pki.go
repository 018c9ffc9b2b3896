// Package pki creates and checks the cluster's certificate authorities and
// the leaf certificates each master makes for itself. Keys are ECDSA P-256:
// as strong as RSA-3072 for this use, and generated in microseconds, which
// keeps init fast.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

const (
	// CAValidity is how long a CA made at init lasts (as kubeadm).
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is how long a leaf certificate lasts; a running master
	// re-issues them when RenewBefore is reached (checked at start and
	// every hour).
	LeafValidity = 365 * 24 * time.Hour
	// RenewBefore is the margin before expiry at which a leaf is re-issued.
	RenewBefore = 90 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock lags a little
	// accepts a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
)

// Test-only settings: the certificate-renewal lab test makes leaves that
// last minutes so that running masters renew them while it watches.
// Nothing else sets these; users get LeafValidity and RenewBefore.
const (
	TestLeafValidityEnv = "K8S_MASTER_TEST_LEAF_VALIDITY"
	TestRenewBeforeEnv  = "K8S_MASTER_TEST_RENEW_BEFORE"
)

// testDuration reads a Go duration from env, or returns def when unset or
// unparsable (a test that mistypes it sees no renewal and fails).
func testDuration(env string, def time.Duration) time.Duration {
	if v := os.Getenv(env); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return def
}

// leafValidity and renewBefore are LeafValidity and RenewBefore unless a
// test overrides them.
func leafValidity() time.Duration { return testDuration(TestLeafValidityEnv, LeafValidity) }

// RenewMargin is how close to its expiry a leaf is re-issued: RenewBefore
// unless a test overrides it.
func RenewMargin() time.Duration { return testDuration(TestRenewBeforeEnv, RenewBefore) }

// CA is a certificate authority with its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is the certificate as stored, for bundles and kubeconfigs.
	CertPEM []byte
}

// CertPath and KeyPath name the files of a pair called name under dir.
func CertPath(dir, name string) string { return filepath.Join(dir, name+".crt") }
func KeyPath(dir, name string) string  { return filepath.Join(dir, name+".key") }

// NewCA makes a self-signed CA.
func NewCA(commonName string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der)}, nil
}

// Write stores the CA under dir as name.crt (0644) and name.key (0600).
func (ca *CA) Write(dir, name string) error {
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(KeyPath(dir, name), keyPEM, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(CertPath(dir, name), ca.CertPEM, 0o644)
}

// LoadCA reads name.crt and name.key under dir and checks they belong together.
func LoadCA(dir, name string) (*CA, error) {
	certPEM, err := os.ReadFile(CertPath(dir, name))
	if err != nil {
		return nil, err
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CertPath(dir, name), err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", CertPath(dir, name))
	}
	keyPEM, err := os.ReadFile(KeyPath(dir, name))
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyPath(dir, name), err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not match %s: restore the pair from a backup", KeyPath(dir, name), CertPath(dir, name))
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// LoadOrCreateCA loads the CA, or makes and stores a new one when neither of
// its files exists. A lone cert or key is an error: guessing would fork the
// cluster's identity.
func LoadOrCreateCA(dir, name, commonName string, now time.Time) (*CA, bool, error) {
	_, certErr := os.Stat(CertPath(dir, name))
	_, keyErr := os.Stat(KeyPath(dir, name))
	if errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist) {
		ca, err := NewCA(commonName, now)
		if err != nil {
			return nil, false, err
		}
		return ca, true, ca.Write(dir, name)
	}
	ca, err := LoadCA(dir, name)
	return ca, false, err
}

// Usage says what a leaf certificate is for.
type Usage int

const (
	ServerAuth Usage = 1 << iota
	ClientAuth
)

// LeafSpec describes one leaf certificate.
type LeafSpec struct {
	// Name is the file stem under the directory given to EnsureLeaf.
	Name         string
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usage        Usage
}

func (s LeafSpec) extKeyUsage() []x509.ExtKeyUsage {
	var u []x509.ExtKeyUsage
	if s.Usage&ServerAuth != 0 {
		u = append(u, x509.ExtKeyUsageServerAuth)
	}
	if s.Usage&ClientAuth != 0 {
		u = append(u, x509.ExtKeyUsageClientAuth)
	}
	return u
}

// IssueLeaf signs a new key pair for spec.
func (ca *CA) IssueLeaf(spec LeafSpec, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(leafValidity())
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  spec.extKeyUsage(),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", spec.Name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// EnsureLeaf makes sure dir/spec.Name.{crt,key} hold a certificate signed by
// ca that matches spec and is not due for renewal; it issues a new one
// otherwise. It reports whether it wrote anything.
func (ca *CA) EnsureLeaf(dir string, spec LeafSpec, now time.Time) (bool, error) {
	if reason := ca.leafProblem(dir, spec, now); reason == "" {
		return false, nil
	}
	return true, ca.WriteLeaf(dir, spec, now)
}

// WriteLeaf issues a new dir/spec.Name.{crt,key}, replacing what is there.
func (ca *CA) WriteLeaf(dir string, spec LeafSpec, now time.Time) error {
	certPEM, keyPEM, err := ca.IssueLeaf(spec, now)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Key first: a crash between the two writes leaves a mismatched pair,
	// which the next EnsureLeaf detects and re-issues. A reader that
	// loads the pair in between sees a mismatch and retries (Go's
	// tls.LoadX509KeyPair fails; the apiserver and etcd keep the old pair
	// until a matching one loads).
	if err := fsutil.WriteFileAtomic(KeyPath(dir, spec.Name), keyPEM, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(CertPath(dir, spec.Name), certPEM, 0o644)
}

// leafProblem returns why the stored leaf cannot be kept, or "".
func (ca *CA) leafProblem(dir string, spec LeafSpec, now time.Time) string {
	certPEM, err := os.ReadFile(CertPath(dir, spec.Name))
	if err != nil {
		return "missing"
	}
	keyPEM, err := os.ReadFile(KeyPath(dir, spec.Name))
	if err != nil {
		return "key missing"
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return "unreadable"
	}
	key, err := ParseKey(keyPEM)
	if err != nil || !publicKeysEqual(cert.PublicKey, key.Public()) {
		return "key does not match"
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return "signed by another CA"
	}
	if now.Add(RenewMargin()).After(cert.NotAfter) {
		return "expiring"
	}
	if cert.Subject.CommonName != spec.CommonName || !sameStrings(cert.Subject.Organization, spec.Organization) {
		return "subject changed"
	}
	if !sameStrings(cert.DNSNames, spec.DNSNames) || !sameIPs(cert.IPAddresses, spec.IPs) {
		return "names changed"
	}
	if !slices.Equal(cert.ExtKeyUsage, spec.extKeyUsage()) {
		return "usage changed"
	}
	return ""
}

// Pin is "sha256:<hex>" of the certificate's SubjectPublicKeyInfo, the form
// kubeadm uses for CA pinning.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseCert decodes the first CERTIFICATE block.
func ParseCert(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// ParseKey decodes an EC, PKCS#1 or PKCS#8 private key.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM key found")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
		return s, nil
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	default:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, err1 := x509.MarshalPKIXPublicKey(a)
	eb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb)
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func sameIPs(a, b []net.IP) bool {
	as := make([]string, len(a))
	for i, ip := range a {
		as[i] = ip.String()
	}
	bs := make([]string, len(b))
	for i, ip := range b {
		bs[i] = ip.String()
	}
	return sameStrings(as, bs)
}
