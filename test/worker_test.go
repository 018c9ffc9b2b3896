package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/pki"
)

// labBusybox is the test image scripts/worker-parts.sh makes from Debian's
// busybox-static; containerd has it only because the lab imports it.
const labBusybox = "localhost/k8s-master-lab/busybox:1"

var (
	joinRounds = flag.Int("workerjoin.rounds", 0, "TestWorkerJoinBench: kubelet starts to measure (0: skip the bench)")
	joinAuth   = flag.String("workerjoin.auth", "bootstrap", "TestWorkerJoinBench: bootstrap (a kubelet with a bootstrap kubeconfig) or kubeadm (kubeadm join)")
)

// workerParts returns the directory scripts/worker-parts.sh builds kubelet,
// containerd, the CNI plugins and the images into (near-instant once
// cached); the test skips when they cannot be built here.
func workerParts(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../scripts/worker-parts.sh").CombinedOutput()
	if err != nil {
		t.Skipf("the worker parts cannot be built here (%v); scripts/worker-parts.sh said:\n%s", err, tail(string(out), 20))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// worker is a worker host of the lab (scripts/netns-lab.sh worker I).
type worker struct {
	l     *lab
	i     int
	parts string
}

func (w *worker) name() string { return fmt.Sprintf("w%d", w.i) }
func (w *worker) ip() string   { return fmt.Sprintf("10.99.0.%d", 60+w.i) }

// root is the host directory behind the worker's private /etc/kubernetes,
// /var/lib/kubelet, ... (what its mount namespace bind-mounts).
func (w *worker) root() string {
	return filepath.Join("/var/tmp", w.l.prefix+"lab", w.name(), "root")
}

func (l *lab) addWorker(i int, parts string) *worker {
	l.t.Helper()
	w := &worker{l: l, i: i, parts: parts}
	// The lab's teardown removes workers too; this one runs first, so the
	// worker's processes die before the masters they talk to.
	l.t.Cleanup(func() {
		if out, err := l.cmd("wrm", strconv.Itoa(i)).CombinedOutput(); err != nil {
			l.t.Logf("wrm %d: %v %s", i, err, out)
		}
	})
	if out, err := l.cmd("worker", strconv.Itoa(i), parts).CombinedOutput(); err != nil {
		l.t.Fatalf("lab worker %d: %v\n%s", i, err, out)
	}
	return w
}

// run runs a short command on the worker.
func (w *worker) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := w.l.cmdContext(ctx, append([]string{"wrun", strconv.Itoa(w.i)}, args...)...).CombinedOutput()
	return string(out), err
}

// daemon is a long-running process on a worker, its output in a log file.
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (w *worker) start(name string, args ...string) *daemon {
	t := w.l.t
	t.Helper()
	d := &daemon{log: filepath.Join(w.l.dir, fmt.Sprintf("%s-%s-%d.log", w.name(), name, time.Now().UnixNano())), done: make(chan struct{})}
	f, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = w.l.cmd(append([]string{"wrun", strconv.Itoa(w.i)}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s on %s: %v", name, w.name(), err)
	}
	go func() {
		d.cmd.Wait()
		f.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			data, _ := os.ReadFile(d.log)
			t.Logf("%s on %s, last lines of %s:\n%s", name, w.name(), d.log, tail(string(data), 30))
		}
	})
	return d
}

func (d *daemon) stop() {
	select {
	case <-d.done:
	default:
		d.cmd.Process.Kill()
		<-d.done
	}
}

// service is a long-running process on a worker that is started again
// 1 s after it exits, as systemd's Restart=always does for kubeadm's
// kubelet.service (the node agent restarts the kubelet by ending it).
type service struct {
	log  string
	done chan struct{}

	mu      sync.Mutex
	cur     *exec.Cmd
	pids    []int
	stopped bool
}

func (w *worker) startService(name string, args ...string) *service {
	t := w.l.t
	t.Helper()
	s := &service{log: filepath.Join(w.l.dir, fmt.Sprintf("%s-%s-%d.log", w.name(), name, time.Now().UnixNano())), done: make(chan struct{})}
	f, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopped {
			return nil
		}
		cmd := w.l.cmd(append([]string{"wrun", strconv.Itoa(w.i)}, args...)...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(f, "\n[lab] start %s: %v\n", name, err)
			return nil
		}
		s.cur, s.pids = cmd, append(s.pids, cmd.Process.Pid)
		return cmd
	}
	if start() == nil {
		t.Fatalf("start %s on %s: see %s", name, w.name(), s.log)
	}
	go func() {
		defer close(s.done)
		defer f.Close()
		for cmd := s.cur; cmd != nil; cmd = start() {
			err := cmd.Wait()
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return
			}
			fmt.Fprintf(f, "\n[lab] %s exited (%v); starting it again in 1 s\n", name, err)
			time.Sleep(time.Second)
		}
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			data, _ := os.ReadFile(s.log)
			t.Logf("%s on %s, last lines of %s:\n%s", name, w.name(), s.log, tail(string(data), 30))
		}
	})
	return s
}

