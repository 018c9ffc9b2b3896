package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
`

// TestSingleMaster is the whole life of a one-master cluster: init, a
// workload scheduled by the in-process controller-manager and scheduler,
// Secrets encrypted in etcd, a graceful stop, and a restart that finds
// everything again.
func TestSingleMaster(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := freePorts(t)
	scheduled := filepath.Join(t.TempDir(), "scheduled")
	flags := append(p.flags(), "--name=itest", "--snapshot-interval=10s", "--snapshot-retention=2", "--snapshot-dir="+scheduled)

	m := startMaster(t, "init", dir, flags...)
	m.waitReady(2 * time.Minute)
	for _, line := range []string{"preflight checks", "cluster PKI and credentials", "etcd member ready", "kube-apiserver ready", "controller-manager and scheduler leases"} {
		if !strings.Contains(m.stdout.String(), line) {
			t.Errorf("progress line %q missing from:\n%s", line, m.stdout.String())
		}
	}

	t.Run("files and modes", func(t *testing.T) { checkModes(t, dir) })
	t.Run("health endpoints without credentials, nothing else", func(t *testing.T) { checkAnonymous(t, dir, p.API) })
	if got := strings.TrimSpace(kubectl(t, dir, "", "get", "--raw", "/readyz")); got != "ok" {
		t.Fatalf("kubectl get --raw /readyz = %q", got)
	}
	cs := clientset(t, dir)
	ctx := context.Background()
	revoked := revokeWorkerToken(t, dir, p.API)

	t.Run("one holder per leader lease", func(t *testing.T) {
		for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if l.Spec.HolderIdentity == nil || !strings.HasPrefix(*l.Spec.HolderIdentity, hostname(t)+"_") {
				t.Errorf("%s lease holder %v, want this host's component", name, l.Spec.HolderIdentity)
			}
		}
	})

	t.Run("controller-manager and scheduler run a deployment", func(t *testing.T) {
		createReadyNode(t, cs, "worker-1")
		kubectl(t, dir, deployment, "apply", "-f", "-")
		eventually(t, time.Minute, "ReplicaSet owned by the Deployment", func() error {
			rss, err := cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			if len(rss.Items) != 1 || len(rss.Items[0].OwnerReferences) != 1 || rss.Items[0].OwnerReferences[0].Name != "web" {
				return fmt.Errorf("%d ReplicaSets", len(rss.Items))
			}
			return nil
		})
		eventually(t, 2*time.Minute, "3 pods bound to worker-1", func() error {
			pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			bound := 0
			for _, pod := range pods.Items {
				if pod.Spec.NodeName == "worker-1" {
					bound++
				}
			}
			if len(pods.Items) != 3 || bound != 3 {
				return fmt.Errorf("%d pods, %d bound", len(pods.Items), bound)
			}
			return nil
		})
	})

	t.Run("workers: tokens, cluster-info, CSRs", func(t *testing.T) { checkWorkers(t, dir, p.API, revoked) })

	t.Run("secrets are encrypted at rest", func(t *testing.T) {
		_, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "db"},
			StringData: map[string]string{"password": "plain-text-canary-7731"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		raw := etcdGet(t, dir, p.EtcdClient, "/registry/secrets/default/db")
		if !strings.HasPrefix(raw, "k8s:enc:secretbox:v1:key1:") {
			t.Errorf("raw value starts %q, want the secretbox prefix", raw[:min(len(raw), 40)])
		}
		if strings.Contains(raw, "plain-text-canary-7731") {
			t.Error("the secret's value is readable in etcd")
		}
		// A ConfigMap is not encrypted: the check above is not vacuous.
		cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Data: map[string]string{"k": "visible-canary"}}, metav1.CreateOptions{})
		if raw := etcdGet(t, dir, p.EtcdClient, "/registry/configmaps/default/plain"); !strings.Contains(raw, "visible-canary") {
			t.Error("could not read a plain ConfigMap from etcd; the encryption check proves nothing")
		}
	})

	t.Run("snapshot save, list and verify", func(t *testing.T) { checkSnapshot(t, dir) })
	t.Run("scheduled snapshots", func(t *testing.T) { checkScheduledSnapshots(t, dir, scheduled) })
	t.Run("certificates: check and metrics", func(t *testing.T) { checkCerts(t, dir) })
	t.Run("certificates renewed while the master runs", func(t *testing.T) { checkRenew(t, m, dir, p) })

	took := m.stop(syscall.SIGTERM, 20*time.Second)
	if m.exitCode() != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", m.exitCode())
	}
	if took > 15*time.Second {
		t.Errorf("graceful stop took %s, want at most 15 s", took)
	}
	t.Logf("graceful stop took %s", took)

	t.Run("init with conflicting settings refuses", func(t *testing.T) {
		_, stderr, code := runCLI(t, append([]string{"init", "--data-dir", dir, "--service-cidr", "10.100.0.0/16"}, flags...)...)
		if code == 0 || !strings.Contains(stderr, "--service-cidr") || !strings.Contains(stderr, "k8s-master start") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})

	// Restart with `start`: the same cluster, its objects and secrets.
	m2 := startMaster(t, "start", dir)
	m2.waitReady(2 * time.Minute)
	cs = clientset(t, dir)
	if _, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("Deployment lost across restart: %v", err)
	}
	s, err := cs.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
	if err != nil || string(s.Data["password"]) != "plain-text-canary-7731" {
		t.Fatalf("Secret after restart: %v %q", err, s.Data["password"])
	}
	m2.stop(syscall.SIGTERM, 20*time.Second)

	// init again on the initialised directory resumes instead of wiping.
	m3 := startMaster(t, "init", dir, flags...)
	m3.waitReady(2 * time.Minute)
	if !strings.Contains(m3.stdout.String(), "already holds cluster") {
		t.Errorf("init on an initialised directory did not say it resumes:\n%s", m3.stdout.String())
	}
	if _, err := clientset(t, dir).AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("Deployment lost after re-running init: %v", err)
	}
	m3.stop(syscall.SIGTERM, 20*time.Second)

	t.Run("data directory of a different cluster", func(t *testing.T) { checkDifferentCluster(t, dir, flags) })
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func checkModes(t *testing.T, dir string) {
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %o, want 700", st.Mode().Perm())
	}
	keys := 0
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		name := info.Name()
		secret := strings.HasSuffix(name, ".key") || strings.HasSuffix(name, ".kubeconfig") || name == "encryption-config.yaml" || name == "state.json"
		if secret {
			keys++
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %o, want 600", path, info.Mode().Perm())
			}
		}
		return nil
	})
	if keys < 15 {
		t.Errorf("found only %d key files and kubeconfigs", keys)
	}
}

func checkAnonymous(t *testing.T, dir string, port int) {
	ca, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string) (int, string) {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/readyz", "/livez", "/healthz"} {
		if code, body := get(path); code != 200 || body != "ok" {
			t.Errorf("anonymous GET %s = %d %q, want 200 ok", path, code, body)
		}
	}
	for _, path := range []string{"/api", "/version", "/api/v1/namespaces", "/metrics", "/openapi/v2"} {
		if code, _ := get(path); code != 401 {
			t.Errorf("anonymous GET %s = %d, want 401", path, code)
		}
	}
	// /livez must not depend on etcd (a liveness restart would kill our
	// own member); /readyz must.
	if _, body := get("/livez?verbose"); strings.Contains(body, "etcd") {
		t.Errorf("/livez includes an etcd check:\n%s", body)
	}
	if _, body := get("/readyz?verbose"); !strings.Contains(body, "[+]etcd-readiness ok") {
		t.Errorf("/readyz lacks the etcd check:\n%s", body)
	}
}

// createReadyNode registers a Node that looks like a healthy kubelet's, so
// the scheduler can bind pods to it.
func createReadyNode(t *testing.T, cs *kubernetes.Clientset, name string) {
	ctx := context.Background()
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.50"}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// etcdGet reads a key straight from the master's etcd with the apiserver's
// client certificate.
func etcdGet(t *testing.T, dir string, port int, key string) string {
	pki := filepath.Join(dir, "pki")
	tlsInfo := transport.TLSInfo{
		TrustedCAFile: filepath.Join(pki, "etcd", "ca.crt"),
		CertFile:      filepath.Join(pki, "apiserver-etcd-client.crt"),
		KeyFile:       filepath.Join(pki, "apiserver-etcd-client.key"),
	}
	tlsCfg, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://127.0.0.1:" + strconv.Itoa(port)}, TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("etcd has no key %s", key)
	}
	return string(resp.Kvs[0].Value)
}

// checkDifferentCluster makes a second cluster B and gives copies of A's
// data directory B's PKI or B's etcd data: start must refuse both and change
// nothing.
func checkDifferentCluster(t *testing.T, dirA string, flags []string) {
	dirB := filepath.Join(t.TempDir(), "b")
	b := startMaster(t, "init", dirB, flags...)
	b.waitReady(2 * time.Minute)
	b.stop(syscall.SIGTERM, 20*time.Second)

	for _, part := range []struct{ sub, want string }{
		{"pki", "holds the CA of a different cluster"},
		{"etcd", "holds etcd data of a different cluster"},
	} {
		t.Run(part.sub, func(t *testing.T) {
			mixed := filepath.Join(t.TempDir(), "mixed")
			copyDir(t, dirA, mixed)
			os.RemoveAll(filepath.Join(mixed, part.sub))
			copyDir(t, filepath.Join(dirB, part.sub), filepath.Join(mixed, part.sub))
			before := snapshot(t, mixed)
			_, stderr, code := runCLI(t, "start", "--data-dir", mixed)
			if code == 0 || !strings.Contains(stderr, part.want) {
				t.Fatalf("exit %d, stderr %q; want a refusal saying %q", code, stderr, part.want)
			}
			if after := snapshot(t, mixed); after != before {
				t.Errorf("the refused start changed the data directory:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func copyDir(t *testing.T, from, to string) {
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// snapshot lists the files that hold cluster state (not logs) with sizes.
func snapshot(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(info.Name(), "k8s-master") && strings.Contains(info.Name(), ".log") {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "%s:%d;", rel, info.Size())
		return nil
	})
	return b.String()
}

// checkSnapshot saves a snapshot of the running master through the CLI,
// lists and verifies it, and has a damaged copy refused.
func checkSnapshot(t *testing.T, dir string) {
	snapDir := filepath.Join(t.TempDir(), "snapshots")
	out, stderr, code := runCLI(t, "snapshot", "save", "--data-dir", dir, "--dir", snapDir)
	if code != 0 {
		t.Fatalf("snapshot save: exit %d\n%s", code, stderr)
	}
	archive := strings.TrimSpace(out)
	if filepath.Dir(archive) != snapDir || !strings.HasSuffix(archive, ".snapshot") || !strings.Contains(stderr, "written and verified") {
		t.Errorf("snapshot save printed %q / %q", out, stderr)
	}
	info, err := os.Stat(archive)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, mode %v; want 0600", err, info)
	}
	list, _, code := runCLI(t, "snapshot", "list", "--dir", snapDir)
	if code != 0 || !strings.Contains(list, archive) || !strings.Contains(list, "itest") {
		t.Errorf("snapshot list: exit %d\n%s", code, list)
	}
	verify, stderr, code := runCLI(t, "snapshot", "verify", archive)
	if code != 0 || !strings.Contains(verify, ": ok") || !strings.Contains(verify, "pki/ca.key") || !strings.Contains(verify, "encryption-config.yaml") {
		t.Errorf("snapshot verify: exit %d\n%s%s", code, verify, stderr)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	bad := filepath.Join(t.TempDir(), "bad.snapshot")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI(t, "snapshot", "verify", bad); code == 0 || !strings.Contains(stderr, "is damaged") {
		t.Errorf("verify of a damaged copy: exit %d\n%s", code, stderr)
	}
}

// checkScheduledSnapshots waits for the 10 s schedule to write snapshots
// (the test keeps writing, so none is skipped), at most 2 kept, recorded
// for status.
func checkScheduledSnapshots(t *testing.T, dir, scheduled string) {
	kubectl(t, dir, "", "create", "configmap", "scheduled-1", "--from-literal=k=v")
	eventually(t, 40*time.Second, "a scheduled snapshot", func() error {
		out, stderr, code := runCLI(t, "snapshot", "list", "--dir", scheduled)
		if code != 0 || !strings.Contains(out, ".snapshot") {
			return fmt.Errorf("snapshot list: exit %d %s%s", code, out, stderr)
		}
		return nil
	})
	out, stderr, code := runCLI(t, "status", "--data-dir", dir, "--output", "json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, stderr)
	}
	var st struct {
		Snapshots []struct {
			Master       string `json:"master"`
			LastFile     string `json:"lastFile"`
			LastRevision int64  `json:"lastRevision"`
			Failures     int    `json:"failures"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Snapshots) != 1 || st.Snapshots[0].Master != "itest" || filepath.Dir(st.Snapshots[0].LastFile) != scheduled || st.Snapshots[0].LastRevision == 0 || st.Snapshots[0].Failures != 0 {
		t.Errorf("status shows the scheduled snapshots as %+v", st.Snapshots)
	}
	if _, stderr, code := runCLI(t, "snapshot", "verify", st.Snapshots[0].LastFile); code != 0 {
		t.Errorf("the scheduled snapshot does not verify: %s", stderr)
	}
}

