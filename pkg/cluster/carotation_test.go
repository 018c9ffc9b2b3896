package cluster

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

func TestNextPhase(t *testing.T) {
	got := []string{}
	for p := pki.PhaseTrust; p != ""; p = nextPhase(p) {
		got = append(got, p)
	}
	if strings.Join(got, ",") != "trust,clients,serve,drop" {
		t.Fatalf("phases %v", got)
	}
	if nextPhase("bogus") != "" {
		t.Error("an unknown phase has a successor")
	}
}

// TestServeAt: the window counts from phase clients, and never less than
// client-go's reload period, so that no in-process client still holds an
// old certificate or an old bundle when the serving certificates move.
func TestServeAt(t *testing.T) {
	at := time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		window time.Duration
		want   time.Duration
	}{{20 * time.Second, clientRefresh}, {24 * time.Hour, 24 * time.Hour}} {
		r := &caRotation{WindowSeconds: c.window.Seconds(), TrustedAt: at.Add(-time.Hour), ClientsAt: at}
		if got := r.serveAt().Sub(at); got != c.want {
			t.Errorf("window %s: serve %s after phase clients, want %s", c.window, got, c.want)
		}
	}
}

func TestNewCARotation(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	c := &cfg
	if err := pki.CreateClusterSecrets(c, time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err := newCARotation(c, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Phase != pki.PhaseTrust || r.window() != time.Hour || r.ID == "" {
		t.Errorf("record %+v", r)
	}
	dir := c.Layout().PKIDir()
	if len(r.Old) != 3 || len(r.New) != 3 {
		t.Errorf("the record holds %d old and %d new CAs, want cluster, front-proxy and etcd", len(r.Old), len(r.New))
	}
	for _, k := range caKinds {
		old, err := pki.ParseCAFiles(r.Old[k.kind])
		if err != nil {
			t.Fatal(err)
		}
		cur, err := pki.LoadCA(k.dir(c), k.name)
		if err != nil {
			t.Fatal(err)
		}
		if !old.Cert.Equal(cur.Cert) {
			t.Errorf("%s: the recorded old CA is not this master's", k.kind)
		}
		next, err := pki.ParseCAFiles(r.New[k.kind])
		if err != nil {
			t.Fatal(err)
		}
		if next.Cert.Equal(cur.Cert) || next.Cert.Subject.CommonName != k.cn {
			t.Errorf("%s: new CA %s", k.kind, next.Cert.Subject)
		}
	}
	// Files of a rotation but no record: refused rather than guessed.
	if err := os.WriteFile(filepath.Join(dir, "ca-next.crt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newCARotation(c, time.Hour, time.Now()); err == nil || !strings.Contains(err.Error(), "left behind") {
		t.Errorf("leftover ca-next.crt: %v", err)
	}
}

// TestClusterCAClientReadsTheBundleOfNow: the VIP health check keeps one
// client for the master's life; after a CA rotation's bundle changes, its
// next connection must verify against the new bundle.
func TestClusterCAClientReadsTheBundleOfNow(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	c := &cfg
	dir := c.Layout().PKIDir()
	oldCA, err := pki.NewCA("kubernetes", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := pki.NewCA("kubernetes", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := oldCA.Write(dir, pki.ClusterCA); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteBundle(dir, pki.ClusterCA); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := newCA.IssueLeaf(pki.LeafSpec{Name: "srv", CommonName: "srv", DNSNames: []string{"localhost"}, Usage: pki.ServerAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)

	client, err := clusterCAClient(c, 2*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get(url); err == nil {
		t.Fatal("a server of a CA outside the bundle was trusted")
	}
	if err := pki.ConvergeCA(dir, pki.ClusterCA, pki.PhaseTrust, oldCA, newCA); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteBundle(dir, pki.ClusterCA); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("after the bundle took the new CA in: %v", err)
	}
	resp.Body.Close()
}
