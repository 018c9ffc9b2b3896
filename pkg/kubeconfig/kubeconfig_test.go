package kubeconfig

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

func TestWriteIsLoadableByClientGo(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("kubernetes", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	spec := pki.LeafSpec{Name: "admin", CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Usage: pki.ClientAuth}
	if _, err := ca.EnsureLeaf(dir, spec, time.Now()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.kubeconfig")
	err = Write(Spec{
		Path: path, ClusterName: "kubernetes", User: "kubernetes-admin", Server: "https://[2001:db8::1]:6443",
		CAFile: pki.CertPath(dir, "ca"), CertFile: pki.CertPath(dir, "admin"), KeyFile: pki.KeyPath(dir, "admin"),
	})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", st.Mode().Perm())
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://[2001:db8::1]:6443" {
		t.Errorf("server %q", rc.Host)
	}
	wantCert, _ := os.ReadFile(pki.CertPath(dir, "admin"))
	if string(rc.TLSClientConfig.CertData) != string(wantCert) || string(rc.TLSClientConfig.CAData) != string(ca.CertPEM) || len(rc.TLSClientConfig.KeyData) == 0 {
		t.Error("credentials were not embedded as written")
	}
}

func TestWriteReferenceNamesTheFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("kubernetes", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	spec := pki.LeafSpec{Name: "scheduler", CommonName: "system:kube-scheduler", Usage: pki.ClientAuth}
	if _, err := ca.EnsureLeaf(dir, spec, time.Now()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "scheduler.kubeconfig")
	s := Spec{Path: path, ClusterName: "kubernetes", User: "system:kube-scheduler", Server: "https://127.0.0.1:6443",
		CAFile: pki.CertPath(dir, "ca"), CertFile: pki.CertPath(dir, "scheduler"), KeyFile: pki.KeyPath(dir, "scheduler"), Reference: true}
	if err := Write(s); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	tc := rc.TLSClientConfig
	if tc.CertFile != s.CertFile || tc.KeyFile != s.KeyFile || tc.CAFile != s.CAFile || len(tc.CertData) != 0 || len(tc.KeyData) != 0 {
		t.Errorf("client config %+v: want the files named, nothing embedded", tc)
	}

	// Unchanged: not rewritten (the renewal check runs every hour).
	before, _ := os.Stat(path)
	time.Sleep(10 * time.Millisecond)
	if err := Write(s); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(path); !after.ModTime().Equal(before.ModTime()) {
		t.Error("an unchanged kubeconfig was rewritten")
	}
}
