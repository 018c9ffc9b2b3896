package pki

import (
	"bytes"
	"crypto/x509"
	"os"
	"slices"
	"testing"
	"time"
)

func mustCA(t *testing.T, cn string) *CA {
	t.Helper()
	ca, err := NewCA(cn, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// bundleCerts parses every certificate of a bundle file.
func bundleCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := []*x509.Certificate{}
	for len(data) > 0 {
		cert, err := ParseCert(data)
		if err != nil {
			break
		}
		pool = append(pool, cert)
		i := bytes.Index(data, []byte("-----END CERTIFICATE-----"))
		data = data[i+len("-----END CERTIFICATE-----"):]
	}
	return pool
}

func TestBundleDedupsAndKeepsOrder(t *testing.T) {
	a, b := mustCA(t, "a"), mustCA(t, "b")
	got, err := Bundle(a.CertPEM, b.CertPEM, a.CertPEM, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte{}, a.CertPEM...), b.CertPEM...); !bytes.Equal(got, want) {
		t.Fatalf("bundle:\n%s\nwant a then b once each", got)
	}
	if _, err := Bundle(nil, []byte("junk")); err == nil {
		t.Fatal("a bundle of nothing was accepted")
	}
}

// TestConvergeCAPhases walks one CA through every phase (and back into the
// middle, as a master catching up would) and checks the files, the bundle
// and which CA signs serving leaves at each.
func TestConvergeCAPhases(t *testing.T) {
	dir := t.TempDir()
	old, next := mustCA(t, "kubernetes"), mustCA(t, "kubernetes")
	if err := old.Write(dir, ClusterCA); err != nil {
		t.Fatal(err)
	}
	type want struct {
		signing, serving *CA
		bundle           []*CA
		files, absent    []string
	}
	cases := []struct {
		phase string
		want  want
	}{
		{PhaseTrust, want{old, old, []*CA{old, next}, []string{"ca-next.crt", "ca-next.key"}, []string{"ca-old.crt", "ca-old.key"}}},
		{PhaseClients, want{next, old, []*CA{next, old}, []string{"ca-old.crt", "ca-old.key"}, []string{"ca-next.crt", "ca-next.key"}}},
		{PhaseServe, want{next, next, []*CA{next, old}, []string{"ca-old.crt"}, []string{"ca-old.key", "ca-next.crt"}}},
		{PhaseDrop, want{next, next, []*CA{next}, nil, []string{"ca-old.crt", "ca-old.key", "ca-next.crt", "ca-next.key"}}},
	}
	check := func(phase string, w want) {
		t.Helper()
		if err := ConvergeCA(dir, ClusterCA, phase, old, next); err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		if err := WriteBundle(dir, ClusterCA); err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		signing, err := LoadCA(dir, ClusterCA)
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		if !signing.Cert.Equal(w.signing.Cert) {
			t.Errorf("%s: ca.crt is the wrong CA", phase)
		}
		serving, err := LoadServingCA(dir, ClusterCA, signing)
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		if !serving.Cert.Equal(w.serving.Cert) {
			t.Errorf("%s: serving leaves would be signed by the wrong CA", phase)
		}
		if ServingCAPath(dir, ClusterCA) != CertPath(dir, map[bool]string{true: OldName(ClusterCA), false: ClusterCA}[w.serving != w.signing]) {
			t.Errorf("%s: ServingCAPath %s", phase, ServingCAPath(dir, ClusterCA))
		}
		got := bundleCerts(t, BundlePath(dir, ClusterCA))
		if len(got) != len(w.bundle) {
			t.Fatalf("%s: bundle has %d CAs, want %d", phase, len(got), len(w.bundle))
		}
		for i := range got {
			if !got[i].Equal(w.bundle[i].Cert) {
				t.Errorf("%s: bundle entry %d is the wrong CA", phase, i)
			}
		}
		// A pin recorded for any CA of the bundle is still found (a
		// master killed between recording the pin and moving its files).
		pins := CAPins(dir, ClusterCA)
		for _, ca := range w.bundle {
			if !slices.Contains(pins, Pin(ca.Cert)) {
				t.Errorf("%s: CAPins %v lacks a CA of the bundle", phase, pins)
			}
		}
		if len(pins) != len(w.bundle) {
			t.Errorf("%s: CAPins %v, want %d", phase, pins, len(w.bundle))
		}
		for _, f := range w.files {
			if _, err := os.Stat(dir + "/" + f); err != nil {
				t.Errorf("%s: %s missing", phase, f)
			}
		}
		for _, f := range w.absent {
			if _, err := os.Stat(dir + "/" + f); err == nil {
				t.Errorf("%s: %s still there", phase, f)
			}
		}
	}
	for _, c := range cases {
		check(c.phase, c.want)
		check(c.phase, c.want) // idempotent
	}
	// A master that was down through trust and clients catches up at
	// serve from its files of before the rotation.
	dir2 := t.TempDir()
	if err := old.Write(dir2, ClusterCA); err != nil {
		t.Fatal(err)
	}
	dir = dir2
	check(PhaseServe, cases[2].want)
	if err := ConvergeCA(dir, ClusterCA, "bogus", old, next); err == nil {
		t.Error("an unknown phase was accepted")
	}
}

