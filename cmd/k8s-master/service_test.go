package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8s-master/k8s-master/pkg/config"
)

func TestServiceInitArgs(t *testing.T) {
	cmd := newRootCommand()
	initCmd, _, err := cmd.Find([]string{"init"})
	if err != nil {
		t.Fatal(err)
	}
	if err := initCmd.ParseFlags([]string{"--name", "m1", "--apiserver-san", "a.example.com", "--apiserver-san", "b,c", "--apiserver-port=7443"}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(serviceArgs("/usr/bin/k8s-master", "init", initCmd.Flags()), " ")
	want := "/usr/bin/k8s-master init --foreground --apiserver-port=7443 --apiserver-san=a.example.com --apiserver-san=b --apiserver-san=c --name=m1"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if err := checkServiceFlags(initCmd.Flags()); err != nil {
		t.Errorf("recorded settings refused: %v", err)
	}
}

func TestCheckServiceFlags(t *testing.T) {
	for _, args := range [][]string{{"--data-dir", "/srv"}, {"--log-file", "-"}, {"-v", "3"}, {"--config", "/tmp/other.yaml"}} {
		configFile = config.DefaultConfigFile
		root := newRootCommand()
		initCmd, _, _ := root.Find([]string{"init"})
		if err := initCmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		err := checkServiceFlags(initCmd.Flags())
		if err == nil || !strings.Contains(err.Error(), config.DefaultConfigFile) || !strings.Contains(err.Error(), "--foreground") {
			t.Errorf("%v: error = %v", args, err)
		}
	}
	configFile = config.DefaultConfigFile
}

// fakeSystemctl puts a systemctl on PATH that records its calls in
// DIR/calls (with the runtime drop-in's ExecStart when starting) and plays
// the service's progress; DIR/fail makes the start fail.
func fakeSystemctl(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
d=` + dir + `
echo "$*" >> $d/calls
case "$1" in
show) cat $d/status 2>/dev/null ;;
is-active) [ -f $d/active ]; exit $? ;;
start)
  grep '^ExecStart=.' $d/run/k8s-master.service.d/*.conf >> $d/calls
  [ -n "$TOKEN_DIR" ] && stat -c 'token file %a %n' "$TOKEN_DIR"/* >> $d/calls
  echo "kube-apiserver ready" > $d/status
  [ -f $d/fail ] && { echo "Job failed" >&2; exit 1; }
  touch $d/active ;;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	serviceRuntimeDir = filepath.Join(dir, "run")
	t.Cleanup(func() { serviceRuntimeDir = "" })
	return dir
}

func runInitService(t *testing.T, args ...string) (string, error) {
	t.Helper()
	configFile = filepath.Join(t.TempDir(), "absent.yaml") // as if none were installed
	t.Cleanup(func() { configFile = config.DefaultConfigFile })
	root := newRootCommand()
	initCmd, _, _ := root.Find([]string{"init"})
	if err := initCmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	initCmd.SetOut(&out)
	c := config.Default()
	err := initService(initCmd, &c)
	return out.String(), err
}

func TestInitService(t *testing.T) {
	dir := fakeSystemctl(t)
	out, err := runInitService(t, "--name", "m1", "--advertise-address", "192.0.2.10")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	exe, _ := os.Executable()
	for _, want := range []string{"enable k8s-master.service\n", "start k8s-master.service\n", "ExecStart=" + exe + ` "init" "--foreground" "--advertise-address=192.0.2.10" "--name=m1"`} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("systemctl calls lack %q:\n%s", want, calls)
		}
	}
	for _, want := range []string{"running init in the k8s-master.service systemd service", "  kube-apiserver ready\n", "ready in ", "starts at boot", "/var/lib/k8s-master/admin.kubeconfig"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(calls), "disable") {
		t.Errorf("disabled after a good start:\n%s", calls)
	}
	// Already running: refused, nothing started again.
	os.Remove(filepath.Join(dir, "calls"))
	if _, err := runInitService(t, "--advertise-address", "192.0.2.10"); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("init with the service running: %v", err)
	}
	if calls, _ := os.ReadFile(filepath.Join(dir, "calls")); strings.Contains(string(calls), "start") {
		t.Errorf("started again:\n%s", calls)
	}
}

func TestInitServiceFailure(t *testing.T) {
	dir := fakeSystemctl(t)
	if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runInitService(t, "--advertise-address", "192.0.2.10")
	if err == nil || !strings.Contains(err.Error(), "journalctl -u k8s-master.service") || !strings.Contains(err.Error(), "disabled again") {
		t.Fatalf("error = %v", err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if !strings.HasSuffix(string(calls), "disable --now k8s-master.service\n") {
		t.Errorf("a failed start left the unit enabled:\n%s", calls)
	}
}

func TestJoinService(t *testing.T) {
	dir := fakeSystemctl(t)
	tokenDir = filepath.Join(t.TempDir(), "tok")
	t.Setenv("TOKEN_DIR", tokenDir)
	t.Cleanup(func() { tokenDir = "/run/k8s-master" })
	configFile = filepath.Join(t.TempDir(), "absent.yaml")
	t.Cleanup(func() { configFile = config.DefaultConfigFile })

	const secret = "0123456789abcdefghijklmnopqrstuv"
	token := "km1:abc123." + secret + "@192.0.2.10:9443/sha256:7904a83ed262410a8f1a66e06c9c1b7bf7a1648ccd72569a079cd7f3d49ee8e0"
	root := newRootCommand()
	joinCmd, _, _ := root.Find([]string{"join"})
	if err := joinCmd.ParseFlags([]string{"--token", token, "--name", "m2", "--advertise-address", "192.0.2.11"}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	joinCmd.SetOut(&out)
	c := config.Default()
	if err := serviceRun(joinCmd, &c, "join", token); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	tokenFile := filepath.Join(tokenDir, "join-token")
	exe, _ := os.Executable()
	for _, want := range []string{
		"ExecStart=" + exe + ` "join" "--foreground" "--advertise-address=192.0.2.11" "--name=m2" "--token-file=` + tokenFile + `"`,
		"token file 600 " + tokenFile,
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
}