// stop ends the process and its restarts.
func (s *service) stop() {
	s.mu.Lock()
	s.stopped = true
	if s.cur != nil {
		s.cur.Process.Kill()
	}
	s.mu.Unlock()
	<-s.done
}

// started is the PIDs of every start so far.
func (s *service) started() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pids)
}

var agentImage struct {
	once sync.Once
	path string
	err  error
}

// nodeAgentImage is the node agent's image archive, made once per test
// run from the binary under test with `node-agent image` (as a user
// makes it for workers without a registry).
func nodeAgentImage(t *testing.T) string {
	t.Helper()
	agentImage.once.Do(func() {
		dir, err := os.MkdirTemp("", "k8s-master-agent-image-")
		if err != nil {
			agentImage.err = err
			return
		}
		agentImage.path = filepath.Join(dir, "k8s-master.tar")
		out, err := exec.Command(masterBin, "node-agent", "image", "-o", agentImage.path, "--image-repository", labRepository).CombinedOutput()
		if err != nil {
			agentImage.err = fmt.Errorf("node-agent image: %v\n%s", err, out)
		}
	})
	if agentImage.err != nil {
		t.Fatal(agentImage.err)
	}
	return agentImage.path
}

// startContainerd starts containerd and imports the lab's images into the
// namespace the CRI plugin uses.
func (w *worker) startContainerd() {
	t := w.l.t
	t.Helper()
	d := w.start("containerd", "containerd")
	eventually(t, time.Minute, "containerd on "+w.name()+" answers", func() error {
		select {
		case <-d.done:
			data, _ := os.ReadFile(d.log)
			t.Fatalf("containerd on %s exited:\n%s", w.name(), tail(string(data), 30))
		default:
		}
		out, err := w.run("ctr", "version")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	imgs := []string{}
	for _, img := range labImages(t, w.parts) {
		imgs = append(imgs, filepath.Join(w.parts, "images", img))
	}
	for _, img := range append(imgs, nodeAgentImage(t)) {
		if out, err := w.run("ctr", "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", img); err != nil {
			t.Fatalf("import %s on %s: %v\n%s", img, w.name(), err, out)
		}
	}
}

// writeFile writes into the worker's private directories.
func (w *worker) writeFile(path string, data []byte, mode os.FileMode) {
	w.l.t.Helper()
	p := filepath.Join(w.root(), path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.l.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		w.l.t.Fatal(err)
	}
}

// workerToken makes a worker token on m1 with k8s-master token create
// --worker and returns the kubeadm join line it prints and the token in it.
func (l *workerLab) workerToken(args ...string) (line, token string) {
	l.t.Helper()
	line = strings.TrimSpace(l.mustRun(1, append([]string{"token", "create", "--worker", "--data-dir", l.dataDir(1)}, args...)...))
	f := strings.Fields(line)
	i := slices.Index(f, "--token")
	if len(f) < 3 || f[0] != "kubeadm" || f[1] != "join" || i < 0 || i+1 >= len(f) || !slices.Contains(f, "--discovery-token-ca-cert-hash") {
		l.t.Fatalf("token create --worker printed %q, want a kubeadm join line with --token and --discovery-token-ca-cert-hash", line)
	}
	return line, f[i+1]
}

// writeBootstrapKubeconfig does what a user joining without kubeadm does:
// the cluster CA in /etc/kubernetes/pki/ca.crt (the kubelet's clientCAFile)
// and the bootstrap kubeconfig k8s-master worker kubeconfig writes for the
// token, so that the kubelet asks for its client certificate itself.
func (w *worker) writeBootstrapKubeconfig(token string) {
	t := w.l.t
	t.Helper()
	caPEM, err := os.ReadFile(pki.CertPath(filepath.Join(w.l.dataDir(1), "pki"), pki.ClusterCA))
	if err != nil {
		t.Fatal(err)
	}
	w.writeFile("etc/kubernetes/pki/ca.crt", caPEM, 0o644)
	w.writeFile("etc/kubernetes/bootstrap-kubelet.conf", []byte(w.l.mustRun(1, "worker", "kubeconfig", "--token", token, "--data-dir", w.l.dataDir(1))), 0o600)
}

// startKubelet runs the kubelet with the lab's config and the bootstrap
// kubeconfig (used until it has a client certificate of its own).
func (w *worker) startKubelet() *service {
	return w.startService("kubelet", "kubelet", "--config=/var/lib/kubelet/config.yaml", "--kubeconfig=/etc/kubernetes/kubelet.conf",
		"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf", "--node-ip="+w.ip())
}

// kubeadmJoinArgs are what the lab adds to the printed kubeadm join line:
// containerd's socket (kubeadm would otherwise ask the CRI which of the
// known sockets to use), the lab's kubelet patch (cgroup v1 allowed, the
// cgroupfs driver, a cgroup root per worker; scripts/netns-lab.sh), and
// the one preflight error only this machine raises: SystemVerification
// (the kernel runs cgroup v1, which kubeadm's system check refuses for
// kubelet 1.35+ unless skipped; the patch sets failCgroupV1: false).
var kubeadmJoinArgs = []string{"--cri-socket", "unix:///run/containerd/containerd.sock", "--patches", "/etc/kubernetes/lab-patches",
	"--ignore-preflight-errors", "SystemVerification"}

// kubeadmJoin runs the join line on the worker the way kubeadm's systemd
// drop-in would, without systemd: kubeadm's kubelet-start phase writes
// /var/lib/kubelet/config.yaml, /var/lib/kubelet/kubeadm-flags.env and
// /etc/kubernetes/bootstrap-kubelet.conf, finds no init system to restart
// the kubelet with, and waits for the kubelet's healthz and TLS bootstrap;
// the lab starts the kubelet with the flags of kubeadm's drop-in
// (10-kubeadm.conf) and of kubeadm-flags.env. It returns the kubelet once
// kubeadm join has succeeded.
func (w *worker) kubeadmJoin(line string) *service {
	t := w.l.t
	t.Helper()
	args := append(strings.Fields(line), kubeadmJoinArgs...)
	join := w.start("kubeadm-join", args...)
	flagsFile := filepath.Join(w.root(), "var/lib/kubelet/kubeadm-flags.env")
	var flags []string
	eventually(t, time.Minute, "kubeadm join on "+w.name()+" writes kubeadm-flags.env", func() error {
		select {
		case <-join.done:
			data, _ := os.ReadFile(join.log)
			t.Fatalf("kubeadm join on %s exited before the kubelet-start phase:\n%s", w.name(), tail(string(data), 30))
		default:
		}
		data, err := os.ReadFile(flagsFile)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "KUBELET_KUBEADM_ARGS="); ok {
				flags = strings.Fields(strings.Trim(v, `"`))
				return nil
			}
		}
		return fmt.Errorf("no KUBELET_KUBEADM_ARGS in %q yet", data)
	})
	// --node-ip is the lab's KUBELET_EXTRA_ARGS (/etc/default/kubelet for
	// the drop-in): its hosts have no default route, from which a kubelet
	// otherwise picks its node address.
	k := w.startService("kubelet", append(append([]string{"kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
		"--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml"}, flags...), "--node-ip="+w.ip())...)
	select {
	case <-join.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("kubeadm join on %s still running 2 min after the kubelet started", w.name())
	}
	if !join.cmd.ProcessState.Success() {
		data, _ := os.ReadFile(join.log)
		t.Fatalf("kubeadm join on %s: %v\n%s", w.name(), join.cmd.ProcessState, tail(string(data), 30))
	}
	return k
}