// TestWriteBundleUnchangedIsNotRewritten: the apiserver reloads its CA
// files on change; an hourly renewal check must not touch them.
func TestWriteBundleUnchangedIsNotRewritten(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "kubernetes")
	if err := ca.Write(dir, ClusterCA); err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, ClusterCA); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(BundlePath(dir, ClusterCA), past, past); err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, ClusterCA); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(BundlePath(dir, ClusterCA))
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime().Equal(past) {
		t.Error("an unchanged bundle was rewritten")
	}
	if TrustFile(dir, ClusterCA) != BundlePath(dir, ClusterCA) || TrustFile(t.TempDir(), ClusterCA) == BundlePath(dir, ClusterCA) {
		t.Error("TrustFile does not prefer the bundle, or falls back wrongly")
	}
}

// TestLeavesDuringRotation: in phase clients the client leaves come from
// the new CA and the serving leaves from the old one; in phase serve every
// leaf comes from the new CA.
func TestLeavesDuringRotation(t *testing.T) {
	c := testConfig(t)
	if err := CreateClusterSecrets(c, time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := c.Layout().PKIDir()
	old, err := LoadCA(dir, ClusterCA)
	if err != nil {
		t.Fatal(err)
	}
	next := mustCA(t, "kubernetes")
	issuer := func(name string) *x509.Certificate {
		data, err := os.ReadFile(CertPath(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ParseCert(data)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	signedBy := func(name string, ca *CA) bool { return issuer(name).CheckSignatureFrom(ca.Cert) == nil }
	for _, phase := range []string{PhaseClients, PhaseServe} {
		if err := ConvergeCA(dir, ClusterCA, phase, old, next); err != nil {
			t.Fatal(err)
		}
		cas, err := LoadClusterCAs(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := EnsureLeaves(c, cas, time.Now()); err != nil {
			t.Fatal(err)
		}
		servingCA := old
		if phase == PhaseServe {
			servingCA = next
		}
		for _, n := range []string{Admin, ControllerManager, Scheduler} {
			if !signedBy(n, next) {
				t.Errorf("%s: %s not signed by the new CA", phase, n)
			}
		}
		for _, n := range []string{APIServer, APIServerKubeletClient, JoinService, ControllerManagerTLS, SchedulerTLS} {
			if !signedBy(n, servingCA) {
				t.Errorf("%s: %s not signed by the %s CA", phase, n, map[bool]string{true: "new", false: "old"}[phase == PhaseServe])
			}
		}
	}
}
