package test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifyListener is a service manager's notification socket.
type notifyListener struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) (*notifyListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := &notifyListener{conn: conn, msgs: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(l.msgs)
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return l, path
}

// waitFor returns the first message containing want, and the ones before.
func (l *notifyListener) waitFor(t *testing.T, exited <-chan struct{}, want string, timeout time.Duration) (before []string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-l.msgs:
			if !ok {
				t.Fatalf("socket closed before %q; got %q", want, before)
			}
			if strings.Contains(m, want) {
				return before
			}
			before = append(before, m)
		case <-exited:
			exited = nil // the socket may still hold its last messages
			deadline = time.After(time.Second)
		case <-deadline:
			t.Fatalf("no %q within %s; got %q", want, timeout, before)
		}
	}
}

// TestServiceConfigAndReset runs a master as systemd would (NOTIFY_SOCKET,
// settings from a config file), then resets it.
func TestServiceConfigAndReset(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	fileDataDir := filepath.Join(dir, "from-file")
	p := freePorts(t)
	// The ports come from the file; --data-dir on the command line wins
	// over the file's data-dir.
	cfg := "data-dir: " + fileDataDir + "\n"
	for _, f := range p.flags() {
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if !strings.HasSuffix(k, "-port") {
			v = `"` + v + `"`
		}
		cfg += k + ": " + v + "\n"
	}
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	l, sock := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	m := startMaster(t, "init", dataDir, "--config", cfgFile)
	before := l.waitFor(t, m.exited, "READY=1", 90*time.Second)
	// READY=1 only once the control plane is ready: the "ready in" line
	// came first, and embedded etcd's own early READY=1 is kept out. Read
	// from the notify socket (each output line is also a STATUS there), so
	// that the order is the master's, not when the test's copy of stdout
	// caught up.
	if !slices.ContainsFunc(before, func(s string) bool { return strings.HasPrefix(s, "STATUS=ready in ") }) {
		t.Fatalf("READY=1 before the ready line; notifications before READY=1: %q", before)
	}
	if !strings.Contains(strings.Join(before, "\n"), "STATUS=kube-apiserver ready") {
		t.Errorf("no progress STATUS lines before READY: %q", before)
	}
	if _, err := os.Stat(fileDataDir); !os.IsNotExist(err) {
		t.Errorf("the file's data-dir was used although --data-dir was given: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "")

	// reset refuses while a master runs the data directory.
	_, stderr, code := runCLI(t, "reset", "--data-dir", dataDir, "--yes")
	if code == 0 || !strings.Contains(stderr, "still runs") {
		t.Errorf("reset of a running master: code %d, stderr %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "state.json")); err != nil {
		t.Fatalf("refused reset changed the data directory: %v", err)
	}

	m.stop(syscall.SIGTERM, 30*time.Second)
	l.waitFor(t, nil, "STOPPING=1", 5*time.Second)

	// A key set in the file counts as given: contradicting the recorded
	// cluster is refused, naming it.
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte(cfg+"name: someone-else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCLI(t, "start", "--config", other, "--data-dir", dataDir)
	if code == 0 || !strings.Contains(stderr, `--name is "someone-else" here`) {
		t.Errorf("start with a contradicting file: code %d, stderr %s", code, stderr)
	}
	// A bad file is refused with the key and line.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: m1\napiserver-port: six\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCLI(t, "start", "--config", bad, "--data-dir", dataDir)
	if code == 0 || !strings.Contains(stderr, `line 2: key "apiserver-port": wrong type`) {
		t.Errorf("start with a bad file: code %d, stderr %s", code, stderr)
	}

	// No terminal, no --yes: refused.
	_, stderr, code = runCLI(t, "reset", "--data-dir", dataDir)
	if code == 0 || !strings.Contains(stderr, "--yes") {
		t.Errorf("reset without confirmation: code %d, stderr %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "state.json")); err != nil {
		t.Fatalf("unconfirmed reset changed the data directory: %v", err)
	}
	// The data-dir of the --config file is what reset uses without --data-dir.
	stdout, stderr, code := runCLI(t, "reset", "--config", filepath.Join(dir, "dd.yaml"), "--yes")
	if code == 0 || !strings.Contains(stderr, "dd.yaml") {
		t.Errorf("reset with a missing --config: code %d, %s%s", code, stdout, stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "dd.yaml"), []byte("data-dir: "+dataDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = runCLI(t, "reset", "--config", filepath.Join(dir, "dd.yaml"), "--yes")
	if code != 0 || !strings.Contains(stdout, "removed "+dataDir) {
		t.Fatalf("reset: code %d, %s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data directory still there after reset: %v", err)
	}
	stdout, _, code = runCLI(t, "reset", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(stdout, "nothing to reset") {
		t.Errorf("second reset: code %d, %s", code, stdout)
	}
}