// clientCert is the client certificate the worker's kubelet uses now
// (kubelet-client-current.pem links to the newest).
func (w *worker) clientCert() *x509.Certificate { return w.currentCert("kubelet-client") }

// currentCert is the certificate PREFIX-current.pem links to.
func (w *worker) currentCert(prefix string) *x509.Certificate {
	t := w.l.t
	t.Helper()
	link := filepath.Join(w.root(), "var/lib/kubelet/pki", prefix+"-current.pem")
	target, err := os.Readlink(link)
	if err != nil {
		t.Fatalf("%s: %v", w.name(), err)
	}
	if filepath.IsAbs(target) {
		target = filepath.Join(w.root(), target) // a path on the worker
	} else {
		target = filepath.Join(filepath.Dir(link), target)
	}
	data, err := os.ReadFile(target)
	if err != nil {
		t.Fatalf("%s: %v", w.name(), err)
	}
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatalf("%s: %s: %v", w.name(), target, err)
			}
			return c
		}
	}
	t.Fatalf("%s: no certificate in %s", w.name(), target)
	return nil
}

// runFor runs a command on the worker for at most d; timedOut says
// whether it was still running then (and killed).
func (w *worker) runFor(d time.Duration, args ...string) (out string, err error, timedOut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	b, err := w.l.cmdContext(ctx, append([]string{"wrun", strconv.Itoa(w.i)}, args...)...).CombinedOutput()
	return string(b), err, ctx.Err() != nil
}

