package rootca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// newCA returns a CA certificate (PEM) and a function that issues an
// apiserver serving certificate from it.
func newCA(t *testing.T, name string) (string, func() string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	issue := func() string {
		lkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "kube-apiserver"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		d, err := x509.CreateCertificate(rand.Reader, leaf, ca, lkey.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d}))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), issue
}

// eventually polls check until it returns nil or 10 s pass.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type mismatch struct{ got, want string }

func (m mismatch) Error() string { return "got " + m.got + ", want " + m.want }

// TestPublishFollowsTheBundle: every namespace's kube-root-ca.crt and the
// node agent's ConfigMap take the files' contents, again when the files
// change under the running publisher (a rotation phase), and an edited
// kube-root-ca.crt is put back.
func TestPublishFollowsTheBundle(t *testing.T) {
	pollPeriod = 20 * time.Millisecond
	oldCA, oldLeaf := newCA(t, "old")
	newCA, newLeaf := newCA(t, "new")
	dir := t.TempDir()
	f := Files{Bundle: filepath.Join(dir, "ca-bundle.crt"), SigningCA: filepath.Join(dir, "ca.crt"), ServingCert: filepath.Join(dir, "apiserver.crt")}
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(f.Bundle, oldCA)
	write(f.SigningCA, oldCA)
	write(f.ServingCert, oldLeaf())
	cs := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
		// What the controller-manager published before this master's
		// upgrade: taken over.
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "apps"}, Data: map[string]string{"ca.crt": "stale"}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); publish(ctx, cs, f) }()
	defer func() { cancel(); <-stopped }()

	rootCA := func(ns, want string) func() error {
		return func() error {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := cm.Data["ca.crt"]; got != want {
				return mismatch{got, want}
			}
			return nil
		}
	}
	agentCM := func(bundle, signing, serving string) func() error {
		return func() error {
			cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, CAConfigMap, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cm.Data[BundleKey] != bundle {
				return mismatch{cm.Data[BundleKey], bundle}
			}
			if cm.Data[SigningCAKey] != signing {
				return mismatch{cm.Data[SigningCAKey], signing}
			}
			if cm.Data[ServingCAKey] != serving {
				return mismatch{cm.Data[ServingCAKey], serving}
			}
			return nil
		}
	}
	eventually(t, "kube-system's kube-root-ca.crt holds the old CA", rootCA("kube-system", oldCA))
	eventually(t, "apps' stale kube-root-ca.crt takes the old CA", rootCA("apps", oldCA))
	eventually(t, "the node agent's ConfigMap holds the old CA", agentCM(oldCA, oldCA, oldCA))

	// Phase trust: both CAs.
	write(f.Bundle, oldCA+newCA)
	eventually(t, "kube-system's kube-root-ca.crt takes the bundle", rootCA("kube-system", oldCA+newCA))
	eventually(t, "apps' kube-root-ca.crt takes the bundle", rootCA("apps", oldCA+newCA))
	eventually(t, "the node agent's ConfigMap takes the bundle", agentCM(oldCA+newCA, oldCA, oldCA))

	// A namespace made now gets the bundle; an edit is put back.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new namespace gets the bundle", rootCA("late", oldCA+newCA))
	cm, err := cs.CoreV1().ConfigMaps("apps").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["ca.crt"] = "edited"
	if _, err := cs.CoreV1().ConfigMaps("apps").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an edited kube-root-ca.crt is put back", rootCA("apps", oldCA+newCA))

	// Phase clients, serve, then drop.
	write(f.SigningCA, newCA)
	eventually(t, "the node agent's ConfigMap takes the new signing CA", agentCM(oldCA+newCA, newCA, oldCA))
	write(f.ServingCert, newLeaf())
	eventually(t, "the node agent's ConfigMap takes the new serving CA", agentCM(oldCA+newCA, newCA, newCA))
	write(f.Bundle, newCA)
	for _, ns := range []string{"kube-system", "apps", "late"} {
		eventually(t, ns+"'s kube-root-ca.crt holds the new CA alone", rootCA(ns, newCA))
	}
	eventually(t, "the node agent's ConfigMap holds the new CA alone", agentCM(newCA, newCA, newCA))
}

// TestUnreadableFilesPublishNothing: a missing or empty file is an error,
// and nothing is written.
func TestUnreadableFilesPublishNothing(t *testing.T) {
	oldCA, oldLeaf := newCA(t, "old")
	_, otherLeaf := newCA(t, "other")
	dir := t.TempDir()
	f := Files{Bundle: filepath.Join(dir, "ca-bundle.crt"), SigningCA: filepath.Join(dir, "ca.crt"), ServingCert: filepath.Join(dir, "apiserver.crt")}
	if _, err := f.read(); err == nil {
		t.Fatal("read of missing files: no error")
	}
	os.WriteFile(f.Bundle, []byte(oldCA), 0o644)
	os.WriteFile(f.SigningCA, []byte(oldCA), 0o644)
	os.WriteFile(f.ServingCert, []byte(otherLeaf()), 0o644)
	if _, err := f.read(); err == nil || !strings.Contains(err.Error(), "signed by no CA of the bundle") {
		t.Fatalf("read with an apiserver certificate of another CA: %v", err)
	}
	os.WriteFile(f.ServingCert, []byte(oldLeaf()), 0o644)
	if _, err := f.read(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.Bundle, []byte("\n"), 0o644)
	if _, err := f.read(); err == nil {
		t.Fatal("read of an empty bundle: no error")
	}
	cs := fake.NewClientset()
	p := &publisher{cs: cs, files: f}
	if err := p.sync(context.Background()); err == nil {
		t.Fatal("sync with an empty bundle: no error")
	}
	if p.done != nil {
		t.Fatal("sync with an empty bundle started the controller")
	}
	list, _ := cs.CoreV1().ConfigMaps("").List(context.Background(), metav1.ListOptions{})
	if len(list.Items) != 0 {
		t.Fatalf("sync with an empty bundle wrote %d ConfigMaps", len(list.Items))
	}
}
