package test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-master/k8s-master/pkg/addons"
)

// labRepository is the lab's --image-repository: scripts/worker-parts.sh
// names the kube-proxy and CoreDNS images it builds as the cluster asks
// for them under it.
const labRepository = "localhost/k8s-master-lab"

// labAddonFlags are given to every master of the worker lab (the
// add-on settings are each master's own, not recorded).
var labAddonFlags = []string{"--image-repository", labRepository}

// labImages are the image archives a worker's containerd imports: pause,
// busybox, kube-proxy and CoreDNS.
func labImages(t *testing.T, parts string) []string {
	t.Helper()
	imgs := []string{"pause.tar", "busybox.tar"}
	for _, pat := range []string{"kube-proxy-*.tar", "coredns-" + addons.CoreDNSVersion + ".tar"} {
		m, _ := filepath.Glob(filepath.Join(parts, "images", pat))
		if len(m) == 0 {
			t.Fatalf("no %s in %s/images: scripts/worker-parts.sh builds it", pat, parts)
		}
		for _, f := range m {
			imgs = append(imgs, filepath.Base(f))
		}
	}
	return imgs
}

// addonStatus is the add-ons' part of `status -o json`.
func (l *workerLab) addonStatus() map[string]addons.Status {
	out, stderr, code := l.run(l.api, "status", "-o", "json", "--data-dir", l.dataDir(l.api))
	if code != 0 {
		l.t.Fatalf("status: exit %d %s", code, stderr)
	}
	var st struct{ Addons []addons.Status }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	m := map[string]addons.Status{}
	for _, a := range st.Addons {
		m[a.Name] = a
	}
	return m
}

// joinWorkers joins every worker with kubeadm join (so that each kubelet
// runs with the kubelet-config the cluster announces, cluster DNS
// included) and waits for their Nodes and the add-ons to be ready.
func (l *workerLab) joinWorkers() {
	t := l.t
	line, _ := l.workerToken("--description", "add-on lab")
	for _, w := range l.workers {
		w.kubeadmJoin(line)
	}
	for _, w := range l.workers {
		eventually(t, 2*time.Minute, w.name()+" Ready", func() error { return l.nodeReady(w.name()) })
	}
}

// waitAddons waits until status shows both add-ons with every replica
// ready on n workers.
func (l *workerLab) waitAddons(n int, timeout time.Duration) map[string]addons.Status {
	var st map[string]addons.Status
	eventually(l.t, timeout, "kube-proxy and CoreDNS ready", func() error {
		st = l.addonStatus()
		kp, dns := st[addons.KubeProxy], st[addons.CoreDNS]
		if kp.State != "running" || kp.Desired != int32(n) || kp.Ready != int32(n) || dns.State != "running" || dns.Desired != 2 || dns.Ready != 2 {
			return fmt.Errorf("status: %+v", st)
		}
		return nil
	})
	return st
}

// inPod runs a shell command in a pod.
func (l *workerLab) inPod(pod, script string) (string, error) {
	return l.kc("exec", pod, "--", "sh", "-c", script)
}

// lookup resolves name through the pod's resolver (the cluster DNS its
// kubelet put in resolv.conf) with busybox's own resolver and returns
// the addresses of the answer.
func (l *workerLab) lookup(pod, name string) ([]string, error) {
	// busybox's nslookup tries every search domain of a short name and
	// exits 1 when one of them is not found, even though one answered.
	out, err := l.inPod(pod, "nslookup "+name)
	_, answer, ok := strings.Cut(out, "Name:")
	if !ok {
		return nil, fmt.Errorf("nslookup %s in %s: no answer (%v)\n%s", name, pod, err, out)
	}
	var ips []string
	for _, m := range regexp.MustCompile(`Address:\s*([0-9.]+)\s`).FindAllStringSubmatch(answer+"\n", -1) {
		ips = append(ips, m[1])
	}
	sort.Strings(ips)
	return ips, nil
}

// httpGet fetches / from addr with busybox nc, in a pod.
func (l *workerLab) httpGet(pod, host string, port int) (string, error) {
	out, err := l.inPod(pod, fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s %d`, host, port))
	return strings.TrimSpace(out), err
}

// fromClient fetches / from addr on the lab's client host (outside the
// cluster), with the host's static busybox.
func (l *workerLab) fromClient(host string, port int) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", l.prefix+"c", "sh", "-c",
		fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 %s %d`, host, port)).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// services applies the test's Services in the default namespace.
