package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/config"
)

// initFlags are the flags of init that matter here, parsed from args.
func initFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("init", pflag.ContinueOnError)
	fs.String("config", config.DefaultConfigFile, "")
	fs.String("data-dir", config.DefaultDataDir, "")
	fs.String("log-file", "", "")
	fs.IntP("v", "v", 0, "")
	fs.String("name", "", "")
	fs.String("advertise-address", "", "")
	fs.Int("apiserver-port", 6443, "")
	fs.StringSlice("apiserver-san", nil, "")
	fs.String("image-repository", "registry.k8s.io", "")
	fs.StringSlice("disable-addon", nil, "")
	fs.String("cluster-dns", "", "")
	fs.Bool("foreground", false, "")
	fs.String("token", "", "")
	fs.String("token-file", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestArgs(t *testing.T) {
	fs := initFlags(t, "--name", "m1", "--apiserver-san", "a.example.com", "--apiserver-san", "b,c", "--apiserver-port=7443", "--token", "secret", "--foreground")
	got := strings.Join(Args("/usr/bin/k8s-master", "init", fs), " ")
	want := "/usr/bin/k8s-master init --foreground --apiserver-port=7443 --apiserver-san=a.example.com --apiserver-san=b --apiserver-san=c --name=m1"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if err := CheckFlags(fs); err != nil {
		t.Errorf("recorded settings refused: %v", err)
	}
}

func TestCheckFlags(t *testing.T) {
	for _, args := range [][]string{{"--data-dir", "/srv"}, {"--log-file", "-"}, {"-v", "3"}, {"--config", "/tmp/other.yaml"},
		{"--image-repository", "mirror.example"}, {"--disable-addon", "coredns"}, {"--cluster-dns", "10.96.0.53"}} {
		err := CheckFlags(initFlags(t, args...))
		if err == nil || !strings.Contains(err.Error(), config.DefaultConfigFile) || !strings.Contains(err.Error(), "--foreground") {
			t.Errorf("%v: error = %v", args, err)
		}
	}
	if err := CheckFlags(initFlags(t, "--config", config.DefaultConfigFile)); err != nil {
		t.Errorf("--config naming the service's own file: %v", err)
	}
}

// fakeSystemctl puts internal/testkit's fake systemctl on PATH, playing
// the service's progress; a start also logs the modes of the files in the
// directories list names.
func fakeSystemctl(t *testing.T, list ...string) *testkit.Systemctl {
	t.Helper()
	return testkit.FakeSystemctl(t, testkit.SystemctlOptions{Progress: []string{"kube-apiserver ready"}, ListOnStart: list})
}

// handOver runs an init (or join, with a token) handed to the fake unit.
func handOver(t *testing.T, systemctlDir, verb, token string, args ...string) (string, *HandOver, error) {
	t.Helper()
	c := config.Default()
	c.LogFile = filepath.Join(c.DataDir, "k8s-master.log")
	var out bytes.Buffer
	h := &HandOver{
		Verb:       verb,
		Argv:       Args("/usr/bin/k8s-master", verb, initFlags(t, args...)),
		Token:      token,
		Config:     &c,
		Out:        &out,
		RuntimeDir: filepath.Join(systemctlDir, "run"),
		TokenDir:   filepath.Join(t.TempDir(), "tok"),
	}
	err := h.Run(context.Background())
	return out.String(), h, err
}

func TestInitHandOver(t *testing.T) {
	dir := fakeSystemctl(t).Dir
	out, _, err := handOver(t, dir, "init", "", "--name", "m1", "--advertise-address", "192.0.2.10")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	for _, want := range []string{"enable k8s-master.service\n", "start k8s-master.service\n", `ExecStart=/usr/bin/k8s-master "init" "--foreground" "--advertise-address=192.0.2.10" "--name=m1"`} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("systemctl calls lack %q:\n%s", want, calls)
		}
	}
	for _, want := range []string{"running init in the k8s-master.service systemd service", "  kube-apiserver ready\n", "ready in ", "starts at boot", "/var/lib/k8s-master/admin.kubeconfig", "journalctl -u k8s-master.service and /var/lib/k8s-master/k8s-master.log"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(calls), "disable") {
		t.Errorf("disabled after a good start:\n%s", calls)
	}
	// Already running: refused, nothing started again.
	os.Remove(filepath.Join(dir, "calls"))
	if _, _, err := handOver(t, dir, "init", "", "--advertise-address", "192.0.2.10"); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("init with the service running: %v", err)
	}
	if calls, _ := os.ReadFile(filepath.Join(dir, "calls")); strings.Contains(string(calls), "start") {
		t.Errorf("started again:\n%s", calls)
	}
}

func TestHandOverFailure(t *testing.T) {
	fake := fakeSystemctl(t)
	dir := fake.Dir
	fake.Fail(t, "start")
	_, _, err := handOver(t, dir, "init", "", "--advertise-address", "192.0.2.10")
	if err == nil || !strings.Contains(err.Error(), "journalctl -u k8s-master.service") || !strings.Contains(err.Error(), "disabled again") {
		t.Fatalf("error = %v", err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if !strings.HasSuffix(string(calls), "disable --now k8s-master.service\n") {
		t.Errorf("a failed start left the unit enabled:\n%s", calls)
	}
}

func TestJoinHandOver(t *testing.T) {
	tokenDir := filepath.Join(t.TempDir(), "tok")
	dir := fakeSystemctl(t, tokenDir).Dir

	const secret = "0123456789abcdefghijklmnopqrstuv"
	token := "km1:abc123." + secret + "@192.0.2.10:9443/sha256:7904a83ed262410a8f1a66e06c9c1b7bf7a1648ccd72569a079cd7f3d49ee8e0"
	c := config.Default()
	var out bytes.Buffer
	h := &HandOver{
		Verb:       "join",
		Argv:       Args("/usr/bin/k8s-master", "join", initFlags(t, "--token", token, "--name", "m2", "--advertise-address", "192.0.2.11")),
		Token:      token,
		Config:     &c,
		Out:        &out,
		RuntimeDir: filepath.Join(dir, "run"),
		TokenDir:   tokenDir,
	}
	if err := h.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	tokenFile := filepath.Join(tokenDir, "join-token")
	for _, want := range []string{
		`ExecStart=/usr/bin/k8s-master "join" "--foreground" "--advertise-address=192.0.2.11" "--name=m2" "--token-file=` + tokenFile + `"`,
		"file 600 " + tokenFile,
	} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("systemctl calls lack %q:\n%s", want, calls)
		}
	}
	if strings.Contains(string(calls), secret) {
		t.Errorf("the token secret is on the unit's command line:\n%s", calls)
	}
	if _, err := os.Stat(tokenFile); err == nil {
		t.Error("the token file outlived the first start")
	}
	if !strings.Contains(out.String(), "running join in the k8s-master.service systemd service") {
		t.Errorf("output: %s", out.String())
	}
	if strings.Contains(strings.Join(h.Argv, " "), "--token-file") {
		t.Errorf("Run changed the caller's Argv: %q", h.Argv)
	}
}
