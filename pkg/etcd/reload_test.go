package etcd

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

// TestReloadTakesANewEtcdCA walks a member through an etcd CA rotation's
// file changes: a bundle of old and new CA (Reload), then the member's
// certificates from the new CA and a bundle of the new CA alone (Reload).
// A client made before the rotation keeps working throughout, and in the
// end the member refuses a client certificate of the old CA.
func TestReloadTakesANewEtcdCA(t *testing.T) {
	c := newMember(t, t.TempDir())
	m, cli := runReady(t, c, "reload-test")
	dir := c.Layout().EtcdPKIDir()
	put := func(step string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "/reload", step); err != nil {
			t.Fatalf("%s: the client made before the rotation: %v", step, err)
		}
	}
	// A watch open across the restarts: Close must not wait it out
	// (etcd's request timeout, 6 s here).
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	_ = cli.Watch(wctx, "/reload")
	reload := func(step string) {
		t.Helper()
		if !m.TrustStale() {
			t.Fatalf("%s: the member does not see its trust bundle changed", step)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		if err := m.Reload(ctx); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		took := time.Since(start)
		t.Logf("%s: member restarted in %s", step, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("%s: the restart took %s: Close waited for the open watch", step, took.Round(time.Millisecond))
		}
		if m.TrustStale() {
			t.Fatalf("%s: still stale after Reload", step)
		}
	}
	if err := pki.WriteBundle(dir, pki.EtcdCA); err != nil {
		t.Fatal(err)
	}
	put("before")
	if m.TrustStale() {
		t.Fatal("stale without a change")
	}

	old, err := pki.LoadCA(dir, pki.EtcdCA)
	if err != nil {
		t.Fatal(err)
	}
	next, err := pki.NewCA("etcd-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{pki.PhaseTrust, pki.PhaseClients, pki.PhaseServe, pki.PhaseDrop} {
		if err := pki.ConvergeCA(dir, pki.EtcdCA, phase, old, next); err != nil {
			t.Fatal(err)
		}
		issueLeaves(t, c)
		if err := pki.WriteBundle(dir, pki.EtcdCA); err != nil {
			t.Fatal(err)
		}
		if phase == pki.PhaseTrust || phase == pki.PhaseDrop {
			reload(phase)
		} else if m.TrustStale() {
			t.Fatalf("%s: the bundle changed", phase)
		}
		put(phase)
	}
	serverPEM, err := os.ReadFile(pki.CertPath(dir, pki.EtcdServer))
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.ParseCert(serverPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.CheckSignatureFrom(next.Cert); err != nil {
		t.Errorf("the member's certificate after the rotation: %v", err)
	}

	// The member refuses a client certificate of the old CA, takes one of
	// the new.
	for _, k := range []struct {
		ca   *pki.CA
		want bool
	}{{old, false}, {next, true}} {
		certPEM, keyPEM, err := k.ca.IssueLeaf(pki.LeafSpec{Name: "probe", CommonName: "probe", Usage: pki.ClientAuth}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg, err := ClientTLSConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg.GetClientCertificate = nil
		tlsCfg.Certificates = []tls.Certificate{pair}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		resp, err := hc.Get(c.LocalEtcdURL() + "/health")
		got := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
		}
		if got != k.want {
			t.Errorf("client certificate of %s: accepted %v (%v), want %v", k.ca.Cert.Subject, got, err, k.want)
		}
	}
}
