package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lab is a netns lab made by scripts/netns-lab.sh: masters m1..mN at
// 10.99.0.11.. and a client namespace at 10.99.0.100, torn down at the end.
type lab struct {
	t      *testing.T
	prefix string
	script string
	dir    string
}

func newLab(t *testing.T, n int) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the netns lab needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the netns lab needs ip (iproute2); .ci/run installs it")
	}
	script, err := filepath.Abs("../scripts/netns-lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{t: t, prefix: "kt" + hex.EncodeToString(b) + "-", script: script, dir: t.TempDir()}
	t.Cleanup(func() {
		// Kill what runs in the lab before removing it, also on failure.
		if out, err := l.cmd("down").CombinedOutput(); err != nil {
			t.Logf("lab down: %v %s", err, out)
		}
	})
	if out, err := l.cmd("up", strconv.Itoa(n)).CombinedOutput(); err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	return l
}

func (l *lab) cmd(args ...string) *exec.Cmd {
	return l.cmdContext(context.Background(), args...)
}

func (l *lab) cmdContext(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, l.script, args...)
	c.Env = append(os.Environ(), "LAB_PREFIX="+l.prefix)
	return c
}

func (l *lab) addr(i int) string       { return fmt.Sprintf("10.99.0.%d", 10+i) }
func (l *lab) dataDir(i int) string    { return filepath.Join(l.dir, fmt.Sprintf("m%d", i)) }
func (l *lab) apiserver(i int) string  { return "https://" + l.addr(i) + ":6443" }
func (l *lab) kubeconfig(i int) string { return filepath.Join(l.dataDir(i), "admin.kubeconfig") }

// start runs `k8s-master VERB` as master i in its namespace, with its own
// hostname (m<i>).
func (l *lab) start(i int, verb string, args ...string) *master {
	return l.startBin(i, masterBin, verb, args...)
}

// startBin is start with another k8s-master binary (an older release).
func (l *lab) startBin(i int, bin, verb string, args ...string) *master {
	argv := append([]string{"run", strconv.Itoa(i), bin, verb, "--data-dir", l.dataDir(i), "--advertise-address", l.addr(i)}, args...)
	if verb == "start" {
		argv = append([]string{"run", strconv.Itoa(i), bin, "start", "--data-dir", l.dataDir(i)}, args...)
	}
	return startProcess(l.t, fmt.Sprintf("m%d %s", i, verb), l.dataDir(i), l.cmd(argv...))
}

// run runs a short k8s-master command as master i.
func (l *lab) run(i int, args ...string) (string, string, int) {
	l.t.Helper()
	return l.runOn(strconv.Itoa(i), args...)
}

// runOn runs a short k8s-master command on host "1".."N" or "c" (client).
func (l *lab) runOn(host string, args ...string) (string, string, int) {
	l.t.Helper()
	return l.runBinOn(host, masterBin, args...)
}

// runBinOn is runOn with another k8s-master binary.
func (l *lab) runBinOn(host, bin string, args ...string) (string, string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := l.cmdContext(ctx, append([]string{"run", host, bin}, args...)...)
	var o, e strings.Builder
	c.Stdout, c.Stderr = &o, &e
	if err := c.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		l.t.Fatalf("k8s-master %v on %s: %v", args, host, err)
	}
	return o.String(), e.String(), 0
}

// mustRun is run that fails the test on a non-zero exit.
func (l *lab) mustRun(i int, args ...string) string {
	l.t.Helper()
	out, errOut, code := l.run(i, args...)
	if code != 0 {
		l.t.Fatalf("k8s-master %v on m%d: exit %d\n%s%s", args, i, code, out, errOut)
	}
	return out
}

// kubectl runs kubectl from the client namespace against master i's
// apiserver with master i's admin kubeconfig.
func (l *lab) kubectl(i int, args ...string) (string, error) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		l.t.Skip("kubectl is not installed; .ci/run installs it")
	}
	// A later --request-timeout wins: failover tests want quick failures.
	return l.kubectlWithConfig(l.kubeconfig(i), append([]string{"--server", l.apiserver(i), "--request-timeout", "10s"}, args...)...)
}

// kubectlWithConfig runs kubectl in the client namespace with a
// kubeconfig as it is (an admin kubeconfig names the VIP); on success the
// output is stdout only.
func (l *lab) kubectlWithConfig(kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", l.prefix + "c", "kubectl", "--kubeconfig", kubeconfig, "--request-timeout", "30s"}, args...)
	var stdout, stderr strings.Builder
	c := exec.CommandContext(ctx, "ip", argv...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func (l *lab) mustKubectl(i int, args ...string) string {
	l.t.Helper()
	out, err := l.kubectl(i, args...)
	if err != nil {
		l.t.Fatalf("kubectl %v via m%d: %v\n%s", args, i, err, out)
	}
	return out
}

// statusJSON is the part of `status --output json` tests read.
type statusJSON struct {
	Members []struct {
		Name           string `json:"name"`
		Learner        bool   `json:"learner"`
		Leader         bool   `json:"leader"`
		Healthy        bool   `json:"healthy"`
		APIServerReady bool   `json:"apiserverReady"`
		// RaftIndex and RaftAppliedIndex tell whether a member caught up.
		RaftIndex        uint64 `json:"raftIndex"`
		RaftAppliedIndex uint64 `json:"raftAppliedIndex"`
		Versions         struct {
			Release    string `json:"release"`
			Kubernetes string `json:"kubernetes"`
			Etcd       string `json:"etcd"`
		} `json:"versions"`
	} `json:"members"`
	Mixed             bool     `json:"mixed"`
	Upgrade           string   `json:"upgrade"`
	Voters            int      `json:"voters"`
	HealthyVoters     int      `json:"healthyVoters"`
	Quorum            int      `json:"quorum"`
	FailuresTolerated int      `json:"failuresTolerated"`
	Warnings          []string `json:"warnings"`
}

func (l *lab) status(i int) statusJSON {
	l.t.Helper()
	out := l.mustRun(i, "status", "--data-dir", l.dataDir(i), "--output", "json")
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		l.t.Fatalf("status output: %v\n%s", err, out)
	}
	return s
}

func (s statusJSON) Learners() int {
	n := 0
	for _, m := range s.Members {
		if m.Learner {
			n++
		}
	}
	return n
}

func (s statusJSON) names() string {
	var n []string
	for _, m := range s.Members {
		role := "voter"
		if m.Learner {
			role = "learner"
		}
		health := "healthy"
		if !m.Healthy {
			health = "down"
		}
		n = append(n, m.Name+"/"+role+"/"+health)
	}
	return strings.Join(n, ",")
}