// refuseBadJoins tries to join w with what must not admit a worker and
// checks that nothing came of it: garbage, expired and revoked worker
// tokens in kubeadm join (discovery finds no cluster-info signature for
// them) and in a bootstrap kubeconfig (the apiserver answers 401 to the
// kubelet's CSR), a master token in both, and a worker token given to
// k8s-master join. It runs before any worker has joined: there must still
// be no Node and no CSR afterwards.
func (l *workerLab) refuseBadJoins(t *testing.T, w *worker) {
	t.Helper()
	good, goodTok := l.workerToken("--description", "for the CA pin")
	f := strings.Fields(good)
	hash := f[slices.Index(f, "--discovery-token-ca-cert-hash")+1]
	_, expired := l.workerToken("--ttl", "1s", "--description", "expires at once")
	_, revoked := l.workerToken("--description", "revoked before use")
	kubeconfigYAML := l.mustRun(1, "worker", "kubeconfig", "--token", revoked, "--data-dir", l.dataDir(1))
	l.mustRun(1, "token", "revoke", "--data-dir", l.dataDir(1), revoked[:6])
	b := make([]byte, 8)
	rand.Read(b)
	garbage := "zz" + hex.EncodeToString(b)[:4] + "." + hex.EncodeToString(b) // well-formed, never issued
	masterTok, err := os.ReadFile(filepath.Join(l.dataDir(1), "token"))
	if err != nil {
		t.Fatal(err)
	}
	master := strings.TrimSpace(string(masterTok))
	// The bootstrap signer drops the cluster-info signatures of the revoked
	// token at once and of the expired one once the token cleaner has
	// deleted it (its expiry is whole seconds).
	eventually(t, 30*time.Second, "cluster-info without the signatures of the expired and revoked tokens", func() error {
		out, err := l.kc("-n", "kube-public", "get", "configmap", "cluster-info", "-o", "jsonpath={.data}")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, tok := range []string{expired, revoked} {
			if strings.Contains(out, "jws-kubeconfig-"+tok[:6]) {
				return fmt.Errorf("cluster-info still signed for %s", tok[:6])
			}
		}
		if !strings.Contains(out, "jws-kubeconfig-"+goodTok[:6]) {
			return fmt.Errorf("cluster-info not signed for the valid token %s yet", goodTok[:6])
		}
		return nil
	})

	// A client CSR as a kubelet's TLS bootstrap sends it.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + w.name(), Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	w.writeFile("etc/kubernetes/bad-csr.json", []byte(fmt.Sprintf(`{"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
 "metadata": {"generateName": "node-csr-"}, "spec": {"request": %q, "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
 "usages": ["digital signature", "client auth"]}}`, base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))), 0o644)

	bad := map[string]string{"garbage": garbage, "expired": expired, "revoked": revoked}
	var wg sync.WaitGroup
	for what, tok := range bad {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// kubeadm retries discovery every 5 s for 5 min; 12 s shows it
			// has refused the token at least twice.
			args := append(append(strings.Fields(good), kubeadmJoinArgs...), "-v=1")
			args[slices.Index(args, "--token")+1] = tok
			out, err, timedOut := w.runFor(12*time.Second, args...)
			want := fmt.Sprintf("could not find a JWS signature in the cluster-info ConfigMap for token ID %q", tok[:6])
			if !timedOut && err == nil || !strings.Contains(out, want) {
				t.Errorf("kubeadm join with the %s token: %v, want retries with %q:\n%s", what, err, want, tail(out, 15))
			}
		}()
	}
	// A master token is not even a bootstrap token to kubeadm.
	out, err, timedOut := w.runFor(30*time.Second, append([]string{"kubeadm", "join", testVIP + ":6443", "--token", master, "--discovery-token-ca-cert-hash", hash}, kubeadmJoinArgs...)...)
	if err == nil || timedOut || !strings.Contains(out, "the bootstrap token is invalid") {
		t.Errorf("kubeadm join with the master token: %v (timed out: %v), want \"the bootstrap token is invalid\":\n%s", err, timedOut, tail(out, 15))
	}
	bad["master"] = master
	for what, tok := range bad {
		name := "etc/kubernetes/bootstrap-" + what + ".conf"
		w.writeFile(name, []byte(strings.Replace(kubeconfigYAML, revoked, tok, 1)), 0o600)
		out, err := w.run("kubectl", "--kubeconfig", "/"+name, "create", "--validate=false", "-f", "/etc/kubernetes/bad-csr.json")
		if err == nil || !strings.Contains(out, "Unauthorized") {
			t.Errorf("a node CSR with a bootstrap kubeconfig holding the %s token: %v, want Unauthorized:\n%s", what, err, out)
		}
	}
	wg.Wait()
	// k8s-master join with a worker token, from the client host.
	jo, je, code := l.runOn("c", "join", "--data-dir", filepath.Join(l.dir, "c-join"), "--advertise-address", "10.99.0.100", "--token", goodTok)
	if code == 0 || !strings.Contains(je, "this is a worker token") {
		t.Errorf("k8s-master join with a worker token: exit %d, want a refusal naming the worker token:\n%s%s", code, jo, je)
	}
	l.mustRun(1, "token", "revoke", "--data-dir", l.dataDir(1), goodTok[:6])
	if out := strings.TrimSpace(l.mustKC("get", "nodes", "-o", "name")); out != "" {
		t.Errorf("Nodes after the refused joins: %s", out)
	}
	if cs := l.csrs(); len(cs) != 0 {
		t.Errorf("CSRs after the refused joins: %+v", cs)
	}
}

// workerLab is the netns lab with masters and worker hosts; kubectl talks
// to master api (another one once that one is killed).
type workerLab struct {
	*lab
	api     int
	masters map[int]*master
	workers []*worker
}

func (l *workerLab) kc(args ...string) (string, error) { return l.kubectl(l.api, args...) }

func (l *workerLab) mustKC(args ...string) string {
	l.t.Helper()
	return l.mustKubectl(l.api, args...)
}

// nodeReady reports whether the Node's Ready condition is True.
func (l *workerLab) nodeReady(name string) error {
	out, err := l.kc("get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if out != "True" {
		return fmt.Errorf("Ready=%q", out)
	}
	return nil
}

// workerCluster is a master holding the VIP, more masters joining it, and
// workers running containerd, their images imported, not yet a kubelet.
// It returns once m1 is ready; waitMasters waits for the others.
func workerCluster(t *testing.T, masters, workers int) *workerLab {
	if testing.Short() {
		t.Skip("starts a control plane, containerd and kubelets")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed; .ci/run installs it")
	}
	if os.Geteuid() != 0 {
		t.Skip("the worker lab needs root (CI runs as root)")
	}
	parts := workerParts(t)
	l := &workerLab{lab: newLab(t, masters), api: 1, masters: map[int]*master{}}
	l.masters[1] = l.start(1, "init", append(slices.Clone(vipInitFlags), labAddonFlags...)...)
	for i := 1; i <= workers; i++ {
		w := l.addWorker(i, parts)
		w.startContainerd()
		l.workers = append(l.workers, w)
	}
	l.masters[1].waitReady(3 * time.Minute)
	if masters > 1 {
		data, err := os.ReadFile(filepath.Join(l.dataDir(1), "token"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 2; i <= masters; i++ {
			l.masters[i] = l.start(i, "join", append([]string{"--token", strings.TrimSpace(string(data))}, labAddonFlags...)...)
		}
	}
	return l
}

func (l *workerLab) waitMasters() {
	for _, m := range l.masters {
		m.waitReady(4 * time.Minute)
	}
}

// TestWorkerLab runs real pods: three masters with a VIP, two worker hosts
// whose stock kubelets join through the VIP as users join them (w1 with
// kubeadm join and a worker token, w2 with a plain kubelet and a bootstrap
// kubeconfig), get their certificates by TLS bootstrap and a serving CSR,
// and run busybox containers through containerd and runc; logs, exec and pod-to-pod traffic across workers by pod IP; then
// SIGKILL of the VIP holder, which the Nodes and pods ride out.
func TestWorkerLab(t *testing.T) {
	// Kubelet certificates signed by the controller-manager are valid for
	// 100 s (plus its 5 min backdating), so a kubelet rotates its client
	// certificate 0-60 s after it got it and the first ones expire during the
	// test (controlplane.TestSigningDurationEnv; test only).
	const signingDuration = 100 * time.Second
	t.Setenv("K8S_MASTER_TEST_CLUSTER_SIGNING_DURATION", signingDuration.String())
	start := time.Now()
	l := workerCluster(t, 3, 2)
	ws := l.workers
	t.Run("bad tokens admit no worker: no Node, no CSR", func(t *testing.T) {
		begin := time.Now()
		l.refuseBadJoins(t, ws[0])
		t.Logf("refusals checked in %.1f s", time.Since(begin).Seconds())
	})
	// w1 joins with the unmodified line token create --worker prints, w2
	// with a plain kubelet and the bootstrap kubeconfig of its own token.
	line, tok1 := l.workerToken("--description", "w1 (kubeadm join)")
	if !strings.HasPrefix(line, "kubeadm join "+testVIP+":6443 ") {
		t.Fatalf("join line %q does not name the VIP %s:6443", line, testVIP)
	}
	_, tok2 := l.workerToken("--description", "w2 (bootstrap kubeconfig)")
	ws[1].writeBootstrapKubeconfig(tok2)
	ws[1].startKubelet()
	ws[0].kubeadmJoin(line)
	for _, w := range ws {
		eventually(t, 2*time.Minute, w.name()+" Ready", func() error { return l.nodeReady(w.name()) })
	}
	t.Logf("both Nodes Ready %.1f s after the start", time.Since(start).Seconds())
	// From now on the kubelets renew their certificates with their own.
	for _, tok := range []string{tok1, tok2} {
		l.mustRun(1, "token", "revoke", "--data-dir", l.dataDir(1), tok[:6])
	}
	revokedAt := time.Now()
	first := map[string]*x509.Certificate{}
	for _, w := range ws {
		first[w.name()] = w.clientCert()
	}

	t.Run("TLS bootstrap: client CSRs by the tokens, serving CSRs by the nodes, approved and issued", func(t *testing.T) {
		for i, tok := range []string{tok1, tok2} {
			node := ws[i].name()
			want := []csrInfo{
				{Signer: "kubernetes.io/kube-apiserver-client-kubelet", User: "system:bootstrap:" + tok[:6], CN: "system:node:" + node},
				{Signer: "kubernetes.io/kubelet-serving", User: "system:node:" + node, CN: "system:node:" + node},
			}
			for _, wc := range want {
				eventually(t, time.Minute, fmt.Sprintf("%s's %s CSR issued", node, wc.Signer), func() error {
					for _, c := range l.csrs() {
						if c.Signer == wc.Signer && c.User == wc.User && c.CN == wc.CN {
							if !c.Approved || !c.Issued {
								return fmt.Errorf("%s: approved %v, issued %v", c.Name, c.Approved, c.Issued)
							}
							return nil
						}
					}
					return fmt.Errorf("no CSR from %s for %s", wc.User, wc.CN)
				})
			}
		}
	})

	t.Run("a Deployment spread on both workers runs real containers", func(t *testing.T) {
		l.applyEchoDeployment(4)
		pods := l.waitEchoPods(4, 3*time.Minute)
		seen := map[string]int{}
		for _, p := range pods {
			seen[p.node]++
			w := ws[slices.IndexFunc(ws, func(w *worker) bool { return w.name() == p.node })]
			// The container is a task containerd runs on that worker.
			id := strings.TrimPrefix(p.containerID, "containerd://")
			out, err := w.run("ctr", "-n", "k8s.io", "tasks", "ls")
			if err != nil || !strings.Contains(out, id) || !strings.Contains(out[strings.Index(out, id):], "RUNNING") {
				t.Errorf("pod %s: container %s is not a running task on %s: %v\n%s", p.name, id, p.node, err, out)
			}
		}
		if len(seen) != 2 {
			t.Fatalf("pods on %v, want both workers", seen)
		}
	})

	pods := l.waitEchoPods(4, time.Minute)
	var a, b echoPod
	for _, p := range pods {
		switch p.node {
		case "w1":
			a = p
		case "w2":
			b = p
		}
	}

	t.Run("kubectl logs", func(t *testing.T) {
		out := l.mustKC("logs", b.name)
		if !strings.Contains(out, "serving on "+b.name) {
			t.Fatalf("logs of %s: %q", b.name, out)
		}
	})

	t.Run("kubectl exec", func(t *testing.T) {
		out := l.mustKC("exec", a.name, "--", "hostname")
		if strings.TrimSpace(out) != a.name {
			t.Fatalf("exec hostname in %s: %q", a.name, out)
		}
	})

	t.Run("a pod on w1 reaches a pod on w2 by pod IP", func(t *testing.T) {
		for _, pair := range [][2]echoPod{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			// busybox-static's wget crashes in its resolver (glibc NSS in a
			// static binary); nc speaks the HTTP request instead.
			out, err := l.kc("exec", from.name, "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 `+to.ip+" 8080")
			if err != nil || !strings.HasPrefix(out, "HTTP/1.1 200 OK") || !strings.HasSuffix(strings.TrimSpace(out), "pong from "+to.name) {
				t.Errorf("%s (%s) -> %s (%s, %s): %v %q", from.name, from.node, to.name, to.node, to.ip, err, out)
			}
		}
	})

	t.Run("SIGKILL of the VIP holder: Nodes stay Ready, pods keep running", func(t *testing.T) {
		l.waitMasters()
		holder := 0
		for i := range l.masters {
			out, _ := exec.Command("ip", "-n", fmt.Sprintf("%sm%d", l.prefix, i), "-br", "addr", "show", "eth0").Output()
			if strings.Contains(string(out), " "+testVIP+"/") {
				holder = i
			}
		}
		if holder == 0 {
			t.Fatal("no master holds the VIP")
		}
		l.api = holder%3 + 1
		ready := func(name string) (string, error) {
			return l.kc("get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
		}
		before := map[string]string{}
		for _, w := range ws {
			out, err := ready(w.name())
			if err != nil || !strings.HasPrefix(out, "True ") {
				t.Fatalf("%s before the kill: Ready %q %v", w.name(), out, err)
			}
			before[w.name()] = out
		}
		killed := time.Now()
		l.masters[holder].stop(syscall.SIGKILL, 10*time.Second)
		// The kubelets renew their leases through the VIP, now on another
		// master.
		for _, w := range ws {
			eventually(t, time.Minute, w.name()+" renews its lease after the kill", func() error {
				out, err := l.kc("-n", "kube-node-lease", "get", "lease", w.name(), "-o", "jsonpath={.spec.renewTime}")
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				renewed, err := time.Parse(time.RFC3339Nano, out)
				if err != nil {
					return err
				}
				if !renewed.After(killed) {
					return fmt.Errorf("last renewal %s, before the kill", out)
				}
				return nil
			})
			t.Logf("%s renewed its lease through the VIP within %.1f s of the kill", w.name(), time.Since(killed).Seconds())
		}
		// Past the controller-manager's node grace period (50 s), a Node
		// that had lost its kubelet would be NotReady by now.
		for time.Since(killed) < 55*time.Second {
			for _, w := range ws {
				if out, err := ready(w.name()); err == nil && !strings.HasPrefix(out, "True ") {
					t.Errorf("%s %.0f s after the kill: Ready %s", w.name(), time.Since(killed).Seconds(), out)
				}
			}
			time.Sleep(2 * time.Second)
		}
		for _, w := range ws {
			if out, err := ready(w.name()); err != nil || out != before[w.name()] {
				t.Errorf("%s Ready was %q before the kill, now %q (%v): it changed in between", w.name(), before[w.name()], out, err)
			}
		}
		after := l.waitEchoPods(4, 10*time.Second)
		for i, p := range after {
			if p != pods[i] {
				t.Errorf("pod %s changed across the kill: %+v, was %+v", p.name, p, pods[i])
			}
		}
	})
	t.Run("kubelets renew their client certificates without a token, Nodes stay Ready", func(t *testing.T) {
		for _, w := range ws {
			old := first[w.name()]
			if d := old.NotAfter.Sub(old.NotBefore); d > signingDuration+6*time.Minute {
				t.Fatalf("%s's first client certificate is valid for %s: the short signing duration was not applied", w.name(), d)
			}
			var cur *x509.Certificate
			eventually(t, signingDuration, w.name()+" uses a client certificate issued after its token was revoked", func() error {
				cur = w.clientCert()
				// The signer backdates NotBefore by 5 min.
				if issued := cur.NotBefore.Add(5 * time.Minute); cur.SerialNumber.Cmp(old.SerialNumber) == 0 || issued.Before(revokedAt.Add(-time.Second)) {
					return fmt.Errorf("serial %s issued %s, token revoked %s", cur.SerialNumber, issued.Format(time.RFC3339), revokedAt.Format(time.RFC3339))
				}
				return nil
			})
			// Past the first certificate's end, the kubelet still talks.
			time.Sleep(time.Until(old.NotAfter.Add(time.Second)))
			eventually(t, 30*time.Second, w.name()+" renews its lease after its first client certificate expired", func() error {
				out, err := l.kc("-n", "kube-node-lease", "get", "lease", w.name(), "-o", "jsonpath={.spec.renewTime}")
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				renewed, err := time.Parse(time.RFC3339Nano, out)
				if err != nil {
					return err
				}
				if !renewed.After(old.NotAfter) {
					return fmt.Errorf("last renewal %s, before %s", out, old.NotAfter.Format(time.RFC3339))
				}
				return l.nodeReady(w.name())
			})
			renewals := 0
			for _, c := range l.csrs() {
				if c.Signer == "kubernetes.io/kube-apiserver-client-kubelet" && c.User == "system:node:"+w.name() && c.Approved && c.Issued {
					renewals++
				}
			}
			if renewals == 0 {
				t.Errorf("no approved client CSR asked for by system:node:%s itself", w.name())
			}
			t.Logf("%s: client certificate %s (until %s) replaced by %s; %d renewal CSRs by the node", w.name(), old.SerialNumber, old.NotAfter.Format(time.TimeOnly), cur.SerialNumber, renewals)
		}
	})
	t.Logf("TestWorkerLab took %.1f s", time.Since(start).Seconds())
}

