package systemd

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func receive(t *testing.T, l *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := l.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPathSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	sent, err := Notify("READY=1\nSTATUS=ready")
	if err != nil || !sent {
		t.Fatalf("Notify: %v, %v", sent, err)
	}
	if got := receive(t, l); got != "READY=1\nSTATUS=ready" {
		t.Errorf("got %q", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	name := "k8s-master-test-" + strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000000")
	l := listen(t, "\x00"+name)
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	if sent, err := Notify("STOPPING=1"); err != nil || !sent {
		t.Fatalf("Notify: %v, %v", sent, err)
	}
	if got := receive(t, l); got != "STOPPING=1" {
		t.Errorf("got %q", got)
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Errorf("Notify without a socket: %v, %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if _, err := Notify("READY=1"); err == nil {
		t.Error("Notify to a missing socket: no error")
	}
}

func TestStatusWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	var out bytes.Buffer
	w := &StatusWriter{W: &out}
	// A line in two writes, then two lines in one.
	w.Write([]byte("  etcd member "))
	w.Write([]byte("ready  0.41 s  ok\n"))
	w.Write([]byte("ready in 3.2 s\n\n  kubectl get\n"))
	for _, want := range []string{"STATUS=etcd member ready  0.41 s  ok", "STATUS=ready in 3.2 s", "STATUS=kubectl get"} {
		if got := receive(t, l); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if out.String() != "  etcd member ready  0.41 s  ok\nready in 3.2 s\n\n  kubectl get\n" {
		t.Errorf("passed on %q", out.String())
	}
}

func TestClaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	defer func() { claimed.done = false; claimed.socket = "" }()
	if !Claim() {
		t.Fatal("Claim found no socket")
	}
	if v, set := os.LookupEnv("NOTIFY_SOCKET"); set {
		t.Errorf("NOTIFY_SOCKET still set to %q after Claim", v)
	}
	if sent, err := Notify("READY=1"); err != nil || !sent {
		t.Fatalf("Notify after Claim: %v, %v", sent, err)
	}
	if got := receive(t, l); got != "READY=1" {
		t.Errorf("got %q", got)
	}
}