func (l *workerLab) applyJSON(name, manifest string) {
	l.t.Helper()
	path := filepath.Join(l.dir, name+".json")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.mustKC("apply", "-f", path)
}

func serviceJSON(name, typ, clusterIP string, selector map[string]string) string {
	sel, _ := json.Marshal(selector)
	ip := ""
	if clusterIP != "" {
		ip = fmt.Sprintf(`"clusterIP": %q,`, clusterIP)
	}
	return fmt.Sprintf(`{"apiVersion": "v1", "kind": "Service", "metadata": {"name": %q},
 "spec": {"type": %q, %s "selector": %s, "ports": [{"port": 80, "targetPort": 8080}]}}`, name, typ, ip, sel)
}

// TestAddons: three masters with a VIP, two workers joined with kubeadm
// join, and the add-ons the masters apply with the lab's images. Service
// traffic and cluster DNS between pods on both workers, NodePort from
// outside, a headless Service, endpoints that shrink, and the same traffic
// through a SIGKILL of the VIP holder.
func TestAddons(t *testing.T) {
	start := time.Now()
	l := workerCluster(t, 3, 2)
	l.waitMasters()
	l.joinWorkers()
	ws := l.workers
	t.Logf("both Nodes Ready %.1f s after the start", time.Since(start).Seconds())
	ready := time.Now()
	st := l.waitAddons(2, 4*time.Minute)
	t.Logf("add-ons ready %.1f s after the Nodes: %+v", time.Since(ready).Seconds(), st)

	t.Run("the add-ons as the cluster applied them", func(t *testing.T) {
		kv := l.mustKC("version", "-o", "json")
		var v struct{ ServerVersion struct{ GitVersion string } }
		if err := json.Unmarshal([]byte(kv), &v); err != nil {
			t.Fatal(err)
		}
		if want := labRepository + "/kube-proxy:" + v.ServerVersion.GitVersion; st[addons.KubeProxy].Image != want {
			t.Errorf("kube-proxy image %s, want %s", st[addons.KubeProxy].Image, want)
		}
		if want := labRepository + "/coredns:" + addons.CoreDNSVersion; st[addons.CoreDNS].Image != want {
			t.Errorf("CoreDNS image %s, want %s", st[addons.CoreDNS].Image, want)
		}
		// The cluster DNS the kubelets were told (kubelet-config, the
		// service range's 10th address) is CoreDNS's Service.
		if ip := l.mustKC("-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"); ip != "10.200.0.10" {
			t.Errorf("kube-dns Service at %s, want 10.200.0.10", ip)
		}
		for _, w := range ws {
			data, err := os.ReadFile(filepath.Join(w.root(), "var/lib/kubelet/config.yaml"))
			if err != nil || !strings.Contains(string(data), "clusterDNS:\n- 10.200.0.10\n") {
				t.Errorf("%s's kubelet config has no clusterDNS 10.200.0.10: %v\n%s", w.name(), err, data)
			}
		}
		// Both replicas may have started on the first worker Ready; the
		// manager then moves one.
		eventually(t, 2*time.Minute, "a CoreDNS pod on each worker", func() error {
			nodes := l.mustKC("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "--field-selector", "status.phase=Running", "-o", "jsonpath={.items[*].spec.nodeName}")
			if f := strings.Fields(nodes); len(f) != 2 || f[0] == f[1] {
				return fmt.Errorf("CoreDNS pods on %q", nodes)
			}
			return nil
		})
		l.waitAddons(2, time.Minute)
		human, _, _ := l.run(l.api, "status", "--data-dir", l.dataDir(l.api))
		if !strings.Contains(human, "add-on kube-proxy: 2/2 ready (DaemonSet") || !strings.Contains(human, "add-on coredns: 2/2 ready (Deployment") {
			t.Errorf("status does not show both add-ons ready:\n%s", human)
		}
	})

	l.applyEchoDeployment(2)
	pods := l.waitEchoPods(2, 3*time.Minute)
	var a, b echoPod
	for _, p := range pods {
		switch p.node {
		case "w1":
			a = p
		case "w2":
			b = p
		}
	}
	if a.name == "" || b.name == "" {
		t.Fatalf("echo pods %+v, want one on each worker", pods)
	}
	l.mustKC("label", "pod", b.name, "web=b", "pair=yes")
	l.mustKC("label", "pod", a.name, "pair=yes")
	l.applyJSON("web", serviceJSON("web", "ClusterIP", "", map[string]string{"web": "b"}))
	l.applyJSON("web-np", serviceJSON("web-np", "NodePort", "", map[string]string{"web": "b"}))
	l.applyJSON("pair", serviceJSON("pair", "ClusterIP", "", map[string]string{"pair": "yes"}))
	l.applyJSON("echo-headless", serviceJSON("echo-headless", "ClusterIP", "None", map[string]string{"app": "echo"}))
	webIP := l.mustKC("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	pairIP := l.mustKC("get", "service", "pair", "-o", "jsonpath={.spec.clusterIP}")

	t.Run("a ClusterIP Service's name resolves on w1 and its backend on w2 answers", func(t *testing.T) {
		eventually(t, time.Minute, "web resolves from "+a.name, func() error {
			ips, err := l.lookup(a.name, "web.default.svc.cluster.local")
			if err != nil {
				return err
			}
			if len(ips) != 1 || ips[0] != webIP {
				return fmt.Errorf("web resolves to %v, want %s", ips, webIP)
			}
			return nil
		})
		// The short name through the search path of the pod's resolv.conf.
		if ips, err := l.lookup(a.name, "web"); err != nil || len(ips) != 1 || ips[0] != webIP {
			t.Errorf("the short name web: %v %v", ips, err)
		}
		eventually(t, time.Minute, "web answers from "+a.name, func() error {
			out, err := l.httpGet(a.name, webIP, 80)
			if err != nil || !strings.HasSuffix(out, "pong from "+b.name) {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
	})

	t.Run("a NodePort answers on both workers", func(t *testing.T) {
		port, err := strconv.Atoi(l.mustKC("get", "service", "web-np", "-o", "jsonpath={.spec.ports[0].nodePort}"))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			eventually(t, time.Minute, fmt.Sprintf("NodePort %d on %s", port, w.name()), func() error {
				out, err := l.fromClient(w.ip(), port)
				if err != nil || !strings.HasSuffix(out, "pong from "+b.name) {
					return fmt.Errorf("%v %q", err, out)
				}
				return nil
			})
		}
	})

	t.Run("a headless Service resolves to its pods' IPs", func(t *testing.T) {
		want := []string{a.ip, b.ip}
		sort.Strings(want)
		eventually(t, time.Minute, "echo-headless resolves", func() error {
			ips, err := l.lookup(b.name, "echo-headless.default.svc.cluster.local")
			if err != nil {
				return err
			}
			if strings.Join(ips, " ") != strings.Join(want, " ") {
				return fmt.Errorf("resolves to %v, want %v", ips, want)
			}
			return nil
		})
	})

	t.Run("a pod taken out of the endpoints stops being answered", func(t *testing.T) {
		answers := func(n int) map[string]int {
			seen := map[string]int{}
			for range n {
				out, _ := l.httpGet(a.name, pairIP, 80)
				seen[out[strings.LastIndex(out, "\n")+1:]]++
			}
			return seen
		}
		eventually(t, time.Minute, "both pods answer the pair Service", func() error {
			seen := answers(12)
			if seen["pong from "+a.name] == 0 || seen["pong from "+b.name] == 0 {
				return fmt.Errorf("answers %v", seen)
			}
			return nil
		})
		removed := time.Now()
		l.mustKC("label", "pod", b.name, "pair-")
		eventually(t, time.Minute, b.name+" no longer answers", func() error {
			if seen := answers(12); len(seen) != 1 || seen["pong from "+a.name] != 12 {
				return fmt.Errorf("answers %v", seen)
			}
			return nil
		})
		t.Logf("%s out of the Service's answers %.1f s after its label went", b.name, time.Since(removed).Seconds())
		if seen := answers(20); len(seen) != 1 || seen["pong from "+a.name] != 20 {
			t.Errorf("after the removal: answers %v, want only %s", seen, a.name)
		}
	})

	t.Run("SIGKILL of the VIP holder: Service and DNS traffic go on", func(t *testing.T) {
		holder := l.vipHolder()
		l.api = holder%3 + 1
		// A probe pod on w1, every 0.2 s: a DNS lookup of web and an HTTP
		// request to its Service IP, each line the machine's uptime and
		// the results; its log is read at the end (no exec stream
		// through the apiserver that is about to die).
		probe := fmt.Sprintf(`while true; do
  t=$(cat /proc/uptime); t=${t%%%% *}
  if nslookup web.default.svc.cluster.local >/dev/null 2>&1; then d=ok; else d=fail; fi
  if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 1 %s 80 | grep -q pong; then s=ok; else s=fail; fi
  echo "$t $d $s"
  sleep 0.2
done`, webIP)
		cmd, _ := json.Marshal([]string{"sh", "-c", probe})
		l.applyJSON("probe", fmt.Sprintf(`{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
 "spec": {"nodeName": "w1", "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
  "containers": [{"name": "probe", "image": %q, "imagePullPolicy": "Never", "command": %s}]}}`, labBusybox, cmd))
		eventually(t, time.Minute, "the probe pod logs", func() error {
			out, err := l.kc("logs", "probe")
			if err != nil || strings.Count(out, " ok ok") < 5 {
				return fmt.Errorf("%v %q", err, tail(out, 5))
			}
			return nil
		})
		killedUp := l.uptime(a.name)
		l.masters[holder].stop(syscall.SIGKILL, 10*time.Second)
		killed := time.Now()
		// A new Service after the kill: CoreDNS's and kube-proxy's watches
		// went on through the VIP (or the kubernetes Service) on another
		// master.
		var kubeDown float64
		eventually(t, 2*time.Minute, "kubectl through another master", func() error {
			_, err := l.kc("get", "ns", "default")
			return err
		})
		kubeDown = time.Since(killed).Seconds()
		time.Sleep(20 * time.Second)
		l.applyJSON("after-kill", serviceJSON("after-kill", "ClusterIP", "", map[string]string{"web": "b"}))
		created := time.Now()
		newIP := l.mustKC("get", "service", "after-kill", "-o", "jsonpath={.spec.clusterIP}")
		eventually(t, 2*time.Minute, "a Service made after the kill resolves and answers", func() error {
			ips, err := l.lookup(a.name, "after-kill.default.svc.cluster.local")
			if err != nil {
				return err
			}
			if len(ips) != 1 || ips[0] != newIP {
				return fmt.Errorf("resolves to %v, want %s", ips, newIP)
			}
			out, err := l.httpGet(a.name, newIP, 80)
			if err != nil || !strings.HasSuffix(out, "pong from "+b.name) {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
		t.Logf("a Service made %.0f s after the kill resolved and answered %.1f s after its creation", created.Sub(killed).Seconds(), time.Since(created).Seconds())
		log := l.mustKC("logs", "probe")
		dns, svc, n := outage(log, killedUp)
		t.Logf("after the kill (kubectl through another master answered after %.1f s): %d probes; longest run of failed DNS lookups %.1f s, of failed Service requests %.1f s", kubeDown, n, dns, svc)
		if n < 20 {
			t.Fatalf("only %d probes after the kill:\n%s", n, log)
		}
		if dns > 5 || svc > 5 {
			t.Errorf("traffic stopped for %.1f s (DNS) and %.1f s (Service) after the kill, want it to go on", dns, svc)
		}
	})
}

// vipHolder is the master whose namespace has the VIP.
func (l *workerLab) vipHolder() int {
	l.t.Helper()
	for i := range l.masters {
		out, _ := exec.Command("ip", "-n", fmt.Sprintf("%sm%d", l.prefix, i), "-br", "addr", "show", "eth0").Output()
		if strings.Contains(string(out), " "+testVIP+"/") {
			return i
		}
	}
	l.t.Fatal("no master holds the VIP")
	return 0
}

// uptime is the machine's uptime seen from a pod: the probe's clock.
func (l *workerLab) uptime(pod string) float64 {
	l.t.Helper()
	out := l.mustKC("exec", pod, "--", "cat", "/proc/uptime")
	f, err := strconv.ParseFloat(strings.Fields(out)[0], 64)
	if err != nil {
		l.t.Fatal(err)
	}
	return f
}

// outage reads the probe's log: the longest stretch, after since, from the
// first failed DNS lookup (Service request) to the next success, and how
// many probes ran after since.
func outage(log string, since float64) (dns, svc float64, n int) {
	var dnsFrom, svcFrom float64 = -1, -1
	var last float64
	for _, line := range strings.Split(log, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		t, err := strconv.ParseFloat(f[0], 64)
		if err != nil || t < since {
			continue
		}
		n++
		last = t
		track := func(res string, from *float64, worst *float64) {
			switch {
			case res != "ok" && *from < 0:
				*from = t
			case res == "ok" && *from >= 0:
				*worst = max(*worst, t-*from)
				*from = -1
			}
		}
		track(f[1], &dnsFrom, &dns)
		track(f[2], &svcFrom, &svc)
	}
	// Still failing at the end counts to the last probe.
	if dnsFrom >= 0 {
		dns = max(dns, last-dnsFrom+0.2)
	}
	if svcFrom >= 0 {
		svc = max(svc, last-svcFrom+0.2)
	}
	return dns, svc, n
}

// TestAddonSettings: one master without workers. --disable-addon coredns
// leaves no CoreDNS object; a restart with another --image-repository
// and CoreDNS enabled rolls both add-ons to it; disabling CoreDNS again
// deletes what was applied, and bad settings are refused before anything
// starts.
func TestAddonSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	dir := filepath.Join(t.TempDir(), "m")
	p := freePorts(t)
	for _, bad := range []struct{ flags, want []string }{
		{[]string{"--cluster-dns", "10.0.0.10"}, []string{"cluster-dns 10.0.0.10", "outside", "service-cidr"}},
		{[]string{"--disable-addon", "kube-dns"}, []string{"disable-addon", "kube-dns", "kube-proxy, coredns, node-agent"}},
		{[]string{"--image-repository", "https://mirror.example"}, []string{"image-repository", "no scheme"}},
	} {
		_, stderr, code := runCLI(t, append(append([]string{"init", "--foreground", "--data-dir", dir}, p.flags()...), bad.flags...)...)
		for _, w := range bad.want {
			if code == 0 || !strings.Contains(stderr, w) {
				t.Errorf("init %v: exit %d, stderr %q, want it to name %q", bad.flags, code, stderr, w)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "pki")); err == nil {
			t.Fatalf("init %v wrote a cluster", bad.flags)
		}
	}

	m := startMaster(t, "init", dir, append(p.flags(), "--disable-addon", "coredns", "--image-repository", "mirror-a.example/k8s")...)
	m.waitReady(3 * time.Minute)
	cs := clientset(t, dir)
	ctx := context.Background()
	image := func(kind, name string) (string, error) {
		switch kind {
		case "DaemonSet":
			ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			return ds.Spec.Template.Spec.Containers[0].Image, nil
		default:
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			return d.Spec.Template.Spec.Containers[0].Image, nil
		}
	}
	k8sVersion := func() string {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		return v.GitVersion
	}()
	waitImage := func(kind, name, want string) {
		t.Helper()
		eventually(t, time.Minute, kind+" "+name+" image "+want, func() error {
			got, err := image(kind, name)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("image %s", got)
			}
			return nil
		})
	}
	waitImage("DaemonSet", "kube-proxy", "mirror-a.example/k8s/kube-proxy:"+k8sVersion)
	// The node agent's image is the binary's own release under the repository.
	agentImage := func(repo string) string {
		out, err := exec.Command(masterBin, "node-agent", "image", "-o", filepath.Join(t.TempDir(), "agent.tar"), "--image-repository", repo).Output()
		if err != nil {
			t.Fatalf("node-agent image: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	waitImage("DaemonSet", addons.NodeAgentDaemonSet, agentImage("mirror-a.example/k8s"))
	noCoreDNS := func() error {
		return coreDNSObjectsGone(ctx, cs)
	}
	t.Run("--disable-addon coredns: no CoreDNS objects", func(t *testing.T) {
		if err := noCoreDNS(); err != nil {
			t.Error(err)
		}
		out, _, _ := runCLI(t, "status", "--data-dir", dir)
		if !strings.Contains(out, "add-on coredns: disabled") || !strings.Contains(out, "add-on kube-proxy: 0/0 ready (DaemonSet, mirror-a.example/k8s/kube-proxy:") {
			t.Errorf("status:\n%s", out)
		}
	})
	// A user's label on the DaemonSet, a field the manager does not set.
	l := kubectl(t, dir, "", "-n", "kube-system", "label", "daemonset", "kube-proxy", "team=net")
	t.Log(strings.TrimSpace(l))
	m.stop(syscall.SIGTERM, 30*time.Second)

	m = startMaster(t, "start", dir, "--image-repository", "mirror-b.example")
	m.waitReady(3 * time.Minute)
	t.Run("a restart with another --image-repository rolls the add-ons to it", func(t *testing.T) {
		waitImage("DaemonSet", "kube-proxy", "mirror-b.example/kube-proxy:"+k8sVersion)
		waitImage("Deployment", "coredns", "mirror-b.example/coredns:"+addons.CoreDNSVersion)
		waitImage("DaemonSet", addons.NodeAgentDaemonSet, agentImage("mirror-b.example"))
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil || ds.Labels["team"] != "net" {
			t.Errorf("the user's label on the DaemonSet did not survive the re-apply: %v %v", ds.Labels, err)
		}
		// CoreDNS was disabled before: its objects come back one apply
		// after another, the Service after the Deployment.
		eventually(t, time.Minute, "kube-dns Service at 10.96.0.10", func() error {
			svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if svc.Spec.ClusterIP != "10.96.0.10" {
				return fmt.Errorf("cluster IP %s", svc.Spec.ClusterIP)
			}
			return nil
		})
	})
	m.stop(syscall.SIGTERM, 30*time.Second)

	m = startMaster(t, "start", dir, "--image-repository", "mirror-b.example", "--disable-addon", "coredns", "--disable-addon", "node-agent")
	m.waitReady(3 * time.Minute)
	t.Run("disabling CoreDNS again and the node agent deletes their objects", func(t *testing.T) {
		eventually(t, time.Minute, "CoreDNS objects deleted", noCoreDNS)
		eventually(t, time.Minute, "the node agent's DaemonSet deleted", func() error {
			if _, err := image("DaemonSet", addons.NodeAgentDaemonSet); !apierrors.IsNotFound(err) {
				return fmt.Errorf("DaemonSet %s: %v", addons.NodeAgentDaemonSet, err)
			}
			return nil
		})
		if _, err := image("DaemonSet", "kube-proxy"); err != nil {
			t.Errorf("kube-proxy went too: %v", err)
		}
	})
}

// coreDNSObjectsGone checks that none of CoreDNS's objects exists.
func coreDNSObjectsGone(ctx context.Context, cs kubernetes.Interface) error {
	var left []string
	check := func(what string, err error) {
		if !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("%s (%v)", what, err))
		}
	}
	ns := "kube-system"
	_, err := cs.AppsV1().Deployments(ns).Get(ctx, "coredns", metav1.GetOptions{})
	check("Deployment coredns", err)
	_, err = cs.CoreV1().Services(ns).Get(ctx, "kube-dns", metav1.GetOptions{})
	check("Service kube-dns", err)
	_, err = cs.CoreV1().ConfigMaps(ns).Get(ctx, "coredns", metav1.GetOptions{})
	check("ConfigMap coredns", err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Get(ctx, "coredns", metav1.GetOptions{})
	check("ServiceAccount coredns", err)
	_, err = cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "coredns", metav1.GetOptions{})
	check("PodDisruptionBudget coredns", err)
	_, err = cs.RbacV1().ClusterRoles().Get(ctx, "system:coredns", metav1.GetOptions{})
	check("ClusterRole system:coredns", err)
	_, err = cs.RbacV1().ClusterRoleBindings().Get(ctx, "system:coredns", metav1.GetOptions{})
	check("ClusterRoleBinding system:coredns", err)
	if len(left) > 0 {
		return fmt.Errorf("CoreDNS objects exist: %s", strings.Join(left, ", "))
	}
	return nil
}

var (
	addonRounds = flag.Int("addons.rounds", 0, "TestAddonsBench: worker joins to time (0: skip the bench)")
	dnsSeconds  = flag.Duration("addons.dns", 10*time.Second, "TestAddonsBench: how long to load the cluster DNS")
)

// TestAddonsBench measures, -addons.rounds times, the seconds from a new
// worker's Node Ready to its kube-proxy answering a Service created at
// that moment and the cluster DNS answering for its name, both asked from
// the worker's own network (scripts/bench-addons.sh runs it). w1 stays
// and runs CoreDNS and the Service's backend; w2 is a new host every round
// (the lab's worker removed and made again, a kubelet with a bootstrap
// kubeconfig). Then a pod on w1 queries the cluster DNS Service's address
// with test/tools/dnsload for -addons.dns.
func TestAddonsBench(t *testing.T) {
	if *addonRounds <= 0 {
		t.Skip("a benchmark: scripts/bench-addons.sh runs it (-addons.rounds=N)")
	}
	l := workerCluster(t, 1, 1)
	w1 := l.workers[0]
	line, token := l.workerToken("--description", "bench")
	w1.kubeadmJoin(line)
	eventually(t, 2*time.Minute, "w1 Ready", func() error { return l.nodeReady("w1") })
	l.waitAddons(1, 4*time.Minute)
	l.applyEchoDeployment(1)
	pods := l.waitEchoPods(1, 3*time.Minute)
	parts := w1.parts
	var proxy, dns []float64
	var kubelet2 *service
	for round := 1; round <= *addonRounds; round++ {
		if round > 1 {
			// Its restarts must not outlive the host.
			kubelet2.stop()
			if out, err := l.cmd("wrm", "2").CombinedOutput(); err != nil {
				t.Fatalf("wrm 2: %v %s", err, out)
			}
			l.mustKC("delete", "node", "w2", "--wait=true")
		}
		w2 := l.addWorker(2, parts)
		// A host sends Service traffic along its default route, where
		// kube-proxy's rules rewrite it; the lab's workers have no
		// default route, so w2 gets one for the service range.
		if out, err := exec.Command("ip", "-n", l.prefix+"w2", "route", "add", "10.200.0.0/16", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("route to the service range on w2: %v %s", err, out)
		}
		w2.startContainerd()
		w2.writeBootstrapKubeconfig(token)
		kubelet2 = w2.startKubelet()
		eventually(t, 2*time.Minute, fmt.Sprintf("round %d: w2 Ready", round), func() error { return l.nodeReady("w2") })
		ready := time.Now()
		name := fmt.Sprintf("bench-%d", round)
		l.applyJSON(name, serviceJSON(name, "ClusterIP", "", map[string]string{"app": "echo"}))
		ip := l.mustKC("get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
		var tProxy, tDNS float64
		eventually(t, 2*time.Minute, fmt.Sprintf("round %d: w2's kube-proxy and the cluster DNS answer for %s", round, name), func() error {
			if tProxy == 0 {
				out, _ := w2.run("sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 1 %s 80`, ip))
				if strings.Contains(out, "pong from "+pods[0].name) {
					tProxy = time.Since(ready).Seconds()
				}
			}
			if tDNS == 0 {
				out, _ := w2.run("busybox", "nslookup", name+".default.svc.cluster.local", "10.200.0.10")
				if strings.Contains(out, "Address: "+ip) {
					tDNS = time.Since(ready).Seconds()
				}
			}
			if tProxy == 0 || tDNS == 0 {
				return fmt.Errorf("kube-proxy answered after %.1f s, DNS after %.1f s (0: not yet)", tProxy, tDNS)
			}
			return nil
		})
		proxy, dns = append(proxy, tProxy), append(dns, tDNS)
		fmt.Printf("round %d: Node Ready to kube-proxy answering %.2f s, to the cluster DNS answering %.2f s\n", round, tProxy, tDNS)
	}
	sort.Float64s(proxy)
	sort.Float64s(dns)
	fmt.Printf("median of %d: kube-proxy %.2f s, cluster DNS %.2f s\n", len(proxy), proxy[len(proxy)/2], dns[len(dns)/2])

	// DNS queries per second from one pod through the Service address.
	tool := filepath.Join(l.dir, "dnsload")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", tool, "./tools/dnsload").CombinedOutput(); err != nil {
		t.Fatalf("build dnsload: %v %s", err, out)
	}
	f, err := os.Open(tool)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cp := exec.Command("ip", "netns", "exec", l.prefix+"c", "kubectl", "--kubeconfig", l.kubeconfig(1), "--server", l.apiserver(1),
		"exec", "-i", pods[0].name, "--", "sh", "-c", "cat >/dnsload && chmod +x /dnsload")
	cp.Stdin = f
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copy dnsload into %s: %v %s", pods[0].name, err, out)
	}
	for _, c := range []int{1, 4} {
		out, err := l.kc("exec", pods[0].name, "--", "/dnsload", "-server", "10.200.0.10:53",
			"-name", "kubernetes.default.svc.cluster.local", "-c", strconv.Itoa(c), "-d", dnsSeconds.String())
		if err != nil {
			t.Fatalf("dnsload: %v %s", err, out)
		}
		fmt.Print("dns: " + out)
	}
}
