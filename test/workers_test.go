package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certcsr "k8s.io/client-go/util/certificate/csr"
	"k8s.io/cluster-bootstrap/token/jws"
)

var joinLineRE = regexp.MustCompile(`^kubeadm join (\S+) --token ([a-z0-9]{6})\.([a-z0-9]{16}) --discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})$`)

// revokeWorkerToken makes a worker token, checks that it works, and
// revokes it; checkWorkers checks later that it is refused. Early, since
// the apiserver caches a token's success for 10 s.
func revokeWorkerToken(t *testing.T, dir string, port int) string {
	out, _, _ := runCLI(t, "token", "create", "--worker", "--data-dir", dir)
	m := joinLineRE.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		t.Fatalf("token create --worker printed %q", out)
	}
	tok := m[2] + "." + m[3]
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "pki", "ca.crt")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "kubelet-config", metav1.GetOptions{}); err != nil {
		t.Errorf("a fresh worker token: %v", err)
	}
	if out, stderr, code := runCLI(t, "token", "revoke", m[2], "--data-dir", dir); code != 0 || !strings.Contains(out, "worker token "+m[2]+" revoked") {
		t.Errorf("token revoke %s: %d %q %s", m[2], code, out, stderr)
	}
	return tok
}

// checkWorkers plays a kubelet joining with a worker token, with client-go
// where a kubelet would be: what the control plane gives it, and what it
// refuses. revoked is revokeWorkerToken's.
func checkWorkers(t *testing.T, dir string, port int, revoked string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	caFile := filepath.Join(dir, "pki", "ca.crt")
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	client := func(token string, certPEM, keyPEM []byte) *kubernetes.Clientset {
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: caFile, CertData: certPEM, KeyData: keyPEM}})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}

	out, stderr, code := runCLI(t, "token", "create", "--worker", "--ttl", "1h", "--description", "itest worker", "--data-dir", dir)
	m := joinLineRE.FindStringSubmatch(strings.TrimSpace(out))
	if code != 0 || m == nil {
		t.Fatalf("token create --worker: exit %d, printed %q %s", code, out, stderr)
	}
	endpoint, id, secret, hash := m[1], m[2], m[3], m[4]
	if endpoint != fmt.Sprintf("127.0.0.1:%d", port) || hash != caPin(t, caFile) {
		t.Errorf("join line names %s and %s, want 127.0.0.1:%d and the CA's pin %s", endpoint, hash, port, caPin(t, caFile))
	}
	list, _, _ := runCLI(t, "token", "list", "--data-dir", dir)
	if !regexp.MustCompile(`(?m)^worker\s+`+id+`\s+valid\s.*itest worker$`).MatchString(list) || !regexp.MustCompile(`(?m)^master\s`).MatchString(list) {
		t.Errorf("token list shows no valid worker token %s beside the master token:\n%s", id, list)
	}

	t.Run("cluster-info is public and signed; nothing else is", func(t *testing.T) {
		anon := client("", nil, nil)
		var info *corev1.ConfigMap
		eventually(t, 30*time.Second, "cluster-info signed for the new token", func() error {
			var err error
			info, err = anon.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if info.Data["jws-kubeconfig-"+id] == "" {
				return fmt.Errorf("no jws-kubeconfig-%s yet", id)
			}
			return nil
		})
		kc := info.Data["kubeconfig"]
		if !jws.DetachedTokenIsValid(info.Data["jws-kubeconfig-"+id], kc, id, secret) {
			t.Error("the signature on cluster-info does not verify with the token")
		}
		if !strings.Contains(kc, "server: "+server) || !strings.Contains(kc, "certificate-authority-data:") {
			t.Errorf("cluster-info kubeconfig:\n%s", kc)
		}
		if _, err := anon.CoreV1().ConfigMaps("kube-public").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("anonymous list of kube-public ConfigMaps: %v, want Unauthorized", err)
		}
		if _, err := anon.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubeadm-config", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("anonymous get of kubeadm-config: %v, want Unauthorized", err)
		}
	})

	// The bootstrap kubeconfig a plain kubelet would get.
	bootstrapFile := filepath.Join(t.TempDir(), "bootstrap-kubelet.conf")
	if _, stderr, code := runCLI(t, "worker", "kubeconfig", "--token", id+"."+secret, "--output", bootstrapFile, "--data-dir", dir); code != 0 {
		t.Fatalf("worker kubeconfig: exit %d %s", code, stderr)
	}
	if st, err := os.Stat(bootstrapFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap kubeconfig: %v %v, want mode 0600", st, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", bootstrapFile)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != server {
		t.Errorf("bootstrap kubeconfig server %s, want %s", rc.Host, server)
	}
	boot, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a worker token authenticates as a bootstrapper and reads what kubeadm join reads", func(t *testing.T) {
		r, err := boot.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u := r.Status.UserInfo
		if u.Username != "system:bootstrap:"+id || !slices.Contains(u.Groups, "system:bootstrappers") || !slices.Contains(u.Groups, "system:bootstrappers:kubeadm:default-node-token") {
			t.Errorf("the worker token authenticates as %+v", u)
		}
		for _, name := range []string{"kubeadm-config", "kubelet-config"} {
			if _, err := boot.CoreV1().ConfigMaps("kube-system").Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("bootstrapper reads %s: %v", name, err)
			}
		}
		if _, err := boot.CoreV1().Nodes().Get(ctx, "wk1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("bootstrapper gets a Node: %v, want NotFound (allowed, none yet)", err)
		}
		if _, err := boot.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("bootstrapper lists Secrets: %v, want Forbidden", err)
		}
	})

	// The kubelet's TLS bootstrap: a client certificate for system:node:wk1.
	certPEM, keyPEM := requestCert(t, ctx, boot, "system:node:wk1", nil, nil, certificatesv1.KubeAPIServerClientKubeletSignerName, true)
	if len(certPEM) == 0 {
		t.Fatal("no node client certificate: the remaining checks need one")
	}
	wk1 := client("", certPEM, keyPEM)

	t.Run("a node's serving certificates", func(t *testing.T) {
		if _, err := wk1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wk1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("node creates its Node: %v", err)
		}
		// A patch, not a read and an update: the controller-manager taints
		// the new Node meanwhile, and NodeRestriction refuses (403, before
		// any conflict check) an update whose stale copy drops that taint.
		addrs := []byte(`{"status":{"addresses":[{"type":"InternalIP","address":"10.250.0.21"},{"type":"Hostname","address":"wk1"}]}}`)
		_, err := wk1.CoreV1().Nodes().Patch(ctx, "wk1", types.MergePatchType, addrs, metav1.PatchOptions{}, "status")
		if err != nil {
			t.Fatalf("node posts its addresses: %v", err)
		}
		serving := certificatesv1.KubeletServingSignerName
		if c, _ := requestCert(t, ctx, wk1, "system:node:wk1", []string{"wk1"}, []string{"10.250.0.21"}, serving, true); len(c) > 0 {
			checkIssuedByCA(t, c, caFile, x509.ExtKeyUsageServerAuth)
		}
		name := requestDenied(t, ctx, wk1, "system:node:wk1", []string{"wk1"}, []string{"10.250.0.99"}, serving)
		eventually(t, 30*time.Second, "an Event for the denied CSR", func() error {
			evs, err := clientset(t, dir).CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == "CSRDenied" && strings.Contains(e.Message, "10.250.0.99") {
					return nil
				}
			}
			return fmt.Errorf("%d events, none CSRDenied naming 10.250.0.99", len(evs.Items))
		})
		// A node's CSR in another node's name: NodeRestriction refuses it
		// before any approver sees it.
		requestForbidden(t, ctx, wk1, "system:node:wk2", []string{"wk2"}, serving)
	})

	t.Run("a node renews its own client certificate, not another node's", func(t *testing.T) {
		requestForbidden(t, ctx, wk1, "system:node:wk2", nil, certificatesv1.KubeAPIServerClientKubeletSignerName)
		if c, _ := requestCert(t, ctx, wk1, "system:node:wk1", nil, nil, certificatesv1.KubeAPIServerClientKubeletSignerName, true); len(c) > 0 {
			checkIssuedByCA(t, c, caFile, x509.ExtKeyUsageClientAuth)
		}
	})

	t.Run("revoked, expired, garbage and master tokens are refused", func(t *testing.T) {
		out, stderr, code := runCLI(t, "token", "create", "--worker", "--ttl", "1s", "--data-dir", dir)
		em := joinLineRE.FindStringSubmatch(strings.TrimSpace(out))
		if code != 0 || em == nil {
			t.Fatalf("token create --worker --ttl 1s: %d %q %s", code, out, stderr)
		}
		master, err := os.ReadFile(filepath.Join(dir, "token"))
		if err != nil {
			t.Fatal(err)
		}
		// The expiry is whole seconds, at most 1 s after its creation.
		time.Sleep(1100 * time.Millisecond)
		for what, tok := range map[string]string{
			"expired": em[2] + "." + em[3],
			"garbage": "zzzzzz.0123456789abcdef",
			"junk":    "not a token at all",
			"master":  strings.TrimSpace(string(master)),
		} {
			_, err := client(tok, nil, nil).CoreV1().ConfigMaps("kube-system").Get(ctx, "kubeadm-config", metav1.GetOptions{})
			if !apierrors.IsUnauthorized(err) {
				t.Errorf("%s token: %v, want Unauthorized", what, err)
			}
		}
		eventually(t, 15*time.Second, "the revoked token refused", func() error {
			_, err := client(revoked, nil, nil).CoreV1().ConfigMaps("kube-system").Get(ctx, "kubelet-config", metav1.GetOptions{})
			if !apierrors.IsUnauthorized(err) {
				return fmt.Errorf("revoked token: %v, want Unauthorized", err)
			}
			return nil
		})
	})

	t.Run("the serving CSR approver holds its lease", func(t *testing.T) {
		l, err := clientset(t, dir).CoordinationV1().Leases("kube-system").Get(ctx, "k8s-master-csr-approver", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "itest" {
			t.Errorf("k8s-master-csr-approver lease: %v %+v, want held by itest", err, l)
		}
	})

	t.Run("k8s-master join refuses a worker token", func(t *testing.T) {
		joiner := filepath.Join(t.TempDir(), "joiner")
		_, stderr, code := runCLI(t, "join", "--token", id+"."+secret, "--data-dir", joiner, "--foreground")
		if code == 0 || !strings.Contains(stderr, "this is a worker token") {
			t.Errorf("join with a worker token: exit %d, %s", code, stderr)
		}
		if _, err := os.Stat(joiner); !os.IsNotExist(err) {
			t.Errorf("the refused join made %s (%v)", joiner, err)
		}
	})
}

