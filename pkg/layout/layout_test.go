package layout

import (
	"path/filepath"
	"slices"
	"testing"
)

// The names are what existing data directories and the join protocol
// hold: changing one breaks every master already installed.
func TestNamesAreStable(t *testing.T) {
	l := Layout{Root: "/d"}
	for got, want := range map[string]string{
		l.PKIDir():                      "/d/pki",
		l.EtcdPKIDir():                  "/d/pki/etcd",
		l.APIServerCertDir():            "/d/pki/apiserver-generated",
		l.EtcdDir():                     "/d/etcd",
		l.EtcdWALDir():                  "/d/etcd/member/wal",
		l.EtcdBackend():                 "/d/etcd/member/snap/db",
		l.State():                       "/d/state.json",
		l.Token():                       "/d/token",
		l.AdminKubeconfig():             "/d/admin.kubeconfig",
		l.ControllerManagerKubeconfig(): "/d/controller-manager.kubeconfig",
		l.SchedulerKubeconfig():         "/d/scheduler.kubeconfig",
		l.EncryptionConfig():            "/d/encryption-config.yaml",
		l.AuthenticationConfig():        "/d/authentication-config.yaml",
		l.InitMarker():                  "/d/.init-incomplete",
		l.Lock():                        "/d/.lock",
		l.ControlSocket():               "/d/control.sock",
		l.Log():                         "/d/k8s-master.log",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if got := (Layout{}).EncryptionConfig(); got != "encryption-config.yaml" {
		t.Errorf("zero Layout: got %s, want a relative name", got)
	}
}

func TestInitEntriesAreTopLevelAndNotRuntime(t *testing.T) {
	l := Layout{}
	for _, p := range []string{l.PKIDir(), l.EtcdDir(), l.State(), l.Token(), l.AdminKubeconfig(), l.EncryptionConfig(), l.InitMarker()} {
		if !slices.Contains(InitEntries(), p) {
			t.Errorf("InitEntries lacks %s", p)
		}
	}
	for _, n := range InitEntries() {
		if filepath.Base(n) != n || IsRuntime(n) {
			t.Errorf("init entry %q is nested or counted as runtime", n)
		}
	}
}

func TestIsRuntime(t *testing.T) {
	for name, want := range map[string]bool{
		"k8s-master.log": true, "k8s-master-2026-11-01T10-00-00.000.log.gz": true, "k8s-master.log.1": true,
		".lock": true, "control.sock": true, ".write-test-123": true, ".state.json.tmp-9": true,
		"notes.txt": false, "k8s-master.yaml": false, "state.json": false,
	} {
		if got := IsRuntime(name); got != want {
			t.Errorf("IsRuntime(%q) = %v, want %v", name, got, want)
		}
	}
}
