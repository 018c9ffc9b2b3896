package addons

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func settings() Settings {
	return Settings{
		KubernetesVersion: "v1.37.2", Release: "0.0.0~git4abe6b0", APIServer: "https://10.0.0.50:6443",
		ServiceCIDR: "10.96.0.0/12", PodCIDR: "10.244.0.0/16", ClusterDomain: "cluster.local", ClusterDNS: "10.96.0.10",
	}
}

func TestImages(t *testing.T) {
	s := settings()
	if got, want := s.KubeProxyImage(), "registry.k8s.io/kube-proxy:v1.37.2"; got != want {
		t.Errorf("default kube-proxy image %s, want %s", got, want)
	}
	if got, want := s.CoreDNSImage(), "registry.k8s.io/coredns/coredns:"+CoreDNSVersion; got != want {
		t.Errorf("default CoreDNS image %s, want %s", got, want)
	}
	if got, want := s.NodeAgentImage(), "registry.k8s.io/k8s-master:0.0.0-git4abe6b0"; got != want {
		t.Errorf("default node agent image %s, want %s", got, want)
	}
	s.ImageRepository = "mirror.example:5000/k8s/"
	if got, want := s.KubeProxyImage(), "mirror.example:5000/k8s/kube-proxy:v1.37.2"; got != want {
		t.Errorf("mirrored kube-proxy image %s, want %s", got, want)
	}
	if got, want := s.CoreDNSImage(), "mirror.example:5000/k8s/coredns:"+CoreDNSVersion; got != want {
		t.Errorf("mirrored CoreDNS image %s, want %s (kubeadm's layout)", got, want)
	}
}

func TestManifests(t *testing.T) {
	s := settings()
	objs, err := kubeProxyObjects(s)
	if err != nil {
		t.Fatal(err)
	}
	cm := objs[2].config.(interface{ GetName() *string })
	if *cm.GetName() != "kube-proxy" {
		t.Fatalf("third kube-proxy object is %s, want its ConfigMap", objs[2])
	}
	conf := kubeProxyConfig(s)
	for _, want := range []string{"mode: iptables", "clusterCIDR: 10.244.0.0/16", "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf"} {
		if !strings.Contains(conf, want) {
			t.Errorf("KubeProxyConfiguration lacks %q:\n%s", want, conf)
		}
	}
	if kc := kubeProxyKubeconfig(s); !strings.Contains(kc, "server: https://10.0.0.50:6443") {
		t.Errorf("kube-proxy's kubeconfig does not name the VIP:\n%s", kc)
	}
	s.APIServer = ""
	if _, err := kubeProxyObjects(s); err == nil {
		t.Error("kube-proxy objects without an apiserver address: no error")
	}

	s = settings()
	s.ClusterDomain = "edge.example"
	cf := corefile(s)
	for _, want := range []string{"kubernetes edge.example in-addr.arpa ip6.arpa", "forward . /etc/resolv.conf", "cache 30", "health", "ready", "loop", "reload"} {
		if !strings.Contains(cf, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, cf)
		}
	}
	s.ClusterDNS = "nonsense"
	if _, err := coreDNSObjects(s); err == nil {
		t.Error("CoreDNS objects with a bad cluster DNS address: no error")
	}
}

func TestHash(t *testing.T) {
	base, err := Hash(settings())
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Settings){
		"version":          func(s *Settings) { s.KubernetesVersion = "v1.37.3" },
		"image repository": func(s *Settings) { s.ImageRepository = "mirror.example" },
		"cluster DNS":      func(s *Settings) { s.ClusterDNS = "10.96.0.53" },
		"apiserver":        func(s *Settings) { s.APIServer = "https://10.0.0.51:6443" },
		"disabled":         func(s *Settings) { s.Disabled = []string{CoreDNS} },
	} {
		s := settings()
		change(&s)
		h, err := Hash(s)
		if err != nil {
			t.Fatal(err)
		}
		if h == base {
			t.Errorf("a changed %s leaves the hash as it was", name)
		}
	}
	again, _ := Hash(settings())
	if again != base {
		t.Error("the same settings hash differently")
	}
}

func TestCheckName(t *testing.T) {
	if err := CheckName("coredns"); err != nil {
		t.Error(err)
	}
	if err := CheckName("kube-dns"); err == nil || !strings.Contains(err.Error(), "kube-proxy, coredns, node-agent") {
		t.Errorf("unknown add-on: %v", err)
	}
}

