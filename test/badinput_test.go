package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadInput checks that each kind of bad input fails fast with a message
// that names the problem and what to do, and leaves nothing behind.
func TestBadInput(t *testing.T) {
	p := freePorts(t)

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag", []string{"init", "--bogus"}, []string{"unknown flag: --bogus", "k8s-master init --help"}},
		{"flag without value", []string{"init", "--apiserver-port"}, []string{"flag needs an argument", "--apiserver-port"}},
		{"flag of the wrong type", []string{"init", "--apiserver-port", "https"}, []string{"invalid argument", "--apiserver-port"}},
		{"invalid values, all reported", []string{"init", "--service-cidr", "10.0.0.0/8", "--advertise-address", "nowhere", "--etcd-peer-port", "70000"}, []string{"--service-cidr 10.0.0.0/8 is too large", "--advertise-address \"nowhere\" is not an IP", "--etcd-peer-port 70000 is out of range"}},
		{"argument", []string{"init", "now"}, []string{"unknown command \"now\""}},
		{"unknown command", []string{"bootstrap"}, []string{"unknown command \"bootstrap\""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := append([]string{tc.args[0], "--data-dir", dir}, tc.args[1:]...)
			if tc.name == "unknown command" {
				args = tc.args
			}
			_, stderr, code := runCLI(t, args...)
			if code == 0 {
				t.Fatal("exit code 0")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not contain %q", stderr, w)
				}
			}
			assertAbsent(t, dir)
		})
	}

	t.Run("port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		busy := l.Addr().(*net.TCPAddr).Port
		q := p
		q.API = busy
		dir := filepath.Join(t.TempDir(), "data")
		_, stderr, code := runCLI(t, append([]string{"init", "--data-dir", dir}, q.flags()...)...)
		want := []string{fmt.Sprintf("port %d (apiserver)", busy), fmt.Sprintf("pid %d", os.Getpid()), "--apiserver-port"}
		if code == 0 {
			t.Fatal("exit code 0")
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("stderr %q does not contain %q", stderr, w)
			}
		}
		assertAbsent(t, dir)
	})

	t.Run("data directory not writable", func(t *testing.T) {
		mnt := t.TempDir()
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a read-only file system (root ignores permission bits, so a mount is the real case)")
		}
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
			t.Skipf("cannot mount a read-only tmpfs: %v", err)
		}
		defer syscall.Unmount(mnt, 0)
		for _, dir := range []string{mnt, filepath.Join(mnt, "sub")} {
			_, stderr, code := runCLI(t, append([]string{"init", "--data-dir", dir}, p.flags()...)...)
			if code == 0 || !strings.Contains(stderr, dir) || !strings.Contains(stderr, "--data-dir") {
				t.Errorf("%s: exit %d, stderr %q", dir, code, stderr)
			}
		}
	})

	t.Run("data directory is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, []byte("x"), 0o600)
		_, stderr, code := runCLI(t, append([]string{"init", "--data-dir", f}, p.flags()...)...)
		if code == 0 || !strings.Contains(stderr, "not a directory") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("non-empty directory of something else", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
		os.Mkdir(filepath.Join(dir, "etcd"), 0o700)
		_, stderr, code := runCLI(t, append([]string{"init", "--data-dir", dir}, p.flags()...)...)
		if code == 0 || !strings.Contains(stderr, "not empty") || !strings.Contains(stderr, "etcd, notes.txt") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Errorf("directory now has %d entries, want the 2 it had", len(entries))
		}
	})

	t.Run("start without init", func(t *testing.T) {
		dir := t.TempDir()
		_, stderr, code := runCLI(t, append([]string{"start", "--data-dir", dir}, "--log-file=-")...)
		if code == 0 || !strings.Contains(stderr, "holds no initialised master") || !strings.Contains(stderr, "k8s-master init") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		missing := filepath.Join(dir, "missing")
		_, stderr, code = runCLI(t, "start", "--data-dir", missing)
		if code == 0 || !strings.Contains(stderr, "does not exist") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		assertAbsent(t, missing)
	})

	t.Run("interrupted init is cleaned and redone", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a control plane")
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ".init-incomplete"), nil, 0o600)
		os.MkdirAll(filepath.Join(dir, "pki"), 0o700)
		os.WriteFile(filepath.Join(dir, "pki", "ca.crt"), []byte("half-written"), 0o644)
		m := startMaster(t, "init", dir, p.flags()...)
		m.waitReady(2 * time.Minute)
		m.stop(syscall.SIGTERM, 20*time.Second)
		if _, err := os.Stat(filepath.Join(dir, ".init-incomplete")); err == nil {
			t.Error("the marker of the interrupted init is still there")
		}
		if data, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.crt")); strings.Contains(string(data), "half-written") {
			t.Error("the interrupted init's CA was kept")
		}
	})
}

func assertAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		entries, _ := os.ReadDir(path)
		t.Errorf("%s was created (%d entries) by a command that failed", path, len(entries))
	}
}
