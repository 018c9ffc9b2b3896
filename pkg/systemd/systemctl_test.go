package systemd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// fakeSystemctl puts a systemctl on PATH (internal/testkit) that plays a
// few STATUS lines while "starting".
func fakeSystemctl(t *testing.T) *testkit.Systemctl {
	t.Helper()
	return testkit.FakeSystemctl(t, testkit.SystemctlOptions{
		Progress: []string{"etcd member ready", "kube-apiserver ready", "ready in 3.0 s"},
	})
}

func TestStartWith(t *testing.T) {
	fake := fakeSystemctl(t)
	var out bytes.Buffer
	s := &Service{Unit: "k8s-master.service", RuntimeDir: fake.RuntimeDir, Out: &out, Poll: 50 * time.Millisecond}
	if err := s.StartWith(context.Background(), []string{"/usr/bin/k8s-master", "init", "--foreground", "--name", `odd "name" $x 50%`}); err != nil {
		t.Fatal(err)
	}
	calls := fake.Calls()
	want := []string{
		"daemon-reload",
		"enable k8s-master.service",
		"start k8s-master.service",
		"[Service]\nExecStart=\nExecStart=/usr/bin/k8s-master \"init\" \"--foreground\" \"--name\" \"odd \\\"name\\\" $$x 50%%\"\n",
		"daemon-reload",
	}
	rest := calls
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("calls lack %q (in order):\n%s", w, calls)
		}
		rest = rest[i+len(w):]
	}
	if _, err := os.Stat(filepath.Join(fake.RuntimeDir, "k8s-master.service.d")); !os.IsNotExist(err) {
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
	fake := fakeSystemctl(t)
	fake.Fail(t, "start")
	s := &Service{Unit: "k8s-master.service", RuntimeDir: fake.RuntimeDir, Poll: 50 * time.Millisecond}
	err := s.StartWith(context.Background(), []string{"/usr/bin/k8s-master", "init"})
	if err == nil || !strings.Contains(err.Error(), "did not become ready") || !strings.Contains(err.Error(), "Job for k8s-master.service failed") || !strings.Contains(err.Error(), "journalctl -u k8s-master.service") {
		t.Fatalf("error = %v", err)
	}
	if _, err := os.Stat(filepath.Join(fake.RuntimeDir, "k8s-master.service.d")); !os.IsNotExist(err) {
		t.Errorf("runtime drop-in left behind after a failure: %v", err)
	}
	calls := fake.Calls()
	if !strings.HasSuffix(calls, "daemon-reload\n") {
		t.Errorf("no daemon-reload after removing the drop-in:\n%s", calls)
	}
}

// A service that exits right after reporting ready is not a success.
func TestStartWithExitsAtOnce(t *testing.T) {
	fake := fakeSystemctl(t)
	fake.Fail(t, "exits-at-once")
	s := &Service{Unit: "k8s-master.service", RuntimeDir: fake.RuntimeDir, Poll: 50 * time.Millisecond}
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
