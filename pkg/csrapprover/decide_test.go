package csrapprover

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// request is the CSR a kubelet would send, changed by the test case.
type request struct {
	user   string
	groups []string
	cn     string
	org    []string
	dns    []string
	ips    []string
	emails []string
	uris   []string
	usages []certificatesv1.KeyUsage
}

func kubeletRequest() request {
	return request{
		user: "system:node:w1", groups: []string{"system:nodes", "system:authenticated"},
		cn: "system:node:w1", org: []string{"system:nodes"},
		dns: []string{"w1"}, ips: []string{"10.250.0.21"},
		usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
	}
}

func (r request) csr(t *testing.T) *certificatesv1.CertificateSigningRequest {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.cn, Organization: r.org}, DNSNames: r.dns, EmailAddresses: r.emails}
	for _, s := range r.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s))
	}
	for _, s := range r.uris {
		u, _ := url.Parse(s)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-1"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeletServingSignerName,
			Usages:     r.usages, Username: r.user, Groups: r.groups,
		},
	}
}

func node(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
}

var w1 = node("w1",
	corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.250.0.21"},
	corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.21"},
	corev1.NodeAddress{Type: corev1.NodeHostName, Address: "w1"},
	corev1.NodeAddress{Type: corev1.NodeInternalDNS, Address: "w1.lab.example"},
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*request)
		node   *corev1.Node
		deny   string // "" = approve; else a word of the reason
	}{
		{"the kubelet's own names", func(*request) {}, w1, ""},
		{"every address type of its Node", func(r *request) {
			r.dns = []string{"W1", "w1.lab.example"}
			r.ips = []string{"10.250.0.21", "203.0.113.21"}
		}, w1, ""},
		{"an RSA key's usages", func(r *request) {
			r.usages = append(r.usages, certificatesv1.UsageKeyEncipherment)
		}, w1, ""},
		{"only IPs", func(r *request) { r.dns = nil }, w1, ""},
		{"an IP not on its Node", func(r *request) { r.ips = []string{"10.250.0.22"} }, w1, "10.250.0.22"},
		{"a DNS name not on its Node", func(r *request) { r.dns = []string{"kubernetes.default"} }, w1, "kubernetes.default"},
		{"a hostname matched as an IP type is not enough", func(r *request) { r.ips = []string{"10.250.0.21"}; r.dns = []string{"10.250.0.21"} }, w1, "10.250.0.21"},
		{"a subject naming another node", func(r *request) { r.cn = "system:node:w2" }, w1, "own"},
		{"requested by another node for w1", func(r *request) { r.user = "system:node:w2" }, node("w2"), "own"},
		{"requested by a non-node", func(r *request) { r.user = "system:bootstrap:abcdef" }, w1, "not a node"},
		{"a node user without system:nodes", func(r *request) { r.groups = []string{"system:authenticated"} }, w1, "not a node"},
		{"another organization", func(r *request) { r.org = []string{"system:masters"} }, w1, "organization"},
		{"client auth usage", func(r *request) {
			r.usages = append(r.usages, certificatesv1.UsageClientAuth)
		}, w1, "client auth"},
		{"no server auth", func(r *request) { r.usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature} }, w1, "server auth"},
		{"an e-mail address", func(r *request) { r.emails = []string{"a@b.c"} }, w1, "e-mail"},
		{"a URI", func(r *request) { r.uris = []string{"spiffe://x/y"} }, w1, "URI"},
		{"no names at all", func(r *request) { r.dns, r.ips = nil, nil }, w1, "no DNS name"},
		{"no Node", func(*request) {}, nil, "no Node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kubeletRequest()
			tc.change(&r)
			err := Check(r.csr(t), tc.node)
			switch {
			case tc.deny == "" && err != nil:
				t.Errorf("denied: %v", err)
			case tc.deny != "" && err == nil:
				t.Errorf("approved, want a denial naming %q", tc.deny)
			case tc.deny != "" && !strings.Contains(err.Error(), tc.deny):
				t.Errorf("denied with %q, want it to name %q", err, tc.deny)
			}
		})
	}
}

func TestCheckRefusesBrokenRequests(t *testing.T) {
	csr := kubeletRequest().csr(t)
	csr.Spec.Request = []byte("not pem")
	if err := Check(csr, w1); err == nil {
		t.Error("a request that is not PEM was approved")
	}
	csr = kubeletRequest().csr(t)
	b, _ := pem.Decode(csr.Spec.Request)
	b.Bytes[len(b.Bytes)-3] ^= 0xff // the signature
	csr.Spec.Request = pem.EncodeToMemory(b)
	if err := Check(csr, w1); err == nil {
		t.Error("a request with a broken signature was approved")
	}
}

func TestRelevant(t *testing.T) {
	csr := kubeletRequest().csr(t)
	if !Relevant(csr) {
		t.Error("a pending kubelet-serving CSR is not relevant")
	}
	client := csr.DeepCopy()
	client.Spec.SignerName = certificatesv1.KubeAPIServerClientKubeletSignerName
	if Relevant(client) {
		t.Error("a kubelet client CSR is relevant (the controller-manager decides those)")
	}
	for _, c := range []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed} {
		done := csr.DeepCopy()
		done.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: c, Status: corev1.ConditionTrue}}
		if Relevant(done) {
			t.Errorf("a %s CSR is relevant", c)
		}
	}
}
