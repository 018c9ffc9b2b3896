package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/kubeconfig"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// labBusybox is the test image scripts/worker-parts.sh makes from Debian's
// busybox-static; containerd has it only because the lab imports it.
const labBusybox = "localhost/k8s-master-lab/busybox:1"

var (
	joinRounds = flag.Int("workerjoin.rounds", 0, "TestWorkerJoinBench: kubelet starts to measure (0: skip the bench)")
	joinAuth   = flag.String("workerjoin.auth", "cert", "TestWorkerJoinBench: cert (a client certificate issued by hand) or bootstrap (a bootstrap token kubeconfig)")
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
	for _, img := range []string{"pause.tar", "busybox.tar"} {
		if out, err := w.run("ctr", "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", filepath.Join(w.parts, "images", img)); err != nil {
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

// issueKubeletCerts does by hand what the TLS bootstrap does: a client
// certificate for system:node:<name> in system:nodes, in the kubeconfig the
// kubelet uses (server: the VIP), and a serving certificate for the node's
// name and address, both from the cluster CA of master 1.
func (w *worker) issueKubeletCerts(server string) {
	t := w.l.t
	t.Helper()
	pkiDir := filepath.Join(w.l.dataDir(1), "pki")
	ca, err := pki.LoadCA(pkiDir, pki.ClusterCA)
	if err != nil {
		t.Fatalf("the cluster CA of m1: %v", err)
	}
	caPEM, err := os.ReadFile(pki.CertPath(pkiDir, pki.ClusterCA))
	if err != nil {
		t.Fatal(err)
	}
	w.writeFile("etc/kubernetes/pki/ca.crt", caPEM, 0o644)
	now := time.Now()
	for _, spec := range []pki.LeafSpec{
		{Name: "kubelet-client", CommonName: "system:node:" + w.name(), Organization: []string{"system:nodes"}, Usage: pki.ClientAuth},
		{Name: "kubelet", CommonName: w.name(), DNSNames: []string{w.name()}, IPs: []net.IP{net.ParseIP(w.ip())}, Usage: pki.ServerAuth},
	} {
		cert, key, err := ca.IssueLeaf(spec, now)
		if err != nil {
			t.Fatal(err)
		}
		w.writeFile("var/lib/kubelet/pki/"+spec.Name+".crt", cert, 0o644)
		w.writeFile("var/lib/kubelet/pki/"+spec.Name+".key", key, 0o600)
	}
	dir := filepath.Join(w.root(), "var/lib/kubelet/pki")
	if err := kubeconfig.Write(kubeconfig.Spec{
		Path: filepath.Join(w.root(), "etc/kubernetes/kubelet.conf"), ClusterName: "kubernetes", User: "system:node:" + w.name(), Server: server,
		CAFile: filepath.Join(w.root(), "etc/kubernetes/pki/ca.crt"), CertFile: pki.CertPath(dir, "kubelet-client"), KeyFile: pki.KeyPath(dir, "kubelet-client"),
	}); err != nil {
		t.Fatal(err)
	}
}

// writeBootstrapKubeconfig makes a standard bootstrap token (a
// bootstrap.kubernetes.io/token Secret) and a bootstrap kubeconfig that
// presents it: the kubelet then asks for its client certificate itself.
// It needs the control plane's bootstrap-token authentication and CSR
// approval.
func (w *worker) writeBootstrapKubeconfig(server string) {
	t := w.l.t
	t.Helper()
	b := make([]byte, 11)
	rand.Read(b)
	h := hex.EncodeToString(b)
	id, secret := h[:6], h[6:22]
	w.l.mustKubectl(1, "-n", "kube-system", "create", "secret", "generic", "bootstrap-token-"+id, "--type", "bootstrap.kubernetes.io/token",
		"--from-literal=token-id="+id, "--from-literal=token-secret="+secret,
		"--from-literal=usage-bootstrap-authentication=true", "--from-literal=usage-bootstrap-signing=true",
		"--from-literal=auth-extra-groups=system:bootstrappers:kubeadm:default-node-token",
		"--from-literal=expiration="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	caPEM, err := os.ReadFile(pki.CertPath(filepath.Join(w.l.dataDir(1), "pki"), pki.ClusterCA))
	if err != nil {
		t.Fatal(err)
	}
	w.writeFile("etc/kubernetes/pki/ca.crt", caPEM, 0o644)
	w.writeFile("etc/kubernetes/bootstrap-kubelet.conf", []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: %s
    certificate-authority: /etc/kubernetes/pki/ca.crt
users:
- name: tls-bootstrap-token-user
  user:
    token: %s.%s
contexts:
- name: tls-bootstrap
  context:
    cluster: kubernetes
    user: tls-bootstrap-token-user
current-context: tls-bootstrap
`, server, id, secret)), 0o600)
}

// startKubelet runs the kubelet with the lab's config; with bootstrap it
// starts from the bootstrap kubeconfig instead of a client certificate.
func (w *worker) startKubelet(bootstrap bool) *daemon {
	args := []string{"kubelet", "--config=/var/lib/kubelet/config.yaml", "--kubeconfig=/etc/kubernetes/kubelet.conf", "--node-ip=" + w.ip()}
	if bootstrap {
		args = append(args, "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf")
	}
	return w.start("kubelet", args...)
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
	l.masters[1] = l.start(1, "init", vipInitFlags...)
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
			l.masters[i] = l.start(i, "join", "--token", strings.TrimSpace(string(data)))
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
// whose stock kubelets (client certificates issued from the cluster CA by
// hand) talk to the VIP and run busybox containers through containerd and
// runc; logs, exec and pod-to-pod traffic across workers by pod IP; then
// SIGKILL of the VIP holder, which the Nodes and pods ride out.
func TestWorkerLab(t *testing.T) {
	start := time.Now()
	l := workerCluster(t, 3, 2)
	ws := l.workers
	for _, w := range ws {
		w.issueKubeletCerts(vipURL)
		w.startKubelet(false)
	}
	for _, w := range ws {
		eventually(t, 2*time.Minute, w.name()+" Ready", func() error { return l.nodeReady(w.name()) })
	}
	t.Logf("both Nodes Ready %.1f s after the start", time.Since(start).Seconds())

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
	t.Logf("TestWorkerLab took %.1f s", time.Since(start).Seconds())
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

// TestWorkerJoinBench measures, -workerjoin.rounds times, the seconds from
// a kubelet's start to its Node Ready (scripts/bench-worker-join.sh runs
// it). Each round deletes the Node and starts the kubelet afresh; with
// -workerjoin.auth=bootstrap it also drops the kubelet's client
// certificate, so every round goes through the TLS bootstrap.
func TestWorkerJoinBench(t *testing.T) {
	if *joinRounds <= 0 {
		t.Skip("a benchmark: scripts/bench-worker-join.sh runs it (-workerjoin.rounds=N)")
	}
	bootstrap := *joinAuth == "bootstrap"
	if !bootstrap && *joinAuth != "cert" {
		t.Fatalf("-workerjoin.auth=%q: want cert or bootstrap", *joinAuth)
	}
	l := workerCluster(t, 1, 1)
	w := l.workers[0]
	if bootstrap {
		w.writeBootstrapKubeconfig(vipURL)
	} else {
		w.issueKubeletCerts(vipURL)
	}
	var secs []float64
	for round := 1; round <= *joinRounds; round++ {
		if bootstrap {
			for _, f := range []string{"etc/kubernetes/kubelet.conf", "var/lib/kubelet/pki/kubelet-client-current.pem"} {
				os.Remove(filepath.Join(w.root(), f))
			}
		}
		begin := time.Now()
		k := w.startKubelet(bootstrap)
		eventually(t, 2*time.Minute, fmt.Sprintf("round %d: %s Ready", round, w.name()), func() error { return l.nodeReady(w.name()) })
		s := time.Since(begin).Seconds()
		secs = append(secs, s)
		fmt.Printf("round %d: kubelet start to Node Ready %.2f s\n", round, s)
		k.stop()
		l.mustKC("delete", "node", w.name(), "--wait=true")
	}
	sort.Float64s(secs)
	fmt.Printf("median of %d (%s): %.2f s\n", len(secs), *joinAuth, secs[len(secs)/2])
}