type csrInfo struct {
	Name, Signer, User, CN string
	Approved, Issued       bool
}

// csrs lists the cluster's CertificateSigningRequests with the subject of
// their request.
func (l *workerLab) csrs() []csrInfo {
	l.t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Spec     struct {
				SignerName string
				Username   string
				Request    []byte
			}
			Status struct {
				Certificate []byte
				Conditions  []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(l.mustKC("get", "csr", "-o", "json")), &list); err != nil {
		l.t.Fatal(err)
	}
	var out []csrInfo
	for _, c := range list.Items {
		ci := csrInfo{Name: c.Metadata.Name, Signer: c.Spec.SignerName, User: c.Spec.Username, Issued: len(c.Status.Certificate) > 0}
		if b, _ := pem.Decode(c.Spec.Request); b != nil {
			if r, err := x509.ParseCertificateRequest(b.Bytes); err == nil {
				ci.CN = r.Subject.CommonName
			}
		}
		for _, cond := range c.Status.Conditions {
			if cond.Type == "Approved" && cond.Status == "True" {
				ci.Approved = true
			}
		}
		out = append(out, ci)
	}
	return out
}

// applyEchoDeployment creates pods that serve their own name over HTTP on
// port 8080, spread evenly over the workers.
func (l *workerLab) applyEchoDeployment(replicas int) {
	l.t.Helper()
	manifest := fmt.Sprintf(`{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
 "spec": {"replicas": %d, "selector": {"matchLabels": {"app": "echo"}},
  "template": {"metadata": {"labels": {"app": "echo"}},
   "spec": {"terminationGracePeriodSeconds": 1,
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "echo"}}}],
    "containers": [{"name": "echo", "image": %q, "imagePullPolicy": "Never",
     "command": ["sh", "-c", "mkdir -p /www && echo pong from $(hostname) > /www/index.html && echo serving on $(hostname) && exec httpd -f -p 8080 -h /www"]}]}}}}`, replicas, labBusybox)
	path := filepath.Join(l.dir, "echo.json")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.mustKC("apply", "-f", path)
}