// TestReconcile drives the manager's apply logic against the fake
// clientset, which tracks field managers as the apiserver does.
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	s := settings()
	changed, err := Reconcile(ctx, cs, s)
	if err != nil || !changed {
		t.Fatalf("first reconcile: changed %v, %v", changed, err)
	}
	ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != s.KubeProxyImage() {
		t.Errorf("kube-proxy image %s, want %s", img, s.KubeProxyImage())
	}
	d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault || d.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
		t.Errorf("CoreDNS Deployment: replicas %d, dnsPolicy %s, anti-affinity %v", *d.Spec.Replicas, d.Spec.Template.Spec.DNSPolicy, d.Spec.Template.Spec.Affinity.PodAntiAffinity)
	}
	svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != "10.96.0.10" {
		t.Fatalf("kube-dns Service: %v, %v", svc, err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}

	// Unchanged settings: nothing applied, so a user's edit of a field
	// the manager owns stays too (until the settings change).
	if changed, err := Reconcile(ctx, cs, s); err != nil || changed {
		t.Fatalf("second reconcile with the same settings: changed %v, %v", changed, err)
	}

	// A workload deleted by hand comes back at the next reconcile.
	if err := cs.AppsV1().DaemonSets("kube-system").Delete(ctx, "kube-proxy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if changed, err := Reconcile(ctx, cs, s); err != nil || !changed {
		t.Fatalf("reconcile after kube-proxy's DaemonSet was deleted: changed %v, %v", changed, err)
	}
	if ds, err = cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err != nil {
		t.Fatalf("kube-proxy's DaemonSet not applied again: %v", err)
	}

	// A user's label and a scaled CoreDNS survive a re-apply for a new
	// image repository, which moves both images.
	ds.Labels["team"] = "net"
	if _, err := cs.AppsV1().DaemonSets("kube-system").Update(ctx, ds, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	d.Spec.Replicas = ptr(int32(3))
	if _, err := cs.AppsV1().Deployments("kube-system").Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-scale"}); err != nil {
		t.Fatal(err)
	}
	s.ImageRepository = "mirror.example"
	if changed, err := Reconcile(ctx, cs, s); err != nil || !changed {
		t.Fatalf("reconcile for a new repository: changed %v, %v", changed, err)
	}
	ds, _ = cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	d, _ = cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if ds.Spec.Template.Spec.Containers[0].Image != "mirror.example/kube-proxy:v1.37.2" || d.Spec.Template.Spec.Containers[0].Image != "mirror.example/coredns:"+CoreDNSVersion {
		t.Errorf("images after the new repository: %s, %s", ds.Spec.Template.Spec.Containers[0].Image, d.Spec.Template.Spec.Containers[0].Image)
	}
	if ds.Labels["team"] != "net" {
		t.Errorf("the user's label on the DaemonSet is gone: %v", ds.Labels)
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("the scaled CoreDNS went back to %d replicas", *d.Spec.Replicas)
	}

	// A new cluster DNS address replaces the Service (its IP is
	// immutable).
	s.ClusterDNS = "10.96.0.53"
	if _, err := Reconcile(ctx, cs, s); err != nil {
		t.Fatal(err)
	}
	if svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); err != nil || svc.Spec.ClusterIP != "10.96.0.53" {
		t.Fatalf("kube-dns Service after a new address: %v, %v", svc, err)
	}

	// Disabling CoreDNS deletes what the manager made and leaves an
	// object of the same name that it did not make.
	theirs := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system", UID: types.UID("theirs")}}
	if err := cs.CoreV1().ServiceAccounts("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, theirs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Disabled = []string{CoreDNS}
	if changed, err := Reconcile(ctx, cs, s); err != nil || !changed {
		t.Fatalf("reconcile with CoreDNS disabled: changed %v, %v", changed, err)
	}
	for _, o := range mustObjects(t, CoreDNS, s) {
		_, err := o.get(ctx, cs)
		if o.kind == "ServiceAccount" {
			if err != nil {
				t.Errorf("the user's own ServiceAccount coredns was deleted: %v", err)
			}
			continue
		}
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s of disabled CoreDNS: %v, want it deleted", o, err)
		}
	}
	if _, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err != nil {
		t.Errorf("kube-proxy went with CoreDNS: %v", err)
	}
	st, err := Statuses(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 3 || st[0].State != "running" || st[0].Kind != "DaemonSet" || st[1].State != "disabled" ||
		st[2].State != "running" || st[2].Kind != "DaemonSet" || st[2].Image != "mirror.example/k8s-master:0.0.0-git4abe6b0" {
		t.Errorf("statuses %+v, want kube-proxy running, coredns disabled, the node agent running", st)
	}
}

func mustObjects(t *testing.T, name string, s Settings) []object {
	t.Helper()
	objs, err := objectsOf(name, s)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestKeepWaitsForTheGate: while the gate holds (masters of mixed
// versions), the leader applies nothing; once it opens, it applies.
func TestKeepWaitsForTheGate(t *testing.T) {
	defer func(p time.Duration) { gatePeriod = p }(gatePeriod)
	gatePeriod = 10 * time.Millisecond
	cs := fake.NewClientset()
	var open atomic.Bool
	asked := make(chan struct{}, 100)
	gate := func(context.Context) error {
		select {
		case asked <- struct{}{}:
		default:
		}
		if !open.Load() {
			return errors.New("m2 runs v1.36.3")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); keep(ctx, cs, settings(), gate) }()
	for range 3 {
		<-asked
	}
	if _, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("kube-proxy applied while the gate held: %v", err)
	}
	open.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kube-proxy not applied 10 s after the gate opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
