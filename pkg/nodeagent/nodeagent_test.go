package nodeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return ca{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign issues a leaf for tmpl's subject and names and returns it with
// its key, PEM.
func (c ca) sign(t *testing.T, subject pkix.Name, dns []string, usage x509.ExtKeyUsage) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})...)
}

// node is a worker's files as kubeadm join and the kubelet leave them,
// under a host root.
type node struct {
	t    *testing.T
	cfg  Config
	root string
}

func newNode(t *testing.T, trust []byte, client, serving []byte) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{t: t, root: root, cfg: Config{NodeName: "w1", HostRoot: root, CADir: filepath.Join(t.TempDir()),
		KubeletKubeconfig: "/etc/kubernetes/kubelet.conf", KubeletConfig: "/var/lib/kubelet/config.yaml", Interval: time.Second}}
	n.write("/etc/kubernetes/kubelet.conf", []byte(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: `+b64(trust)+`
    server: https://10.0.0.50:6443
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    namespace: default
    user: default-auth
  name: default-context
current-context: default-context
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
`), 0o600)
	n.write("/var/lib/kubelet/config.yaml", []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n"), 0o644)
	n.write("/etc/kubernetes/pki/ca.crt", trust, 0o644)
	n.link("kubelet-client", client)
	if serving != nil {
		n.link("kubelet-server", serving)
	}
	return n
}

func b64(b []byte) string {
	return strings.TrimSpace(string(must(clientcmdEncode(b))))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (n *node) write(p string, data []byte, mode os.FileMode) {
	n.t.Helper()
	full := filepath.Join(n.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		n.t.Fatal(err)
	}
}

// link installs pair as the kubelet does: a dated file and the
// -current.pem link naming its path on the node.
func (n *node) link(prefix string, pair []byte) {
	n.t.Helper()
	name := "/var/lib/kubelet/pki/" + prefix + "-2026-01-01-00-00-00.pem"
	n.write(name, pair, 0o600)
	if err := os.Symlink(name, filepath.Join(n.root, "var/lib/kubelet/pki", prefix+"-current.pem")); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) publish(bundle, signing, serving []byte) {
	n.t.Helper()
	os.WriteFile(filepath.Join(n.cfg.CADir, bundleFile), bundle, 0o644)
	os.WriteFile(filepath.Join(n.cfg.CADir, signingCAFile), signing, 0o644)
	os.WriteFile(filepath.Join(n.cfg.CADir, servingCAFile), serving, 0o644)
}

// current reads the leaf behind the -current.pem link, resolving the
// node's path under the root.
func (n *node) current(prefix string) *x509.Certificate {
	n.t.Helper()
	target, err := os.Readlink(filepath.Join(n.root, "var/lib/kubelet/pki", prefix+"-current.pem"))
	if err != nil {
		n.t.Fatal(err)
	}
	if !strings.HasPrefix(target, "/var/lib/kubelet/pki/") {
		n.t.Fatalf("%s-current.pem links to %q, not to a path of the node", prefix, target)
	}
	leaf, err := readLeaf(filepath.Join(n.root, target))
	if err != nil {
		n.t.Fatal(err)
	}
	return leaf
}

func (n *node) kubeconfigCA() []byte {
	n.t.Helper()
	kc, err := clientcmd.LoadFromFile(filepath.Join(n.root, "etc/kubernetes/kubelet.conf"))
	if err != nil {
		n.t.Fatal(err)
	}
	return kc.Clusters["default-cluster"].CertificateAuthorityData
}

// fakeKubelet runs a process named kubelet and points procRoot at a
// process table that lists it in the agent's network namespace (and one
// in another, which must be left alone).
func fakeKubelet(t *testing.T) (mine, other *exec.Cmd) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), "kubelet")
	data, _ := os.ReadFile(sleep)
	os.WriteFile(bin, data, 0o755)
	proc := t.TempDir()
	start := func(ns string) *exec.Cmd {
		c := exec.Command(bin, "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		d := filepath.Join(proc, strconv.Itoa(c.Process.Pid))
		os.MkdirAll(filepath.Join(d, "ns"), 0o755)
		os.WriteFile(filepath.Join(d, "comm"), []byte("kubelet\n"), 0o644)
		os.Symlink(ns, filepath.Join(d, "ns/net"))
		return c
	}
	os.MkdirAll(filepath.Join(proc, "self/ns"), 0o755)
	os.Symlink("net:[1]", filepath.Join(proc, "self/ns/net"))
	mine, other = start("net:[1]"), start("net:[2]")
	old := procRoot
	procRoot = proc
	t.Cleanup(func() { procRoot = old })
	return mine, other
}

func exited(c *exec.Cmd) bool {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(2 * time.Second):
		return false
	}
}

// TestSyncFollowsARotation walks a kubelet through the phases of
// `certs rotate-ca` as the masters publish them: trust (bundle old+new),
// clients (the new CA signs), drop (new alone). The kubelet's kubeconfig
// and client CA file take each bundle, its client and serving
// certificates are re-issued by the new CA once it signs, and the
// kubelet of this node (not another's) is restarted after each change.
func TestSyncFollowsARotation(t *testing.T) {
	oldCA, newCA := newCA(t, "old"), newCA(t, "new")
	nodeSubject := pkix.Name{CommonName: "system:node:w1", Organization: []string{"system:nodes"}}
	n := newNode(t, oldCA.pem, oldCA.sign(t, nodeSubject, nil, x509.ExtKeyUsageClientAuth),
		oldCA.sign(t, nodeSubject, []string{"w1"}, x509.ExtKeyUsageServerAuth))
	var asked []string
	requestCert = func(ctx context.Context, cs kubernetes.Interface, tmpl *x509.CertificateRequest, signer string, usages []certificatesv1.KeyUsage, signingCA []byte) ([]byte, error) {
		asked = append(asked, signer)
		if tmpl.Subject.CommonName != "system:node:w1" {
			t.Errorf("CSR for %q, want system:node:w1", tmpl.Subject.CommonName)
		}
		usage := x509.ExtKeyUsageClientAuth
		if signer == certificatesv1.KubeletServingSignerName {
			usage = x509.ExtKeyUsageServerAuth
			if strings.Join(tmpl.DNSNames, ",") != "w1" {
				t.Errorf("serving CSR names %v, want the current certificate's [w1]", tmpl.DNSNames)
			}
		}
		return newCA.sign(t, tmpl.Subject, tmpl.DNSNames, usage), nil
	}
	t.Cleanup(func() { requestCert = request })
	ctx := context.Background()

	// Nothing published yet: an error, nothing touched.
	if _, err := Sync(ctx, n.cfg); err == nil || !strings.Contains(err.Error(), "not published yet") {
		t.Fatalf("Sync before publication: %v, want 'not published yet'", err)
	}
	// Steady state: nothing to do, no restart, also when the kubelet's
	// files hold the same CA laid out otherwise.
	n.publish(oldCA.pem, oldCA.pem, oldCA.pem)
	n.write("/etc/kubernetes/pki/ca.crt", append([]byte("# the cluster CA\n"), oldCA.pem...), 0o644)
	mine, other := fakeKubelet(t)
	if r, err := Sync(ctx, n.cfg); err != nil || r.changed() {
		t.Fatalf("Sync in step: %+v, %v; want no change", r, err)
	}

	// trust
	bundle := append(append([]byte{}, oldCA.pem...), newCA.pem...)
	n.publish(bundle, oldCA.pem, oldCA.pem)
	r, err := Sync(ctx, n.cfg)
	if err != nil || !r.Trust || r.ClientCert || r.ServingCert || len(r.Restarted) != 1 || r.Restarted[0] != mine.Process.Pid {
		t.Fatalf("phase trust: %+v, %v; want the trust changed and kubelet %d restarted", r, err, mine.Process.Pid)
	}
	if string(n.kubeconfigCA()) != string(bundle) {
		t.Fatal("phase trust: the kubeconfig does not hold the bundle")
	}
	if data, _ := os.ReadFile(filepath.Join(n.root, "etc/kubernetes/pki/ca.crt")); string(data) != string(bundle) {
		t.Fatal("phase trust: the client CA file does not hold the bundle")
	}
	if !exited(mine) {
		t.Fatal("phase trust: this node's kubelet was not signalled")
	}
	if exited(other) {
		t.Fatal("the kubelet of another network namespace was signalled")
	}
	if len(asked) != 0 {
		t.Fatalf("phase trust asked for certificates %v; the old CA still signs", asked)
	}

	// clients: a new client certificate; the serving one waits for
	// phase serve.
	mine, _ = fakeKubelet(t)
	n.publish(bundle, newCA.pem, oldCA.pem)
	r, err = Sync(ctx, n.cfg)
	if err != nil || r.Trust || !r.ClientCert || r.ServingCert || len(r.Restarted) != 1 {
		t.Fatalf("phase clients: %+v, %v; want a new client certificate (only) and a restart", r, err)
	}
	if leaf := n.current("kubelet-client"); !verifies(leaf, newCA.pem) {
		t.Fatalf("phase clients: kubelet-client-current.pem is issued by %q, want the new CA", leaf.Issuer.CommonName)
	}
	if leaf := n.current("kubelet-server"); !verifies(leaf, oldCA.pem) {
		t.Fatalf("phase clients: the serving certificate moved before phase serve")
	}
	if !exited(mine) {
		t.Fatal("phase clients: the kubelet was not signalled")
	}

	// serve
	mine, _ = fakeKubelet(t)
	n.publish(bundle, newCA.pem, newCA.pem)
	r, err = Sync(ctx, n.cfg)
	if err != nil || r.Trust || r.ClientCert || !r.ServingCert || len(r.Restarted) != 1 {
		t.Fatalf("phase serve: %+v, %v; want a new serving certificate and a restart", r, err)
	}
	if leaf := n.current("kubelet-server"); !verifies(leaf, newCA.pem) {
		t.Fatalf("phase serve: kubelet-server-current.pem is issued by %q, want the new CA", leaf.Issuer.CommonName)
	}
	if !exited(mine) {
		t.Fatal("phase serve: the kubelet was not signalled")
	}
	// Again: in step, nothing asked, no restart.
	asked = nil
	if r, err := Sync(ctx, n.cfg); err != nil || r.changed() || len(asked) != 0 {
		t.Fatalf("Sync after phase clients: %+v, %v, asked %v; want nothing", r, err, asked)
	}

	// drop
	mine, _ = fakeKubelet(t)
	n.publish(newCA.pem, newCA.pem, newCA.pem)
	if r, err := Sync(ctx, n.cfg); err != nil || !r.Trust || r.ClientCert || len(r.Restarted) != 1 {
		t.Fatalf("phase drop: %+v, %v", r, err)
	}
	if string(n.kubeconfigCA()) != string(newCA.pem) {
		t.Fatal("phase drop: the kubeconfig does not hold the new CA alone")
	}
	if !exited(mine) {
		t.Fatal("phase drop: the kubelet was not signalled")
	}
}

// TestBadPublicationChangesNothing: a bundle without certificates, or a
// signing CA the bundle lacks, leaves the node's files as they are.
func TestBadPublicationChangesNothing(t *testing.T) {
	oldCA, newCA := newCA(t, "old"), newCA(t, "new")
	n := newNode(t, oldCA.pem, oldCA.sign(t, pkix.Name{CommonName: "system:node:w1"}, nil, x509.ExtKeyUsageClientAuth), nil)
	before, _ := os.ReadFile(filepath.Join(n.root, "etc/kubernetes/kubelet.conf"))
	for name, pub := range map[string][2][]byte{
		"garbage bundle":        {[]byte("not PEM"), oldCA.pem},
		"signing CA not in it":  {oldCA.pem, newCA.pem},
		"empty signing CA file": {oldCA.pem, nil},
	} {
		n.publish(pub[0], pub[1], pub[1])
		if _, err := Sync(context.Background(), n.cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
		after, _ := os.ReadFile(filepath.Join(n.root, "etc/kubernetes/kubelet.conf"))
		if string(after) != string(before) {
			t.Fatalf("%s: the kubeconfig changed", name)
		}
	}
}

func TestImageTag(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                 "v1.2.3",
		"0.0.0~git4abe6b0":       "0.0.0-git4abe6b0",
		"v1.0.0+dirty":           "v1.0.0-dirty",
		"dev":                    "dev",
		"~x":                     "v-x",
		strings.Repeat("a", 200): strings.Repeat("a", 128),
	} {
		if got := ImageTag(in); got != want {
			t.Errorf("ImageTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func clientcmdEncode(b []byte) ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(b)), nil
}
