package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecretsKey rotates the secrets-encryption key of a 3-master cluster
// holding 5000 Secrets while a client reads, patches, creates and deletes
// Secrets through the VIP: the first run stops after the new key became
// primary (the test hook), a master that does not hold the VIP is killed,
// and a rerun waits for it, resumes and finishes once it is back; from
// then on a second client also works on each master that stays up by its
// own address. Then no request failed, every raw etcd value carries the
// new key, the old key is in no master's configuration file, status shows
// the new key alone, and a master that joins afterwards reads every Secret.
func TestSecretsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	l := newLab(t, 4)
	tool := buildTool(t, "secretsload")
	var ms [5]*master
	ms[1] = l.start(1, "init", vipInitFlags...)
	ms[1].waitReady(2 * time.Minute)
	data, err := os.ReadFile(filepath.Join(l.dataDir(1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	ms[2] = l.start(2, "join", "--token", token)
	ms[3] = l.start(3, "join", "--token", token)
	ms[2].waitReady(4 * time.Minute)
	ms[3].waitReady(4 * time.Minute)

	// The admin kubeconfig names the VIP.
	kc := l.kubeconfig(1)
	const n = 5000
	t0 := time.Now()
	if out, err := exec.Command("ip", "netns", "exec", l.prefix+"c", tool, "seed", "-kubeconfig", kc, "-n", strconv.Itoa(n)).CombinedOutput(); err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	t.Logf("seeded %d Secrets in %.1f s", n, time.Since(t0).Seconds())
	before := rawEnvelopes(t, l, tool)
	if len(before) != 1 || before["k8s:enc:secretbox:v1:key1:"] < n {
		t.Fatalf("before the rotation the Secrets are stored as %v, want key1 only", before)
	}

	load := startSecretsLoad(t, l, tool, kc, n)
	time.Sleep(3 * time.Second)

	// First run: stopped right after phase 2 was recorded.
	out, stderr, code := rotateKey(t, l, 1, 2*time.Minute, "K8S_MASTER_TEST_ROTATE_STOP_AFTER=new-key-primary")
	if code == 0 || !strings.Contains(stderr, "stopped by the test hook after phase new-key-primary") {
		t.Fatalf("the hooked run: exit %d\n%s%s", code, out, stderr)
	}
	st := secretsStatus(t, l, 1)
	if st.SecretsEncryption.Rotation == nil || st.SecretsEncryption.Rotation.Phase != "new-key-primary" || st.SecretsEncryption.Primary != "key2" {
		t.Fatalf("status after the hooked run: %+v", st.SecretsEncryption)
	}

	// Kill a master that neither holds the VIP (the client's requests keep
	// their path) nor leads etcd (a leader's crash fails the writes in
	// flight in any etcd cluster, a fault the chaos lab covers; here the
	// question is whether the rotation survives a lost master), then
	// rerun: it waits for that master to come back.
	victim := 0
	eventually(t, time.Minute, "a master that neither holds the VIP nor leads etcd", func() error {
		vs, err := vipStatus(l, 1)
		if err != nil {
			return err
		}
		busy := map[string]bool{}
		if vs.VIP != nil {
			busy[vs.VIP.Holder] = true
		}
		for _, m := range vs.Members {
			if m.Leader {
				busy[m.Name] = true
			}
		}
		for i := 3; i >= 1; i-- {
			if !busy[fmt.Sprintf("m%d", i)] {
				victim = i
				return nil
			}
		}
		return fmt.Errorf("VIP holder and etcd leader: %v", busy)
	})
	t.Logf("killing m%d", victim)
	// Besides the VIP, every master that stays up serves reads and writes
	// on its own address from here to the end: none may meet a Secret it
	// cannot decrypt.
	var direct []string
	for i := 1; i <= 3; i++ {
		if i != victim {
			direct = append(direct, l.apiserver(i))
		}
	}
	directLoad := startSecretsLoad(t, l, tool, kc, n, "-servers", strings.Join(direct, ","))
	ms[victim].cmd.Process.Kill()
	<-ms[victim].exited
	rerun := startRotateKey(t, l, 1)
	eventually(t, 2*time.Minute, "the rerun waits for the killed master", func() error {
		if s := rerun.stdout.String(); !strings.Contains(s, fmt.Sprintf("waiting for m%d", victim)) {
			return fmt.Errorf("stdout so far:\n%s", s)
		}
		return nil
	})
	ms[victim] = l.start(victim, "start")
	ms[victim].waitReady(4 * time.Minute)
	select {
	case <-rerun.exited:
	case <-time.After(4 * time.Minute):
		t.Fatalf("the rerun did not finish:\n%s", rerun.stdout.String())
	}
	rout := rerun.stdout.String()
	t.Logf("rerun output:\n%s", rout)
	if rerun.exitCode() != 0 || !strings.Contains(rout, "resuming the rotation from key1 to key2") || !strings.Contains(rout, "done: key2 is the only key") {
		t.Fatalf("the rerun: exit %d\n%s%s", rerun.exitCode(), rout, rerun.stderr.String())
	}
	m := regexp.MustCompile(`rewrote (\d+) objects in ([0-9.]+) s \((\d+)/s\); verified (\d+) under key2`).FindStringSubmatch(rout)
	if m == nil {
		t.Fatalf("no rewrite figure in:\n%s", rout)
	}
	rewritten, _ := strconv.Atoi(m[1])
	rate, _ := strconv.Atoi(m[3])
	verified, _ := strconv.Atoi(m[4])
	t.Logf("FIGURE re-encryption: %d objects in %s s, %d Secrets/s; %d verified", rewritten, m[2], rate, verified)
	// The load's own patches and creates meanwhile store some Secrets
	// under key2 before the rewrite reaches them.
	if verified < n || rewritten < n/2 {
		t.Errorf("rewrote %d and verified %d objects, want all %d seeded verified", rewritten, verified, n)
	}
	if rate < 500 {
		t.Errorf("re-encryption rate %d/s, want at least 500/s", rate)
	}

	for _, ld := range []struct {
		what string
		l    *secretsLoad
	}{{"through the VIP", load}, {"on " + strings.Join(direct, " and "), directLoad}} {
		sum := ld.l.stop(t)
		t.Logf("FIGURE client requests during the rotation %s: %d ok, %d failed", ld.what, sum.OK, sum.Failed)
		if sum.Failed != 0 || sum.OK < 100 {
			t.Errorf("client %s: %d ok, %d failed: %v", ld.what, sum.OK, sum.Failed, sum.Errors)
		}
	}

	after := rawEnvelopes(t, l, tool)
	if len(after) != 1 || after["k8s:enc:secretbox:v1:key2:"] < n {
		t.Errorf("after the rotation the Secrets are stored as %v, want key2 only", after)
	}
	for i := 1; i <= 3; i++ {
		b, err := os.ReadFile(filepath.Join(l.dataDir(i), "encryption-config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); strings.Contains(s, "name: key1") || !strings.Contains(s, "name: key2") {
			t.Errorf("m%d's encryption configuration:\n%s", i, s)
		}
	}
	// A master that joins now runs key2 alone and decrypts every Secret
	// (its apiserver's watch cache lists them all from etcd).
	ms[4] = l.start(4, "join", "--token", token)
	ms[4].waitReady(4 * time.Minute)
	if b, err := os.ReadFile(filepath.Join(l.dataDir(4), "encryption-config.yaml")); err != nil || strings.Contains(string(b), "name: key1") || !strings.Contains(string(b), "name: key2") {
		t.Errorf("m4's encryption configuration: %v\n%s", err, b)
	}
	names := l.mustKubectl(4, "get", "secrets", "-n", "default", "-o", "name")
	if got := len(regexp.MustCompile(`(?m)^secret/secretsload-\d{5}$`).FindAllString(names, -1)); got != n {
		t.Errorf("m4 lists %d of the %d seeded Secrets", got, n)
	}
	if out := l.mustKubectl(4, "get", "secret", "secretsload-04999", "-o", "jsonpath={.data.v}"); out != "c2VjcmV0c2xvYWQtMDQ5OTk=" {
		t.Errorf("secretsload-04999 reads %q through m4", out)
	}
	eventually(t, 30*time.Second, "status shows key2 on every master", func() error {
		st := secretsStatus(t, l, 3)
		e := st.SecretsEncryption
		if e.Primary != "key2" || !slices.Equal(e.Keys, []string{"key2"}) || e.Rotation != nil || e.LastRotated == "" || len(e.Masters) != 4 {
			return fmt.Errorf("%+v", e)
		}
		for _, m := range e.Masters {
			if !m.Current {
				return fmt.Errorf("%s runs %v", m.Name, m.Keys)
			}
		}
		return nil
	})
	if out := l.mustRun(2, "status", "--data-dir", l.dataDir(2)); !strings.Contains(out, "secrets encryption: key key2 (keys [key2]); last rotated ") {
		t.Errorf("status does not show the new key:\n%s", out)
	}
	// A Secret written through the API now is stored under key2 too, and
	// every seeded one reads back (the load checked their data all along).
	l.mustKubectl(3, "create", "secret", "generic", "after-rotation", "--from-literal=k=v")
	if out := l.mustKubectl(2, "get", "secret", "after-rotation", "-o", "jsonpath={.data.k}"); out != "dg==" {
		t.Fatalf("read back: %q", out)
	}
}

// secretsLoad is a secretsload run in the client namespace.
type secretsLoad struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	done     chan error
}

type loadSummary struct {
	OK     int64    `json:"ok"`
	Failed int64    `json:"failed"`
	Errors []string `json:"errors"`
}

func startSecretsLoad(t *testing.T, l *lab, tool, kubeconfig string, n int, args ...string) *secretsLoad {
	t.Helper()
	ld := &secretsLoad{done: make(chan error, 1)}
	ld.cmd = exec.Command("ip", append([]string{"netns", "exec", l.prefix + "c", tool, "run", "-kubeconfig", kubeconfig, "-n", strconv.Itoa(n)}, args...)...)
	ld.cmd.Stdout, ld.cmd.Stderr = &ld.out, &ld.err
	if err := ld.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { ld.done <- ld.cmd.Wait() }()
	t.Cleanup(func() {
		if ld.cmd.ProcessState == nil {
			ld.cmd.Process.Kill()
		}
	})
	return ld
}

// stop ends the load and returns its summary.
func (ld *secretsLoad) stop(t *testing.T) loadSummary {
	t.Helper()
	ld.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-ld.done; err != nil {
		t.Fatalf("load client: %v\n%s", err, ld.err.String())
	}
	var sum loadSummary
	if err := json.Unmarshal(ld.out.Bytes(), &sum); err != nil {
		t.Fatalf("load summary: %v\n%s", err, ld.out.String())
	}
	return sum
}

type secretsStatusJSON struct {
	vipStatusJSON
	SecretsEncryption struct {
		Primary     string   `json:"primary"`
		Keys        []string `json:"keys"`
		LastRotated string   `json:"lastRotated"`
		Rotation    *struct {
			Phase string `json:"phase"`
		} `json:"rotation"`
		Masters []struct {
			Name    string   `json:"name"`
			Keys    []string `json:"keys"`
			Current bool     `json:"current"`
		} `json:"masters"`
	} `json:"secretsEncryption"`
}

func secretsStatus(t *testing.T, l *lab, i int) secretsStatusJSON {
	t.Helper()
	out := l.mustRun(i, "status", "--data-dir", l.dataDir(i), "--output", "json")
	var s secretsStatusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return s
}

// rawEnvelopes counts the raw etcd values of Secrets by envelope prefix,
// read on m1 with its etcd client certificate.
func rawEnvelopes(t *testing.T, l *lab, tool string) map[string]int {
	t.Helper()
	out, err := l.cmd("run", "1", tool, "raw", "-data-dir", l.dataDir(1)).Output()
	if err != nil {
		t.Fatalf("raw etcd values: %v", err)
	}
	var counts map[string]int
	if err := json.Unmarshal(out, &counts); err != nil {
		t.Fatalf("raw etcd values: %v\n%s", err, out)
	}
	return counts
}

// rotateKey runs secrets rotate-key on master i with extra environment.
func rotateKey(t *testing.T, l *lab, i int, timeout time.Duration, env ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := l.cmdContext(ctx, "run", strconv.Itoa(i), masterBin, "secrets", "rotate-key", "--data-dir", l.dataDir(i))
	c.Env = append(c.Env, env...)
	var o, e strings.Builder
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("secrets rotate-key on m%d: %v", i, err)
	}
	return o.String(), e.String(), 0
}

// startRotateKey runs secrets rotate-key on master i in the background.
func startRotateKey(t *testing.T, l *lab, i int) *master {
	t.Helper()
	return startProcess(t, fmt.Sprintf("m%d secrets rotate-key", i), l.dataDir(i), l.cmd("run", strconv.Itoa(i), masterBin, "secrets", "rotate-key", "--data-dir", l.dataDir(i), "--wait-timeout", "5m"))
}
