package test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// certLab is three masters with a VIP in a netns lab, shared by the
// certificate tests: they renew and rotate credentials under a client
// load and check that nothing restarts.
type certLab struct {
	*lab
	ms   map[int]*master
	pids map[int]int
	load string // steadyload binary
}

func startCertLab(t *testing.T) *certLab {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("the certificate lab reads served certificates with openssl")
	}
	c := &certLab{lab: newLab(t, 3), ms: map[int]*master{}, pids: map[int]int{}, load: buildTool(t, "steadyload")}
	c.ms[1] = c.start(1, "init", vipInitFlags...)
	c.ms[1].waitReady(2 * time.Minute)
	data, err := os.ReadFile(filepath.Join(c.dataDir(1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	c.ms[2] = c.start(2, "join", "--token", token)
	c.ms[2].waitReady(4 * time.Minute)
	c.ms[3] = c.start(3, "join", "--token", token)
	c.ms[3].waitReady(4 * time.Minute)
	waitHealthy(t, c.lab, 1)
	for i, m := range c.ms {
		c.pids[i] = m.cmd.Process.Pid
	}
	return c
}

// checkSamePIDs fails the test when a master's process is gone or ran its
// start-up again (a restart in place would print "ready in" twice).
func (c *certLab) checkSamePIDs(t *testing.T, except ...int) {
	t.Helper()
	for i, m := range c.ms {
		if contains(except, i) {
			continue
		}
		if !m.running() || m.cmd.Process.Pid != c.pids[i] {
			t.Errorf("m%d: process %d exited (%v); a credential change must not restart a master", i, c.pids[i], m.exitErr)
			continue
		}
		if n := strings.Count(m.stdout.String(), "\nready in "); n != 1 {
			t.Errorf("m%d printed \"ready in\" %d times: it started again", i, n)
		}
	}
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// loadClient is a steadyload run in the client namespace through the VIP.
type loadClient struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan error
}

// startLoad runs steadyload with kubeconfig (copied now, so later rewrites
// of the file do not change what this client holds) for d at rate
// requests a second; fresh: a TLS handshake for every request.
func (c *certLab) startLoad(t *testing.T, name, kubeconfig string, rate int, d time.Duration, fresh bool) *loadClient {
	t.Helper()
	kc := filepath.Join(c.dir, name+".kubeconfig")
	if err := os.WriteFile(kc, mustRead(t, kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	lc := &loadClient{name: name, log: filepath.Join(c.dir, name+".log"), done: make(chan error, 1)}
	f, err := os.Create(lc.log)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", c.prefix + "c", c.load, "run", "-kubeconfig", kc, "-rate", strconv.Itoa(rate), "-duration", d.String(), "-keys", "5", "-timeout", "10s"}
	if fresh {
		args = append(args, "-fresh")
	}
	lc.cmd = exec.Command("ip", args...)
	var stderr syncBuffer
	lc.cmd.Stdout, lc.cmd.Stderr = f, &stderr
	if err := lc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := lc.cmd.Wait()
		f.Close()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		lc.done <- err
	}()
	t.Cleanup(func() {
		if lc.cmd.ProcessState == nil {
			lc.cmd.Process.Signal(syscall.SIGKILL)
		}
	})
	return lc
}

// wait waits for the load to end and returns its counts.
func (lc *loadClient) wait(t *testing.T, timeout time.Duration) (ok, failed int, firstFail string) {
	t.Helper()
	select {
	case err := <-lc.done:
		if err != nil {
			t.Fatalf("load %s: %v", lc.name, err)
		}
	case <-time.After(timeout):
		t.Fatalf("load %s still runs after %s", lc.name, timeout)
	}
	f, err := os.Open(lc.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) != 3 {
			continue
		}
		if fields[1] == "ok" {
			ok++
		} else {
			failed++
			if firstFail == "" {
				ns, _ := strconv.ParseInt(fields[0], 10, 64)
				firstFail = time.Unix(0, ns).Format(clock)
			}
		}
	}
	return ok, failed, firstFail
}

// servedSerial is the serial of the certificate master i serves on port,
// read from the client namespace; clientPair (cert and key files) is
// presented when the port asks for one (etcd's).
func (c *certLab) servedSerial(i, port int, clientPair ...string) (string, error) {
	auth := ""
	if len(clientPair) == 2 {
		auth = fmt.Sprintf("-cert %q -key %q", clientPair[0], clientPair[1])
	}
	script := fmt.Sprintf("openssl s_client -connect %s:%d %s </dev/null 2>/dev/null | openssl x509 -noout -serial", c.addr(i), port, auth)
	out, err := exec.Command("ip", "netns", "exec", c.prefix+"c", "sh", "-c", script).CombinedOutput()
	serial := strings.TrimPrefix(strings.TrimSpace(string(out)), "serial=")
	if err != nil || serial == "" {
		return "", fmt.Errorf("no certificate from %s:%d: %v %s", c.addr(i), port, err, out)
	}
	return serial, nil
}

// servedSerials reads every TLS port of every master: apiserver, etcd
// client and peer, join service.
func (c *certLab) servedSerials(t *testing.T) map[string]string {
	t.Helper()
	pki := filepath.Join(c.dataDir(1), "pki")
	etcdPair := []string{filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key")}
	out := map[string]string{}
	for i := 1; i <= 3; i++ {
		for _, p := range []struct {
			name string
			port int
			etcd bool
		}{{"apiserver", 6443, false}, {"etcd-client", 2379, true}, {"etcd-peer", 2380, true}, {"join", 9443, false}} {
			var pair []string
			if p.etcd {
				pair = etcdPair
			}
			key := fmt.Sprintf("m%d/%s", i, p.name)
			var s string
			eventually(t, 20*time.Second, "read "+key, func() error {
				var err error
				s, err = c.servedSerial(i, p.port, pair...)
				return err
			})
			out[key] = s
		}
	}
	return out
}

// TestCertRenewal: leaves that last six minutes, checked every five
// seconds and renewed within 5m15s of expiry, so every master renews all
// of them about every 45 s. Two clients read and write through the VIP the
// whole time, one on a kept connection and one with a handshake per
// request; none of their requests may fail, every TLS port of every master
// must serve new certificates twice, the etcd members stay healthy and no
// master restarts.
func TestCertRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed; .ci/run installs it")
	}
	t.Setenv("K8S_MASTER_TEST_LEAF_VALIDITY", "6m")
	t.Setenv("K8S_MASTER_TEST_RENEW_BEFORE", "5m15s")
	t.Setenv("K8S_MASTER_TEST_RENEW_INTERVAL", "5s")
	c := startCertLab(t)

	first := c.servedSerials(t)
	// The admin certificate the clients hold lasts six minutes: long
	// enough for the run, and renewed under them on the masters.
	const loadFor = 150 * time.Second
	kept := c.startLoad(t, "kept", c.kubeconfig(1), 20, loadFor, false)
	fresh := c.startLoad(t, "fresh", c.kubeconfig(1), 5, loadFor, true)
	start := time.Now()

	// Every port serves a new certificate, then another: two renewals.
	seen := map[string]map[string]bool{}
	for k, s := range first {
		seen[k] = map[string]bool{s: true}
	}
	healthChecks := 0
	eventually(t, loadFor, "every port of every master renewed twice", func() error {
		if time.Since(start) > time.Duration(healthChecks)*10*time.Second {
			healthChecks++
			s, err := vipStatus(c.lab, 1+healthChecks%3)
			if err != nil {
				return err
			}
			if s.HealthyVoters != 3 {
				t.Errorf("at %.0f s: etcd members %s, want 3 healthy voters throughout", time.Since(start).Seconds(), s.names())
			}
		}
		var behind []string
		for k := range first {
			i, _ := strconv.Atoi(k[1:2])
			port := map[string]int{"apiserver": 6443, "etcd-client": 2379, "etcd-peer": 2380, "join": 9443}[k[3:]]
			var pair []string
			if strings.HasPrefix(k[3:], "etcd") {
				pki := filepath.Join(c.dataDir(1), "pki")
				pair = []string{filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key")}
			}
			if len(seen[k]) >= 3 {
				continue
			}
			if s, err := c.servedSerial(i, port, pair...); err == nil {
				seen[k][s] = true
			}
			if len(seen[k]) < 3 {
				behind = append(behind, k)
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("not yet renewed twice: %v", behind)
		}
		return nil
	})
	t.Logf("every port of the 3 masters served 3 certificates (2 renewals) within %.0f s", time.Since(start).Seconds())

	for _, lc := range []*loadClient{kept, fresh} {
		ok, failed, firstFail := lc.wait(t, loadFor+time.Minute)
		t.Logf("client %s: %d requests ok, %d failed", lc.name, ok, failed)
		if failed > 0 {
			t.Errorf("client %s: %d requests failed (first at %s); renewal must fail none", lc.name, failed, firstFail)
		}
		if ok < 100 {
			t.Errorf("client %s made only %d requests", lc.name, ok)
		}
	}
	for i, m := range c.ms {
		if !strings.Contains(m.stdout.String(), "renewed 12 leaf certificates") {
			t.Errorf("m%d never logged a renewal:\n%s", i, m.stdout.String())
		}
	}
	if s, err := vipStatus(c.lab, 2); err != nil || s.HealthyVoters != 3 {
		t.Errorf("after the renewals: %v %+v", err, s)
	}
	c.checkSamePIDs(t)
}