// checkCerts lists the master's certificates through the CLI and finds
// their expiry on /metrics.
func checkCerts(t *testing.T, dir string) {
	out, stderr, code := runCLI(t, "certs", "check", "--data-dir", dir, "--output", "json")
	if code != 0 {
		t.Fatalf("certs check: exit %d %s", code, stderr)
	}
	var cs []struct {
		Name     string    `json:"name"`
		CA       bool      `json:"ca"`
		NotAfter time.Time `json:"notAfter"`
		DaysLeft int       `json:"daysLeft"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	var api time.Time
	for _, c := range cs {
		if c.Name == "apiserver.crt" && !c.CA && c.DaysLeft >= 364 {
			api = c.NotAfter
		}
	}
	if api.IsZero() || len(cs) < 10 {
		t.Fatalf("certs check lists %d certificates, apiserver.crt expiring %v:\n%s", len(cs), api, out)
	}
	metrics := kubectl(t, dir, "", "get", "--raw", "/metrics")
	found := false
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `k8s_master_certificate_expiry_timestamp_seconds{ca="false",certificate="apiserver.crt"}`) {
			found = true
			var v float64
			if f := strings.Fields(line); len(f) != 2 {
				t.Errorf("metric line %q", line)
			} else if _, err := fmt.Sscan(f[1], &v); err != nil || int64(v) != api.Unix() {
				t.Errorf("metric line %q, certs check says %d", line, api.Unix())
			}
		}
	}
	if !found {
		t.Error("no k8s_master_certificate_expiry_timestamp_seconds for apiserver.crt on /metrics")
	}
}

// checkRenew renews every leaf certificate of the running master and
// checks that each TLS port serves a new one with no restart, and that
// clients holding the old admin certificate and the new one both work.
func checkRenew(t *testing.T, m *master, dir string, p ports) {
	oldAdmin := filepath.Join(t.TempDir(), "old-admin.kubeconfig")
	data, err := os.ReadFile(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldAdmin, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// etcd's ports ask for a client certificate of the etcd CA.
	etcdClient, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "apiserver-etcd-client.crt"), filepath.Join(dir, "pki", "apiserver-etcd-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{"apiserver": p.API, "etcd client": p.EtcdClient, "etcd peer": p.EtcdPeer, "join service": p.Join}
	serial := func(port int) (string, error) {
		conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{etcdClient}})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	before := map[string]string{}
	for name, port := range ports {
		s, err := serial(port)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		before[name] = s
	}
	out, stderr, code := runCLI(t, "certs", "renew", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "renewed 12 certificates") {
		t.Fatalf("certs renew: exit %d, %q %q", code, out, stderr)
	}
	start := time.Now()
	for name, port := range ports {
		eventually(t, 90*time.Second, name+" serves its renewed certificate", func() error {
			s, err := serial(port)
			if err != nil {
				return err
			}
			if s == before[name] {
				return fmt.Errorf("still serial %s", s)
			}
			return nil
		})
	}
	t.Logf("every port served its new certificate %.1f s after certs renew", time.Since(start).Seconds())
	if !m.running() {
		t.Fatalf("the master exited: %v", m.exitErr)
	}
	for _, kc := range []string{filepath.Join(dir, "admin.kubeconfig"), oldAdmin} {
		eventually(t, 30*time.Second, "kubectl with "+filepath.Base(kc), func() error {
			out, err := exec.Command("kubectl", "--kubeconfig", kc, "get", "--raw", "/readyz").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
	}
	if string(data) == string(mustRead(t, filepath.Join(dir, "admin.kubeconfig"))) {
		t.Error("the admin kubeconfig was not rewritten with the new admin certificate")
	}
}
