package systemd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSystemctl puts a systemctl on PATH that logs its arguments to
// DIR/calls, copies the runtime drop-in into the log when asked to start,
// plays a few STATUS lines while "starting", and fails the start when
// DIR/fail-start exists.
func fakeSystemctl(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	script := `#!/bin/sh
d=` + dir + `
echo "$*" >> $d/calls
case "$1" in
show) cat $d/status 2>/dev/null; exit 0 ;;
is-active) [ -f $d/active ]; exit $? ;;
start)
  cat $d/run/k8s-master.service.d/*.conf >> $d/calls
  for s in "etcd member ready" "kube-apiserver ready" "ready in 3.0 s"; do
    echo "$s" > $d/status; sleep 0.3
  done
  if [ -f $d/fail-start ]; then echo "Job for k8s-master.service failed." >&2; exit 1; fi
  [ -f $d/exits-at-once ] || touch $d/active ;;
esac
exit 0
`
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	return dir
}

func TestStartWith(t *testing.T) {
	dir := fakeSystemctl(t)
	var out bytes.Buffer
	s := &Service{Unit: "k8s-master.service", RuntimeDir: filepath.Join(dir, "run"), Out: &out, Poll: 50 * time.Millisecond}
	if err := s.StartWith(context.Background(), []string{"/usr/bin/k8s-master", "init", "--foreground", "--name", `odd "name" $x 50%`}); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	want := []string{
		"daemon-reload",
		"enable k8s-master.service",
		"start k8s-master.service",
		"[Service]\nExecStart=\nExecStart=/usr/bin/k8s-master \"init\" \"--foreground\" \"--name\" \"odd \\\"name\\\" $$x 50%%\"\n",
		"daemon-reload",
	}
	rest := string(calls)
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("calls lack %q (in order):\n%s", w, calls)
		}
		rest = rest[i+len(w):]
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "k8s-master.service.d")); !os.IsNotExist(err) {
		t.Errorf("runtime drop-in left behind: %v", err)
	}
	// Progress: the service's status lines, each once.
	for _, w := range []string{"  kube-apiserver ready\n", "  ready in 3.0 s\n"} {
		if strings.Count(out.String(), w) != 1 {
			t.Errorf("progress %q not shown once:\n%s", w, out.String())
		}
	}
	if !s.Active(context.Background()) {
		t.Error("not active after start")
	}
}

func TestStartWithFailure(t *testing.T) {
	dir := fakeSystemctl(t)
	if err := os.WriteFile(filepath.Join(dir, "fail-start"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Service{Unit: "k8s-master.service", RuntimeDir: filepath.Join(dir, "run"), Poll: 50 * time.Millisecond}
	err := s.StartWith(context.Background(), []string{"/usr/bin/k8s-master", "init"})
	if err == nil || !strings.Contains(err.Error(), "did not become ready") || !strings.Contains(err.Error(), "Job for k8s-master.service failed") || !strings.Contains(err.Error(), "journalctl -u k8s-master.service") {
		t.Fatalf("error = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "k8s-master.service.d")); !os.IsNotExist(err) {
		t.Errorf("runtime drop-in left behind after a failure: %v", err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if !strings.HasSuffix(string(calls), "daemon-reload\n") {
		t.Errorf("no daemon-reload after removing the drop-in:\n%s", calls)
	}
}

// A service that exits right after reporting ready is not a success.
func TestStartWithExitsAtOnce(t *testing.T) {
	dir := fakeSystemctl(t)
	if err := os.WriteFile(filepath.Join(dir, "exits-at-once"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Service{Unit: "k8s-master.service", RuntimeDir: filepath.Join(dir, "run"), Poll: 50 * time.Millisecond}
	err := s.StartWith(context.Background(), []string{"/usr/bin/k8s-master", "init"})
	if err == nil || !strings.Contains(err.Error(), "stopped right after starting") {
		t.Fatalf("error = %v", err)
	}
}

func TestExecQuote(t *testing.T) {
	got := ExecQuote([]string{"/usr/bin/k8s-master", "a b", `c\d`, ""})
	if want := `/usr/bin/k8s-master "a b" "c\\d" ""`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := ExecQuote([]string{"/opt/my dir/k8s-master"}); got != `"/opt/my dir/k8s-master"` {
		t.Errorf("got %s", got)
	}
}
