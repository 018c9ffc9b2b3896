package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

// CA rotation (k8s-master certs rotate-ca) keeps up to three CAs of one
// kind on a master at once, as files next to the CA:
//
//	NAME.crt/.key       the CA that signs this master's client leaves and
//	                    kubelet CSRs (the old one until the new one takes over)
//	NAME-next.crt/.key  the new CA, trusted but not signing yet (phase trust)
//	NAME-old.crt/.key   the old CA after the new one took over (phase
//	                    clients): it still signs the leaves that clients
//	                    holding only the old CA verify (serving certificates,
//	                    the apiserver's kubelet client); phase serve removes
//	                    its key (those leaves move to the new CA), phase drop
//	                    its certificate
//	NAME-bundle.crt     every CA of the kind that is trusted now: what the
//	                    apiserver, controller-manager, scheduler and the
//	                    kubeconfigs verify against
//
// Cross-signing the new CA with the old one cannot carry clients that hold
// only the old CA: the CAs made at init have a path length of zero, so Go
// (kubectl, kubelets) refuses any chain with an intermediate under them.

// Rotation phases, in order. Each master converges its files to the phase
// recorded in etcd (pkg/cluster).
const (
	// PhaseTrust: the new CA is trusted next to the old one everywhere.
	PhaseTrust = "trust"
	// PhaseClients: the new CA signs kubelet CSRs and the client leaves
	// only the masters verify; the window runs in this phase.
	PhaseClients = "clients"
	// PhaseServe: the leaves clients verify are re-issued from the new CA.
	PhaseServe = "serve"
	// PhaseDrop: the old CA is trusted nowhere.
	PhaseDrop = "drop"
)

// Phases lists the phases in order.
var Phases = []string{PhaseTrust, PhaseClients, PhaseServe, PhaseDrop}

// NextName, OldName name the staged new and the retired old CA of name.
func NextName(name string) string { return name + "-next" }
func OldName(name string) string  { return name + "-old" }

// BundlePath is the trust bundle of the CA called name under dir.
func BundlePath(dir, name string) string { return filepath.Join(dir, name+"-bundle.crt") }

// TrustFile is what to verify the CA called name against: the bundle, or
// the CA itself in a data directory written before bundles existed.
func TrustFile(dir, name string) string {
	if _, err := os.Stat(BundlePath(dir, name)); err == nil {
		return BundlePath(dir, name)
	}
	return CertPath(dir, name)
}

// Bundle concatenates certificates (PEM, one or more each), dropping
// duplicates and non-certificate blocks, in the order given.
func Bundle(pems ...[]byte) ([]byte, error) {
	var out bytes.Buffer
	seen := map[string]bool{}
	for _, data := range pems {
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, fmt.Errorf("bundle: %w", err)
			}
			if seen[string(block.Bytes)] {
				continue
			}
			seen[string(block.Bytes)] = true
			if err := pem.Encode(&out, block); err != nil {
				return nil, err
			}
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("bundle: no certificate")
	}
	return out.Bytes(), nil
}

// WriteBundle writes NAME-bundle.crt under dir from the CA, its staged
// successor and its retired predecessor, whichever exist; it rewrites
// nothing when the bundle is unchanged (the apiserver reloads on change).
func WriteBundle(dir, name string) error {
	var parts [][]byte
	for _, n := range []string{name, NextName(name), OldName(name)} {
		data, err := os.ReadFile(CertPath(dir, n))
		if errors.Is(err, os.ErrNotExist) && n != name {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s for the trust bundle: %w", CertPath(dir, n), err)
		}
		parts = append(parts, data)
	}
	b, err := Bundle(parts...)
	if err != nil {
		return fmt.Errorf("%s: %w", BundlePath(dir, name), err)
	}
	if old, err := os.ReadFile(BundlePath(dir, name)); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return fsutil.WriteFileAtomic(BundlePath(dir, name), b, 0o644)
}

