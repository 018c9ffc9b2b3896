package test

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/pkg/pki"
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

// startCertLab starts masters m1..m3 with a VIP on a lab of hosts hosts
// (the others stay free for later joins).
func startCertLab(t *testing.T, hosts int) *certLab {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("the certificate lab reads served certificates with openssl")
	}
	c := &certLab{lab: newLab(t, hosts), ms: map[int]*master{}, pids: map[int]int{}, load: buildTool(t, "steadyload")}
	// The lab's image repository: TestCertRotation runs a worker, whose
	// add-on pods must find their images whichever master leads.
	c.ms[1] = c.start(1, "init", append(slices.Clone(vipInitFlags), labAddonFlags...)...)
	c.ms[1].waitReady(2 * time.Minute)
	data, err := os.ReadFile(filepath.Join(c.dataDir(1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	c.ms[2] = c.start(2, "join", append([]string{"--token", token}, labAddonFlags...)...)
	c.ms[2].waitReady(4 * time.Minute)
	c.ms[3] = c.start(3, "join", append([]string{"--token", token}, labAddonFlags...)...)
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

// etcdClientPair issues a client certificate of the etcd CA in dir (with
// its key, read now) into the lab directory and returns its files.
func (c *certLab) etcdClientPair(t *testing.T, name, dir string) []string {
	t.Helper()
	ca, err := pki.LoadCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueLeaf(pki.LeafSpec{Name: name, CommonName: name, Usage: pki.ClientAuth}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair := []string{filepath.Join(c.dir, name+".crt"), filepath.Join(c.dir, name+".key")}
	if err := os.WriteFile(pair[0], certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pair[1], keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return pair
}

// etcdHealth asks master i's etcd client port for /health from the client
// namespace, verifying it with caFile and presenting pair; it returns the
// HTTP status, "000" when the handshake fails.
func (c *certLab) etcdHealth(i int, caFile string, pair []string) string {
	out, _ := exec.Command("ip", "netns", "exec", c.prefix+"c", "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
		"--cacert", caFile, "--cert", pair[0], "--key", pair[1], fmt.Sprintf("https://%s:2379/health", c.addr(i))).Output()
	return strings.TrimSpace(string(out))
}

// verifiedBy checks that certPEM is signed by caPEM.
func verifiedBy(certPEM, caPEM []byte) error {
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		return err
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return err
	}
	return cert.CheckSignatureFrom(ca)
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
	c := startCertLab(t, 3)

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

// stop ends the load now; wait then reads its log.
func (lc *loadClient) stop() { lc.cmd.Process.Signal(syscall.SIGTERM) }

// caRotationJSON is the caRotation part of `status --output json`.
type caRotationJSON struct {
	CARotation *struct {
		ID         string            `json:"id"`
		Phase      string            `json:"phase"`
		WindowEnds time.Time         `json:"windowEnds"`
		Masters    map[string]string `json:"masters"`
	} `json:"caRotation"`
}

func (c *certLab) caRotation(t *testing.T, i int) caRotationJSON {
	t.Helper()
	var s caRotationJSON
	out := c.mustRun(i, "status", "--data-dir", c.dataDir(i), "--output", "json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return s
}

// rotateCA runs certs rotate-ca on m1; stopAfter sets the test hook that
// ends the command after that phase ("" runs it to the end).
func (c *certLab) rotateCA(t *testing.T, stopAfter string, args ...string) string {
	t.Helper()
	t.Setenv("K8S_MASTER_TEST_ROTATE_CA_STOP_AFTER", stopAfter)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := c.cmdContext(ctx, append([]string{"run", "1", masterBin, "certs", "rotate-ca", "--data-dir", c.dataDir(1)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("certs rotate-ca (stop after %q): %v\n%s", stopAfter, err, out)
	}
	t.Logf("certs rotate-ca (stop after %q) took %.1f s:\n%s", stopAfter, time.Since(start).Seconds(), out)
	return string(out)
}

// kubectlReady runs kubectl get --raw /readyz through the VIP from the
// client namespace with a kubeconfig.
func (c *certLab) kubectlReady(kubeconfig string) error {
	out, err := c.kubectlWithConfig(kubeconfig, "get", "--raw", "/readyz")
	if err != nil || strings.TrimSpace(out) != "ok" {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	return nil
}

// rotationWorker is a worker that joined before a CA rotation, with a pod
// that logs.
type rotationWorker struct {
	*worker
	c           *certLab
	kubelet     *service
	containerID string
}

// probeLogs asks for the logger pod's last line every 5 s until stop
// closes: the apiserver connects to the kubelet for it, so a kubelet
// serving a certificate the apiserver does not trust yet (or the other
// way round) fails it with a certificate error. A failure is retried
// once after a second; the answer is the counts and the first
// certificate error.
func (rw *rotationWorker) probeLogs(stop <-chan struct{}) (done chan struct{}, ok, certFailed *int, first *string) {
	done, ok, certFailed, first = make(chan struct{}), new(int), new(int), new(string)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Second):
			}
			_, err := rw.c.kc("logs", "logger", "--tail", "1")
			if err != nil {
				time.Sleep(time.Second)
				_, err = rw.c.kc("logs", "logger", "--tail", "1")
			}
			switch {
			case err == nil:
				*ok++
			case strings.Contains(err.Error(), "x509") || strings.Contains(err.Error(), "certificate"):
				*certFailed++
				if *first == "" {
					*first = time.Now().Format(clock) + " " + err.Error()
				}
			}
		}
	}()
	return done, ok, certFailed, first
}

// kc runs kubectl with m1's admin kubeconfig of the moment.
func (c *certLab) kc(args ...string) (string, error) {
	out, err := c.kubectlWithConfig(c.kubeconfig(1), args...)
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// joinRotationWorker joins w1 with kubeadm join and runs a pod on it; the
// add-ons (kube-proxy, CoreDNS, the node agent) come up on it.
func (c *certLab) joinRotationWorker(t *testing.T) *rotationWorker {
	t.Helper()
	w := c.addWorker(1, workerParts(t))
	w.startContainerd()
	line := strings.TrimSpace(c.mustRun(1, "token", "create", "--worker", "--description", "rotation", "--data-dir", c.dataDir(1)))
	rw := &rotationWorker{worker: w, c: c, kubelet: w.kubeadmJoin(line)}
	if _, err := c.kc("run", "logger", "--image", labBusybox, "--restart", "Always", "--command", "--", "sh", "-c", "while true; do echo tick; sleep 2; done"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 4*time.Minute, "w1 Ready with its node agent and the logger pod running", func() error {
		if out, err := c.kc("get", "node", "w1", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); err != nil || out != "True" {
			return fmt.Errorf("w1 Ready=%q %v", out, err)
		}
		if out, err := c.kc("-n", "kube-system", "get", "ds", "k8s-master-node-agent", "-o", "jsonpath={.status.numberReady}"); err != nil || out != "1" {
			return fmt.Errorf("node agents ready: %q %v", out, err)
		}
		out, err := c.kc("get", "pod", "logger", "-o", "jsonpath={.status.containerStatuses[0].containerID}")
		if err != nil || out == "" {
			return fmt.Errorf("logger pod: %q %v", out, err)
		}
		rw.containerID = out
		return nil
	})
	return rw
}

// checkAfterRotation: the node agent brought w1's kubelet onto the new
// CA alone (kubeconfig, client CA file, client and serving certificates)
// by restarting the kubelet, and the pod ran on untouched: the Node is
// Ready, its logs come through (apiserver to kubelet with the new CA
// both ways), kube-proxy stays ready and kube-root-ca.crt holds the new
// CA.
func (rw *rotationWorker) checkAfterRotation(t *testing.T, newCA []byte) {
	t.Helper()
	c := rw.c
	eventually(t, 3*time.Minute, "w1's kubelet on the new CA alone", func() error {
		kc, err := clientcmd.LoadFromFile(filepath.Join(rw.root(), "etc/kubernetes/kubelet.conf"))
		if err != nil {
			return err
		}
		for name, cl := range kc.Clusters {
			if string(cl.CertificateAuthorityData) != string(newCA) {
				return fmt.Errorf("kubelet.conf cluster %s does not trust the new CA alone", name)
			}
		}
		if got := mustRead(t, filepath.Join(rw.root(), "etc/kubernetes/pki/ca.crt")); string(got) != string(newCA) {
			return fmt.Errorf("the kubelet's client CA file is not the new CA alone")
		}
		for _, p := range []string{"kubelet-client", "kubelet-server"} {
			if err := verifiedBy(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rw.currentCert(p).Raw}), newCA); err != nil {
				return fmt.Errorf("%s-current.pem: %v", p, err)
			}
		}
		return nil
	})
	// Restarts: for trust and clients (one, when the agent sees both at
	// once), serve (the serving certificate), drop (the kubeconfig).
	eventually(t, time.Minute, "w1's kubelet restarted by the node agent at least 3 times", func() error {
		if starts := rw.kubelet.started(); len(starts) < 4 {
			return fmt.Errorf("kubelet PIDs %v", starts)
		}
		return nil
	})
	t.Logf("w1's kubelet ran as PIDs %v (each later one a restart by the node agent)", rw.kubelet.started())
	eventually(t, 2*time.Minute, "w1 Ready, kube-proxy ready, the logger's logs", func() error {
		if out, err := c.kc("get", "node", "w1", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); err != nil || out != "True" {
			return fmt.Errorf("w1 Ready=%q %v", out, err)
		}
		if out, err := c.kc("-n", "kube-system", "get", "ds", "kube-proxy", "-o", "jsonpath={.status.numberReady}"); err != nil || out != "1" {
			return fmt.Errorf("kube-proxy ready: %q %v", out, err)
		}
		out, err := c.kc("logs", "logger", "--since", "30s")
		if err != nil || !strings.Contains(out, "tick") {
			return fmt.Errorf("logs of the logger pod: %q %v", out, err)
		}
		return nil
	})
	if id, err := c.kc("get", "pod", "logger", "-o", "jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}"); err != nil || id != rw.containerID+" 0" {
		t.Errorf("the logger pod's container after the rotation: %q %v, want %s never restarted", id, err, rw.containerID)
	}
	out, err := c.kc("get", "configmap", "kube-root-ca.crt", "-o", `jsonpath={.data.ca\.crt}`)
	if err != nil || strings.TrimSpace(out) != strings.TrimSpace(string(newCA)) {
		t.Errorf("kube-root-ca.crt in default after the rotation is not the new CA alone (%v):\n%s", err, out)
	}
}

// TestCertRotation takes 3 masters with a VIP through `certs rotate-ca`
// while clients read and write through the VIP: one holding the admin
// kubeconfig of before the rotation (until the window ends), one holding
// the new admin kubeconfig (from when it is written to the end). Neither
// may see a failed request. The command is stopped after phase trust (a
// test hook), m3 is SIGKILLed and started again, and reruns of the command
// carry the rotation on to the end. Afterwards the old admin kubeconfig is
// refused and the new one works; m1 and m2 never restarted.
func TestCertRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several control planes")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed; .ci/run installs it")
	}
	c := startCertLab(t, 4)
	w := c.joinRotationWorker(t)
	stopProbe := make(chan struct{})
	probeDone, logsOK, logsCertFailed, logsFirst := w.probeLogs(stopProbe)
	oldKC := filepath.Join(c.dir, "old-admin.kubeconfig")
	if err := os.WriteFile(oldKC, mustRead(t, c.kubeconfig(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	oldCA := mustRead(t, filepath.Join(c.dataDir(1), "pki", "ca.crt"))
	// A client certificate of the old etcd CA, made with its key: etcd
	// must refuse it after the rotation.
	oldEtcdCA := mustRead(t, filepath.Join(c.dataDir(1), "pki", "etcd", "ca.crt"))
	oldEtcdPair := c.etcdClientPair(t, "old-etcd", filepath.Join(c.dataDir(1), "pki", "etcd"))
	oldLoad := c.startLoad(t, "old-kubeconfig", oldKC, 10, time.Hour, true)

	// Phase trust, then the command "dies".
	out := c.rotateCA(t, "trust", "--window", "20s")
	if !strings.Contains(out, "phase trust: in force on every master") {
		t.Fatalf("rotate-ca output:\n%s", out)
	}
	s := c.caRotation(t, 2)
	if s.CARotation == nil || s.CARotation.Phase != "trust" || len(s.CARotation.Masters) != 3 {
		t.Fatalf("status after phase trust: %+v", s.CARotation)
	}
	for n, p := range s.CARotation.Masters {
		if p != "trust" {
			t.Errorf("status: %s applied %q, want trust", n, p)
		}
	}
	if human := c.mustRun(3, "status", "--data-dir", c.dataDir(3)); !strings.Contains(human, "CA rotation "+s.CARotation.ID+": phase trust (applied: m1 trust, m2 trust, m3 trust)") {
		t.Errorf("status does not show the rotation per master:\n%s", human)
	}

	// A master killed between phases, started again.
	c.ms[3].stop(syscall.SIGKILL, 10*time.Second)
	c.ms[3] = c.start(3, "start", labAddonFlags...)
	c.ms[3].waitReady(3 * time.Minute)
	waitHealthy(t, c.lab, 1)

	out = c.rotateCA(t, "clients")
	if !strings.Contains(out, "carrying on") || !strings.Contains(out, "phase clients: in force on every master") {
		t.Fatalf("rerun of rotate-ca output:\n%s", out)
	}
	newKC := filepath.Join(c.dir, "new-admin.kubeconfig")
	if err := os.WriteFile(newKC, mustRead(t, c.kubeconfig(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	newCA := mustRead(t, filepath.Join(c.dataDir(1), "pki", "ca.crt"))
	if string(newCA) == string(oldCA) {
		t.Fatal("phase clients: ca.crt is still the old CA")
	}
	for i := 2; i <= 3; i++ {
		if got := mustRead(t, filepath.Join(c.dataDir(i), "pki", "ca.crt")); string(got) != string(newCA) {
			t.Errorf("m%d signs with another CA than m1", i)
		}
	}
	newLoad := c.startLoad(t, "new-kubeconfig", newKC, 10, time.Hour, true)

	// A master that joins during the window gets the CAs of the phase.
	token := strings.TrimSpace(c.mustRun(1, "token", "create", "--data-dir", c.dataDir(1)))
	c.ms[4] = c.start(4, "join", append([]string{"--token", token}, labAddonFlags...)...)
	c.ms[4].waitReady(4 * time.Minute)
	eventually(t, time.Minute, "m4 applies phase clients", func() error {
		if p := c.caRotation(t, 4).CARotation.Masters["m4"]; p != "clients" {
			return fmt.Errorf("m4 applied %q", p)
		}
		return nil
	})
	for _, f := range []string{"ca-bundle.crt", "ca-old.crt", "ca.crt"} {
		if a, b := mustRead(t, filepath.Join(c.dataDir(1), "pki", f)), mustRead(t, filepath.Join(c.dataDir(4), "pki", f)); string(a) != string(b) {
			t.Errorf("m4 joined during the window with another %s than m1", f)
		}
	}
	for name, kc := range map[string]string{"old": oldKC, "new": newKC} {
		if err := c.kubectlReady(kc); err != nil {
			t.Errorf("during the window, the %s admin kubeconfig: %v", name, err)
		}
	}

	// To the end: the window (at least 5.5 minutes after phase trust),
	// serve, drop.
	done := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		os.Unsetenv("K8S_MASTER_TEST_ROTATE_CA_STOP_AFTER")
		b, err := c.cmdContext(ctx, "run", "1", masterBin, "certs", "rotate-ca", "--data-dir", c.dataDir(1)).CombinedOutput()
		if err != nil {
			b = append(b, []byte("\nERROR: "+err.Error())...)
		}
		done <- string(b)
	}()
	var windowEnds time.Time
	eventually(t, time.Minute, "status shows the end of the window", func() error {
		s := c.caRotation(t, 1)
		if s.CARotation == nil || s.CARotation.WindowEnds.IsZero() {
			return fmt.Errorf("%+v", s.CARotation)
		}
		windowEnds = s.CARotation.WindowEnds
		return nil
	})
	t.Logf("window ends at %s", windowEnds.Format(clock))
	time.Sleep(time.Until(windowEnds.Add(-5 * time.Second)))
	if err := c.kubectlReady(oldKC); err != nil {
		t.Errorf("5 s before the window ends, the old admin kubeconfig: %v", err)
	}
	oldLoad.stop()
	ok, failed, first := oldLoad.wait(t, time.Minute)
	t.Logf("client with the old admin kubeconfig, rotation start to window end: %d requests ok, %d failed", ok, failed)
	if failed > 0 || ok < 100 {
		t.Errorf("client with the old admin kubeconfig: %d ok, %d failed (first at %s); want none failed", ok, failed, first)
	}

	select {
	case out = <-done:
	case <-time.After(15 * time.Minute):
		t.Fatal("certs rotate-ca did not finish")
	}
	t.Logf("final certs rotate-ca:\n%s", out)
	if !strings.Contains(out, "done: the old cluster, front-proxy and etcd CAs are trusted nowhere") {
		t.Fatalf("the rotation did not finish")
	}
	if !strings.Contains(out, "the node agent runs on all 1 node(s)") {
		t.Errorf("rotate-ca did not say that the node agent covers the worker")
	}
	if !strings.Contains(out, "kubelets: all 1 Ready node(s) serve certificates the new CA verifies") {
		t.Errorf("rotate-ca did not check the worker's kubelet before phase drop")
	}
	time.Sleep(10 * time.Second) // the new client keeps going past the end
	newLoad.stop()
	ok, failed, first = newLoad.wait(t, time.Minute)
	t.Logf("client with the new admin kubeconfig, phase clients to the end: %d requests ok, %d failed", ok, failed)
	if failed > 0 || ok < 100 {
		t.Errorf("client with the new admin kubeconfig: %d ok, %d failed (first at %s); want none failed", ok, failed, first)
	}

	if err := c.kubectlReady(oldKC); err == nil {
		t.Error("after the rotation the old admin kubeconfig still works")
	} else {
		t.Logf("old admin kubeconfig after the rotation: %v", err)
	}
	// Its client certificate is refused too, even by a client that
	// verifies the server with the new CA (a 401: kubectl says
	// "Unauthorized" or, when discovery meets it first, "the server has
	// asked for the client to provide credentials").
	newCAFile := filepath.Join(c.dir, "new-ca.crt")
	if err := os.WriteFile(newCAFile, newCA, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.kubectlWithConfig(oldKC, "--certificate-authority", newCAFile, "get", "ns"); err == nil || !(strings.Contains(out, "Unauthorized") || strings.Contains(out, "provide credentials")) {
		t.Errorf("the old admin certificate after the rotation: %v %s, want Unauthorized", err, out)
	}
	for _, kc := range []string{newKC, c.kubeconfig(1), c.kubeconfig(3)} {
		if err := c.kubectlReady(kc); err != nil {
			t.Errorf("after the rotation, %s: %v", kc, err)
		}
	}
	for i := 1; i <= 4; i++ {
		pki := filepath.Join(c.dataDir(i), "pki")
		if got := mustRead(t, filepath.Join(pki, "ca-bundle.crt")); string(got) != string(newCA) {
			t.Errorf("m%d's trust bundle is not the new CA alone", i)
		}
		for _, f := range []string{"ca-old.crt", "ca-old.key", "ca-next.crt", "front-proxy-ca-old.crt"} {
			if _, err := os.Stat(filepath.Join(pki, f)); err == nil {
				t.Errorf("m%d still has %s", i, f)
			}
		}
	}
	// etcd: every member restarted in place onto the new etcd CA alone.
	newEtcdCA := mustRead(t, filepath.Join(c.dataDir(1), "pki", "etcd", "ca.crt"))
	if string(newEtcdCA) == string(oldEtcdCA) {
		t.Error("the etcd CA was not rotated")
	}
	for i := 1; i <= 4; i++ {
		edir := filepath.Join(c.dataDir(i), "pki", "etcd")
		if got := mustRead(t, filepath.Join(edir, "ca-bundle.crt")); string(got) != string(newEtcdCA) {
			t.Errorf("m%d's etcd trust bundle is not the new etcd CA alone", i)
		}
		for _, f := range []string{"server.crt", "peer.crt"} {
			if err := verifiedBy(mustRead(t, filepath.Join(edir, f)), newEtcdCA); err != nil {
				t.Errorf("m%d's etcd %s: %v", i, f, err)
			}
		}
	}
	newEtcdPair := c.etcdClientPair(t, "new-etcd", filepath.Join(c.dataDir(1), "pki", "etcd"))
	newEtcdCAFile := filepath.Join(c.dir, "new-etcd-ca.crt")
	if err := os.WriteFile(newEtcdCAFile, newEtcdCA, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		if code := c.etcdHealth(i, newEtcdCAFile, newEtcdPair); code != "200" {
			t.Errorf("m%d's etcd with a client certificate of the new etcd CA: %s, want 200", i, code)
		}
		if code := c.etcdHealth(i, newEtcdCAFile, oldEtcdPair); code == "200" {
			t.Errorf("m%d's etcd still accepts a client certificate of the old etcd CA", i)
		}
	}
	if s := c.caRotation(t, 3); s.CARotation == nil || s.CARotation.Phase != "done" {
		t.Errorf("status after the rotation: %+v", s.CARotation)
	}
	// Join tokens and kubeadm join lines made now pin the new CA.
	newPin := caPin(t, filepath.Join(c.dataDir(1), "pki", "ca.crt"))
	if tok := strings.TrimSpace(c.mustRun(2, "token", "create", "--data-dir", c.dataDir(2))); !strings.HasSuffix(tok, "/"+newPin) {
		t.Errorf("a master join token after the rotation: %s, want the new CA's pin %s", tok, newPin)
	}
	if line := c.mustRun(1, "token", "create", "--worker", "--data-dir", c.dataDir(1)); !strings.Contains(line, "--discovery-token-ca-cert-hash "+newPin) {
		t.Errorf("kubeadm join line after the rotation: %s, want the new CA's pin %s", line, newPin)
	}
	close(stopProbe)
	<-probeDone
	t.Logf("kubectl logs of the worker's pod every 5 s through the rotation: %d ok, %d failed on a certificate", *logsOK, *logsCertFailed)
	if *logsCertFailed > 0 || *logsOK < 20 {
		t.Errorf("kubectl logs through the rotation: %d ok, %d certificate failures (first: %s); want none failed", *logsOK, *logsCertFailed, *logsFirst)
	}
	w.checkAfterRotation(t, newCA)
	c.checkSamePIDs(t, 3, 4)
	// A master restarted after the rotation starts on the new CAs.
	c.ms[3].stop(syscall.SIGTERM, time.Minute)
	c.ms[3] = c.start(3, "start", labAddonFlags...)
	c.ms[3].waitReady(3 * time.Minute)
	eventually(t, 2*time.Minute, "4 healthy voters after m3's restart", func() error {
		s, err := vipStatus(c.lab, 3)
		if err != nil {
			return err
		}
		if s.HealthyVoters != 4 {
			return fmt.Errorf("%s", s.names())
		}
		return nil
	})
}
