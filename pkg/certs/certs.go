// Package certs takes stock of a master's certificates: what each one is,
// who issued it and when it expires.
package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Cert is one certificate file.
type Cert struct {
	// Name is the file's path relative to the PKI directory
	// (apiserver.crt, etcd/peer.crt).
	Name      string    `json:"name"`
	CA        bool      `json:"ca"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	DaysLeft  int       `json:"daysLeft"`
	// Renewal says who renews it.
	Renewal string `json:"renewal"`
}

// WarnWithin is how close to expiry a certificate makes `status` warn.
const WarnWithin = 30 * 24 * time.Hour

// Check reads every certificate under pkiDir, soonest expiry first.
func Check(pkiDir string, now time.Time) ([]Cert, error) {
	var out []Cert
	err := filepath.WalkDir(pkiDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// A trust bundle repeats CAs listed on their own.
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".crt") || strings.HasSuffix(d.Name(), "-bundle.crt") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		cert, err := pki.ParseCert(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, _ := filepath.Rel(pkiDir, path)
		out = append(out, describe(rel, cert, now))
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no certificates in %s: %w", pkiDir, err)
	}
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out, nil
}

func describe(name string, cert *x509.Certificate, now time.Time) Cert {
	c := Cert{
		Name: name, CA: cert.IsCA, Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		DaysLeft: int(math.Floor(cert.NotAfter.Sub(now).Hours() / 24)),
	}
	if c.CA {
		c.Renewal = "not renewed automatically (a CA): k8s-master certs rotate-ca replaces the cluster and front-proxy CAs"
	} else {
		c.Renewal = fmt.Sprintf("renewed at master start within %d days of expiry", int(pki.RenewBefore.Hours()/24))
	}
	return c
}

// Warnings names the certificates that expire within WarnWithin of now, or
// have expired.
func Warnings(certs []Cert, now time.Time) []string {
	var out []string
	for _, c := range certs {
		switch left := c.NotAfter.Sub(now); {
		case left <= 0:
			out = append(out, fmt.Sprintf("certificate %s expired on %s", c.Name, c.NotAfter.Local().Format(time.RFC3339)))
		case left <= WarnWithin:
			hint := "restart this master (k8s-master start) to renew it"
			if c.CA {
				hint = "replace it with k8s-master certs rotate-ca (the cluster and front-proxy CAs; the etcd CA cannot be replaced in place yet)"
			}
			out = append(out, fmt.Sprintf("certificate %s expires in %d days (%s); %s", c.Name, c.DaysLeft, c.NotAfter.Local().Format(time.RFC3339), hint))
		}
	}
	return out
}
