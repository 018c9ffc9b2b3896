package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func makeTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serving issues a kubelet serving certificate; a nil CA self-signs.
func serving(t *testing.T, ca *testCA) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "system:node:w"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// kubelet serves TLS on 127.0.0.1 with the certificate of the moment.
func kubelet(t *testing.T, cert *tls.Certificate) (port int32, set func(*tls.Certificate)) {
	t.Helper()
	var cur atomic.Pointer[tls.Certificate]
	cur.Store(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return int32(ln.Addr().(*net.TCPAddr).Port), func(c *tls.Certificate) { cur.Store(c) }
}

func node(name string, ready bool, port int32) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}}}}
}

// TestWaitKubeletsServing: the wait before phase drop holds while a Ready
// node's kubelet serves a certificate of the old CA, ends once it serves
// one of the new CA, and ignores a self-signed kubelet and a Node that is
// not Ready (with a warning); a kubelet that never moves fails the wait
// with its name and what to do.
func TestWaitKubeletsServing(t *testing.T) {
	kubeletWait, kubeletPoll = 3*time.Second, 20*time.Millisecond
	oldCA, newCA := makeTestCA(t, "old"), makeTestCA(t, "new")
	p1, set1 := kubelet(t, serving(t, &oldCA))
	p2, _ := kubelet(t, serving(t, nil))
	cs := fake.NewClientset(node("w1", true, p1), node("w2", true, p2), node("w3", false, 1))

	// Never moves: the wait fails, naming w1 only.
	var out bytes.Buffer
	err := waitKubeletsServing(context.Background(), cs, oldCA.pem, newCA.pem, &out)
	if err == nil || !strings.Contains(err.Error(), "w1 (old CA)") || strings.Contains(err.Error(), "w2") || !strings.Contains(err.Error(), "rerun") {
		t.Fatalf("wait with w1 on the old CA: %v, want a failure naming w1 alone", err)
	}
	if !strings.Contains(out.String(), "not Ready, not checked: w3") || !strings.Contains(out.String(), "waiting for 1 of 2 kubelet(s)") {
		t.Errorf("output:\n%s", out.String())
	}

	// Moves during the wait: it ends.
	kubeletWait = time.Minute
	done := make(chan error, 1)
	go func() { done <- waitKubeletsServing(context.Background(), cs, oldCA.pem, newCA.pem, &bytes.Buffer{}) }()
	select {
	case err := <-done:
		t.Fatalf("the wait ended (%v) while w1 served the old CA", err)
	case <-time.After(200 * time.Millisecond):
	}
	set1(serving(t, &newCA))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end once w1 served the new CA")
	}
}