func pemBlock(t *testing.T, data []byte) []byte {
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("no PEM block in %q", data)
	}
	return b.Bytes
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func caPin(t *testing.T, caFile string) string {
	data, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pemBlock(t, data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// newCSR makes a key and a CSR for cn in system:nodes.
func newCSR(t *testing.T, cn string, dns, ips []string) ([]byte, []byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}}, DNSNames: dns}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemEncode("CERTIFICATE REQUEST", der), pemEncode("EC PRIVATE KEY", keyDER), key
}

func usagesFor(signer string) []certificatesv1.KeyUsage {
	if signer == certificatesv1.KubeletServingSignerName {
		return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	}
	return []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
}

// requestCert posts a CSR as the client and waits, as a kubelet does, for
// its certificate; an error fails the test when want is set.
func requestCert(t *testing.T, ctx context.Context, cs kubernetes.Interface, cn string, dns, ips []string, signer string, want bool) (certPEM, keyPEM []byte) {
	t.Helper()
	csrPEM, keyPEM, key := newCSR(t, cn, dns, ips)
	name, uid, err := certcsr.RequestCertificateWithContext(ctx, cs, csrPEM, "", signer, nil, usagesFor(signer), key)
	if err != nil {
		t.Errorf("post a %s CSR for %s: %v", signer, cn, err)
		return nil, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cert, err := certcsr.WaitForCertificate(wctx, cs, name, uid)
	if err != nil && want {
		t.Errorf("%s CSR %s for %s (%v %v): %v, want a certificate", signer, name, cn, dns, ips, err)
	}
	return cert, keyPEM
}

// requestDenied posts a kubelet-serving CSR that must be denied and
// returns its name.
func requestDenied(t *testing.T, ctx context.Context, cs kubernetes.Interface, cn string, dns, ips []string, signer string) string {
	t.Helper()
	csrPEM, _, key := newCSR(t, cn, dns, ips)
	name, uid, err := certcsr.RequestCertificateWithContext(ctx, cs, csrPEM, "", signer, nil, usagesFor(signer), key)
	if err != nil {
		t.Fatalf("post a CSR for %s: %v", cn, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if cert, err := certcsr.WaitForCertificate(wctx, cs, name, uid); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Errorf("CSR %s for %s (%v %v): certificate %d bytes, error %v; want it denied", name, cn, dns, ips, len(cert), err)
	}
	return name
}

// requestForbidden posts a CSR for cn that the apiserver must refuse.
func requestForbidden(t *testing.T, ctx context.Context, cs kubernetes.Interface, cn string, dns []string, signer string) {
	t.Helper()
	csrPEM, _, key := newCSR(t, cn, dns, nil)
	name, _, err := certcsr.RequestCertificateWithContext(ctx, cs, csrPEM, "", signer, nil, usagesFor(signer), key)
	if !apierrors.IsForbidden(err) {
		t.Errorf("a %s CSR for %s: created %q (%v), want Forbidden", signer, cn, name, err)
	}
}

func checkIssuedByCA(t *testing.T, certPEM []byte, caFile string, usage x509.ExtKeyUsage) {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := x509.ParseCertificate(pemBlock(t, certPEM))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Errorf("certificate for %s does not verify against the cluster CA for %v: %v", cert.Subject.CommonName, usage, err)
	}
}