// CAFiles is a CA's certificate and key as PEM, as the rotation records
// them in etcd.
type CAFiles struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// Files returns the CA's PEM files.
func (ca *CA) Files() (CAFiles, error) {
	key, err := encodeKey(ca.Key)
	if err != nil {
		return CAFiles{}, err
	}
	return CAFiles{Cert: ca.CertPEM, Key: key}, nil
}

// ParseCAFiles checks and loads a recorded CA.
func ParseCAFiles(f CAFiles) (*CA, error) {
	cert, err := ParseCert(f.Cert)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(f.Key)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("not a CA certificate with its key")
	}
	return &CA{Cert: cert, Key: key, CertPEM: f.Cert}, nil
}

// ConvergeCA puts the files of the CA called name under dir in the state
// of phase: old is the CA being replaced, next its successor. It is
// idempotent and may skip phases (a master that was down catches up). It
// does not touch the bundle: the caller re-issues the leaves first, then
// calls WriteBundle, so that the bundle names every CA a leaf in use is
// signed by.
func ConvergeCA(dir, name, phase string, old, next *CA) error {
	type file struct {
		ca      *CA
		withKey bool
	}
	var want map[string]file // file stem -> CA; a nil CA: the stem is removed
	switch phase {
	case PhaseTrust:
		want = map[string]file{name: {old, true}, NextName(name): {next, true}, OldName(name): {}}
	case PhaseClients:
		want = map[string]file{name: {next, true}, NextName(name): {}, OldName(name): {old, true}}
	case PhaseServe:
		want = map[string]file{name: {next, true}, NextName(name): {}, OldName(name): {old, false}}
	case PhaseDrop:
		want = map[string]file{name: {next, true}, NextName(name): {}, OldName(name): {}}
	default:
		return fmt.Errorf("unknown rotation phase %q", phase)
	}
	// Written before removed: the old CA is kept as NAME-old before NAME
	// becomes the new one.
	for _, stem := range []string{NextName(name), OldName(name), name} {
		f := want[stem]
		if f.ca == nil {
			continue
		}
		certPEM, err := os.ReadFile(CertPath(dir, stem))
		if err != nil || !bytes.Equal(certPEM, f.ca.CertPEM) {
			if err := f.ca.Write(dir, stem); err != nil {
				return err
			}
		} else if _, err := os.Stat(KeyPath(dir, stem)); f.withKey && err != nil {
			if err := f.ca.Write(dir, stem); err != nil {
				return err
			}
		}
		if !f.withKey {
			if err := os.Remove(KeyPath(dir, stem)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	for stem, f := range want {
		if f.ca != nil {
			continue
		}
		for _, p := range []string{CertPath(dir, stem), KeyPath(dir, stem)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// ServingCAPath is the certificate file of the CA LoadServingCA loads.
func ServingCAPath(dir, name string) string {
	if _, err := os.Stat(KeyPath(dir, OldName(name))); err == nil {
		return CertPath(dir, OldName(name))
	}
	return CertPath(dir, name)
}

// LoadServingCA is the CA that signs the leaves clients holding only the
// old CA must verify: NAME-old while it still has its key (phase clients),
// else NAME itself.
func LoadServingCA(dir, name string, current *CA) (*CA, error) {
	if _, err := os.Stat(KeyPath(dir, OldName(name))); errors.Is(err, os.ErrNotExist) {
		return current, nil
	}
	return LoadCA(dir, OldName(name))
}

// CAPins are the pins of the CA called name under dir and of its staged
// successor and retired predecessor, whichever exist: during and right
// after a rotation the pin a master recorded may be any of them.
func CAPins(dir, name string) []string {
	var pins []string
	for _, stem := range []string{name, NextName(name), OldName(name)} {
		data, err := os.ReadFile(CertPath(dir, stem))
		if err != nil {
			continue
		}
		if cert, err := ParseCert(data); err == nil {
			pins = append(pins, Pin(cert))
		}
	}
	return pins
}
