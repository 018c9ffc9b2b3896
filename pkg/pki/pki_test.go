package pki

import (
	"crypto/x509"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c := config.Default()
	c.DataDir = t.TempDir()
	c.Name = "m1"
	c.AdvertiseAddress = "192.0.2.10"
	c.APIServerSANs = []string{"api.example.test", "198.51.100.7"}
	// The VIP is a SAN of the apiserver and join service, never of etcd.
	c.VIP = "192.0.2.50"
	return &c
}

func newTestPKI(t *testing.T, now time.Time) (*config.Config, *ClusterCAs) {
	t.Helper()
	c := testConfig(t)
	if err := CreateClusterSecrets(c, now); err != nil {
		t.Fatalf("CreateClusterSecrets: %v", err)
	}
	cas, err := LoadClusterCAs(c)
	if err != nil {
		t.Fatalf("LoadClusterCAs: %v", err)
	}
	n, err := EnsureLeaves(c, cas, now)
	if err != nil {
		t.Fatalf("EnsureLeaves: %v", err)
	}
	if n != 12 {
		t.Fatalf("EnsureLeaves wrote %d certificates on an empty directory, want 12", n)
	}
	return c, cas
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCert(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

func TestCA(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca, err := NewCA("kubernetes", now)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Error("CA certificate is not marked as a CA")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if got := c.NotAfter.Sub(now); got != CAValidity {
		t.Errorf("CA validity %s, want %s", got, CAValidity)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
}

func TestLoadOrCreateCARefusesHalfPair(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, created, err := LoadOrCreateCA(dir, "ca", "x", now); err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	if _, created, err := LoadOrCreateCA(dir, "ca", "x", now); err != nil || created {
		t.Fatalf("second call must load: created=%v err=%v", created, err)
	}
	os.Remove(KeyPath(dir, "ca"))
	if _, _, err := LoadOrCreateCA(dir, "ca", "x", now); err == nil {
		t.Fatal("a CA certificate without its key was accepted or replaced")
	}
}

func TestLeafCertificates(t *testing.T) {
	now := time.Now()
	c, cas := newTestPKI(t, now)
	p := c.Layout().PKIDir()

	type want struct {
		path    string
		ca      *CA
		usages  []x509.ExtKeyUsage
		cn      string
		org     []string
		dns     []string
		ips     []string
		noExtra bool
	}
	etcdDir := c.Layout().EtcdPKIDir()
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	cases := []want{
		{
			path: CertPath(p, APIServer), ca: cas.Cluster, usages: server, cn: "kube-apiserver",
			dns: []string{"m1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "api.example.test"},
			ips: []string{"192.0.2.10", "10.96.0.1", "127.0.0.1", "::1", "192.0.2.50", "198.51.100.7"}, noExtra: true,
		},
		{path: CertPath(p, APIServerKubeletClient), ca: cas.Cluster, usages: client, cn: "kube-apiserver-kubelet-client", org: []string{"system:masters"}},
		{path: CertPath(p, APIServerEtcdClient), ca: cas.Etcd, usages: client, cn: "kube-apiserver-etcd-client"},
		{path: CertPath(p, FrontProxyClient), ca: cas.FrontProxy, usages: client, cn: "front-proxy-client"},
		{path: CertPath(etcdDir, EtcdServer), ca: cas.Etcd, usages: both, cn: "m1", dns: []string{"m1", "localhost"}, ips: []string{"192.0.2.10", "127.0.0.1", "::1"}, noExtra: true},
		{path: CertPath(etcdDir, EtcdPeer), ca: cas.Etcd, usages: both, cn: "m1", dns: []string{"m1", "localhost"}, ips: []string{"192.0.2.10", "127.0.0.1", "::1"}, noExtra: true},
		{path: CertPath(p, ControllerManager), ca: cas.Cluster, usages: client, cn: "system:kube-controller-manager"},
		{path: CertPath(p, Scheduler), ca: cas.Cluster, usages: client, cn: "system:kube-scheduler"},
		{path: CertPath(p, ControllerManagerTLS), ca: cas.Cluster, usages: server, cn: "kube-controller-manager", dns: []string{"localhost"}, ips: []string{"127.0.0.1", "::1"}},
		{path: CertPath(p, SchedulerTLS), ca: cas.Cluster, usages: server, cn: "kube-scheduler", dns: []string{"localhost"}, ips: []string{"127.0.0.1", "::1"}},
		{path: CertPath(p, Admin), ca: cas.Cluster, usages: client, cn: "kubernetes-admin", org: []string{"system:masters"}},
		{path: CertPath(p, JoinService), ca: cas.Cluster, usages: server, cn: "k8s-master-join", dns: []string{"m1", "localhost"}, ips: []string{"192.0.2.10", "127.0.0.1", "::1", "192.0.2.50"}, noExtra: true},
	}
	for _, w := range cases {
		t.Run(filepath.Base(w.path), func(t *testing.T) {
			cert := loadCert(t, w.path)
			if err := cert.CheckSignatureFrom(w.ca.Cert); err != nil {
				t.Errorf("not signed by the expected CA: %v", err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(w.ca.Cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: w.usages, CurrentTime: now}); err != nil {
				t.Errorf("does not verify for %v: %v", w.usages, err)
			}
			if !slices.Equal(cert.ExtKeyUsage, w.usages) {
				t.Errorf("ext key usages %v, want %v", cert.ExtKeyUsage, w.usages)
			}
			if cert.IsCA {
				t.Error("leaf certificate is marked as a CA")
			}
			if cert.Subject.CommonName != w.cn {
				t.Errorf("CN %q, want %q", cert.Subject.CommonName, w.cn)
			}
			if !slices.Equal(cert.Subject.Organization, w.org) {
				t.Errorf("O %v, want %v", cert.Subject.Organization, w.org)
			}
			for _, d := range w.dns {
				if !slices.Contains(cert.DNSNames, d) {
					t.Errorf("DNS SAN %q missing from %v", d, cert.DNSNames)
				}
				if err := cert.VerifyHostname(d); err != nil && w.usages[0] == x509.ExtKeyUsageServerAuth {
					t.Errorf("VerifyHostname(%q): %v", d, err)
				}
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			for _, ip := range w.ips {
				if !slices.Contains(ips, ip) {
					t.Errorf("IP SAN %s missing from %v", ip, ips)
				}
			}
			if w.noExtra && len(ips) != len(w.ips) {
				t.Errorf("IP SANs %v, want exactly %v", ips, w.ips)
			}
			if life := cert.NotAfter.Sub(now); life < LeafValidity-time.Minute || life > LeafValidity+time.Minute {
				t.Errorf("validity %s, want %s", life, LeafValidity)
			}
			if !cert.NotBefore.Before(now) {
				t.Errorf("NotBefore %s is not before issue time %s", cert.NotBefore, now)
			}
			keyPath := strings.TrimSuffix(w.path, ".crt") + ".key"
			assertMode(t, keyPath, 0o600)
			assertMode(t, w.path, 0o644)
		})
	}
	for _, ca := range []string{CertPath(p, ClusterCA), CertPath(p, FrontProxyCA), CertPath(etcdDir, EtcdCA)} {
		assertMode(t, strings.TrimSuffix(ca, ".crt")+".key", 0o600)
	}
	assertMode(t, filepath.Join(p, SAKey), 0o600)
	assertMode(t, c.Layout().EncryptionConfig(), 0o600)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s has mode %o, want %o", path, got, want)
	}
}

func TestEnsureLeavesRenewsOnlyWhatChanged(t *testing.T) {
	now := time.Now()
	c, cas := newTestPKI(t, now)
	before := loadCert(t, CertPath(c.Layout().PKIDir(), APIServer)).SerialNumber

	if n, err := EnsureLeaves(c, cas, now.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second EnsureLeaves rewrote %d certificates (err %v), want 0", n, err)
	}
	if got := loadCert(t, CertPath(c.Layout().PKIDir(), APIServer)).SerialNumber; got.Cmp(before) != 0 {
		t.Fatal("apiserver certificate was re-issued although nothing changed")
	}

	// A new advertise address changes the apiserver and etcd member SANs only.
	c.AdvertiseAddress = "192.0.2.99"
	n, err := EnsureLeaves(c, cas, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("changing the advertise address re-issued %d certificates, want 4 (apiserver, etcd server, etcd peer, join service)", n)
	}
	cert := loadCert(t, CertPath(c.Layout().PKIDir(), APIServer))
	if !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.String() == "192.0.2.99" }) {
		t.Errorf("re-issued certificate lacks the new address: %v", cert.IPAddresses)
	}

	// Inside the renewal window everything is re-issued.
	if n, err := EnsureLeaves(c, cas, now.Add(LeafValidity-RenewBefore+time.Hour)); err != nil || n != 12 {
		t.Errorf("near expiry EnsureLeaves re-issued %d (err %v), want 12", n, err)
	}
}

func TestEnsureLeafReplacesForeignOrBrokenPair(t *testing.T) {
	now := time.Now()
	c, cas := newTestPKI(t, now)
	p := c.Layout().PKIDir()

	other, err := NewCA("someone-else", now)
	if err != nil {
		t.Fatal(err)
	}
	spec := LeafSpec{Name: Admin, CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Usage: ClientAuth}
	certPEM, keyPEM, err := other.IssueLeaf(spec, now)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(CertPath(p, Admin), certPEM, 0o644)
	os.WriteFile(KeyPath(p, Admin), keyPEM, 0o600)
	if changed, err := cas.Cluster.EnsureLeaf(p, spec, now); err != nil || !changed {
		t.Fatalf("certificate from another CA kept (changed=%v, err=%v)", changed, err)
	}
	if err := loadCert(t, CertPath(p, Admin)).CheckSignatureFrom(cas.Cluster.Cert); err != nil {
		t.Fatal("replacement is not signed by the cluster CA")
	}

	// A key that does not match its certificate (a crash between writes).
	_, strayKey, _ := cas.Cluster.IssueLeaf(spec, now)
	os.WriteFile(KeyPath(p, Admin), strayKey, 0o600)
	if changed, err := cas.Cluster.EnsureLeaf(p, spec, now); err != nil || !changed {
		t.Fatalf("mismatched pair kept (changed=%v, err=%v)", changed, err)
	}
}

func TestCreateClusterSecretsRefusesToOverwrite(t *testing.T) {
	c, _ := newTestPKI(t, time.Now())
	before, _ := os.ReadFile(KeyPath(c.Layout().PKIDir(), ClusterCA))
	if err := CreateClusterSecrets(c, time.Now()); err == nil {
		t.Fatal("CreateClusterSecrets overwrote an existing cluster")
	}
	after, _ := os.ReadFile(KeyPath(c.Layout().PKIDir(), ClusterCA))
	if string(before) != string(after) {
		t.Fatal("the cluster CA key changed")
	}
}

func TestEncryptionConfig(t *testing.T) {
	c, _ := newTestPKI(t, time.Now())
	data, err := os.ReadFile(c.Layout().EncryptionConfig())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Kind      string
		Resources []struct {
			Resources []string
			Providers []map[string]struct {
				Keys []struct{ Name, Secret string }
			}
		}
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Kind != "EncryptionConfiguration" || len(doc.Resources) != 1 || !slices.Equal(doc.Resources[0].Resources, []string{"secrets"}) {
		t.Fatalf("unexpected document: %s", data)
	}
	first := doc.Resources[0].Providers[0]["secretbox"]
	if len(first.Keys) != 1 {
		t.Fatalf("first provider is not secretbox with one key: %s", data)
	}
	key, err := base64.StdEncoding.DecodeString(first.Keys[0].Secret)
	if err != nil || len(key) != 32 {
		t.Fatalf("secretbox key is not 32 base64 bytes: %v (len %d)", err, len(key))
	}

	// A second cluster gets a different key.
	c2, _ := newTestPKI(t, time.Now())
	data2, _ := os.ReadFile(c2.Layout().EncryptionConfig())
	if string(data) == string(data2) {
		t.Fatal("two clusters got the same encryption key")
	}
}

func TestPinMatchesOpenSSL(t *testing.T) {
	// testdata/pin-ca.sha256 was computed with:
	//   openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
	cert := loadCert(t, "testdata/pin-ca.crt")
	want, err := os.ReadFile("testdata/pin-ca.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := Pin(cert); got != "sha256:"+strings.TrimSpace(string(want)) {
		t.Fatalf("Pin = %s, want sha256:%s", got, strings.TrimSpace(string(want)))
	}
}
