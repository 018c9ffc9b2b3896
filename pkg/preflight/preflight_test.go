package preflight

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func TestCheckPortsNamesTheOwner(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.Addr().(*net.TCPAddr).Port
	free.Close()

	err = CheckPorts([]Port{
		{Name: "scheduler", Setting: "scheduler-port", Host: "127.0.0.1", Port: freePort},
		{Name: "apiserver", Setting: "apiserver-port", Host: "127.0.0.1", Port: busy},
	})
	if err == nil {
		t.Fatal("a port in use passed the check")
	}
	msg := err.Error()
	for _, want := range []string{
		fmt.Sprintf("port %d (apiserver)", busy),
		fmt.Sprintf("pid %d", os.Getpid()),
		"; stop that process or pass apiserver-port",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	// The setting is named for the command line to word as a flag.
	if ses := config.SettingErrors(err); len(ses) != 1 || ses[0].Setting != "apiserver-port" {
		t.Errorf("error %q names settings %v, want apiserver-port", msg, ses)
	}
	if strings.Contains(msg, "scheduler") {
		t.Errorf("the free port was reported: %q", msg)
	}
	if err := CheckPorts([]Port{{Name: "scheduler", Setting: "scheduler-port", Host: "127.0.0.1", Port: freePort}}); err != nil {
		t.Errorf("free port reported: %v", err)
	}
}

func TestCheckPortsForeignAddress(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1: never an address of this host.
	err := CheckPorts([]Port{{Name: "apiserver", Setting: "apiserver-port", Host: "192.0.2.1", Port: 6443}})
	if err == nil || !strings.Contains(err.Error(), "not an address of this host") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckDataDir(t *testing.T) {
	t.Run("creates missing directory 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		created, err := CheckDataDir(dir)
		if err != nil || !created {
			t.Fatalf("created=%v err=%v", created, err)
		}
		st, _ := os.Stat(dir)
		if st.Mode().Perm() != 0o700 {
			t.Errorf("mode %o", st.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 0 {
			t.Errorf("left %d entries behind", len(entries))
		}
	})
	t.Run("tightens an existing directory", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		created, err := CheckDataDir(dir)
		if err != nil || created {
			t.Fatalf("created=%v err=%v", created, err)
		}
		st, _ := os.Stat(dir)
		if st.Mode().Perm() != 0o700 {
			t.Errorf("mode %o", st.Mode().Perm())
		}
	})
	t.Run("a file in the way", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		if _, err := CheckDataDir(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		dir := t.TempDir()
		if os.Geteuid() == 0 {
			// Root ignores permission bits; a read-only mount is what a
			// root-run master actually meets.
			if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
				t.Skipf("cannot mount a read-only tmpfs: %v", err)
			}
			defer syscall.Unmount(dir, 0)
		} else {
			os.Chmod(dir, 0o500)
			defer os.Chmod(dir, 0o700)
		}
		_, err := CheckDataDir(dir)
		if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.HasSuffix(err.Error(), "or pass another data-dir") || len(config.SettingErrors(err)) != 1 {
			t.Fatalf("err = %v", err)
		}
	})
}