type echoPod struct{ name, node, ip, containerID string }

// waitEchoPods waits for n echo pods Running with a running container.
func (l *workerLab) waitEchoPods(n int, timeout time.Duration) []echoPod {
	l.t.Helper()
	var pods []echoPod
	eventually(l.t, timeout, fmt.Sprintf("%d echo pods running", n), func() error {
		out, err := l.kc("get", "pods", "-l", "app=echo", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name string }
				Spec     struct{ NodeName string }
				Status   struct {
					Phase             string
					PodIP             string
					ContainerStatuses []struct {
						ContainerID string
						State       struct {
							Running *struct{}
						}
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return err
		}
		pods = pods[:0]
		var states []string
		for _, p := range list.Items {
			states = append(states, p.Metadata.Name+"="+p.Status.Phase+"@"+p.Spec.NodeName)
			if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
				continue
			}
			pods = append(pods, echoPod{p.Metadata.Name, p.Spec.NodeName, p.Status.PodIP, p.Status.ContainerStatuses[0].ContainerID})
		}
		if len(pods) != n || len(list.Items) != n {
			return fmt.Errorf("%d of %d running: %s", len(pods), n, strings.Join(states, " "))
		}
		return nil
	})
	return pods
}

// TestWorkerJoinBench measures, -workerjoin.rounds times, the seconds to a
// worker's Node Ready (scripts/bench-worker-join.sh runs it): with
// -workerjoin.auth=bootstrap from the kubelet's start with a bootstrap
// kubeconfig, with kubeadm from the start of kubeadm join (the kubelet
// started once kubeadm has written its files, as in TestWorkerLab). Each
// round deletes the Node and the worker's credentials, so every round goes
// through the TLS bootstrap.
func TestWorkerJoinBench(t *testing.T) {
	if *joinRounds <= 0 {
		t.Skip("a benchmark: scripts/bench-worker-join.sh runs it (-workerjoin.rounds=N)")
	}
	useKubeadm := *joinAuth == "kubeadm"
	if !useKubeadm && *joinAuth != "bootstrap" {
		t.Fatalf("-workerjoin.auth=%q: want bootstrap or kubeadm", *joinAuth)
	}
	l := workerCluster(t, 1, 1)
	w := l.workers[0]
	line, token := l.workerToken("--description", "bench")
	var secs []float64
	for round := 1; round <= *joinRounds; round++ {
		for _, f := range []string{"etc/kubernetes/kubelet.conf", "etc/kubernetes/bootstrap-kubelet.conf", "var/lib/kubelet/pki"} {
			if err := os.RemoveAll(filepath.Join(w.root(), f)); err != nil {
				t.Fatal(err)
			}
		}
		var k *service
		begin := time.Now()
		if useKubeadm {
			// kubeadm's preflight wants no CA and no kubelet config yet.
			for _, f := range []string{"etc/kubernetes/pki/ca.crt", "var/lib/kubelet/config.yaml", "var/lib/kubelet/kubeadm-flags.env", "var/lib/kubelet/instance-config.yaml"} {
				os.Remove(filepath.Join(w.root(), f))
			}
			begin = time.Now()
			k = w.kubeadmJoin(line)
		} else {
			w.writeBootstrapKubeconfig(token)
			begin = time.Now()
			k = w.startKubelet()
		}
		eventually(t, 2*time.Minute, fmt.Sprintf("round %d: %s Ready", round, w.name()), func() error { return l.nodeReady(w.name()) })
		s := time.Since(begin).Seconds()
		secs = append(secs, s)
		fmt.Printf("round %d: %s start to Node Ready %.2f s\n", round, map[bool]string{true: "kubeadm join", false: "kubelet"}[useKubeadm], s)
		k.stop()
		l.mustKC("delete", "node", w.name(), "--wait=true")
	}
	sort.Float64s(secs)
	fmt.Printf("median of %d (%s): %.2f s\n", len(secs), *joinAuth, secs[len(secs)/2])
}
