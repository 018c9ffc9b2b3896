// Command benchload is the client side of scripts/bench-scale.sh and
// scripts/bench-api.sh. It talks to any apiserver through an admin
// kubeconfig, with no client-side rate limit (the server's limits are what
// is measured), and prints one line of key=value figures.
//
//	benchload scale -kubeconfig K -nodes 50 -pods 1000 [-churn] [-pids 1,2]
//	benchload api -kubeconfig K -workers 8 -duration 20s
//
// scale registers fake Nodes for kwok (annotation kwok.x-k8s.io/node=fake,
// which kwok is told to manage), waits for them to be Ready, creates
// Deployments of at most 1000 fake pods each and waits until every pod is
// Running; with -churn it then scales the first Deployment to 0, waits
// until its pods are gone, scales it back and waits until all are Running
// again. While it runs it samples the resident memory of the given pids
// every 100 ms and reports the peak of their sum.
//
// api runs N workers for a fixed time; each repeats create, get, list,
// update and delete of its own ConfigMap and every request's latency is
// recorded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchload scale|api ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "scale":
		err = scale(os.Args[2:])
	case "api":
		err = api(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (scale or api)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchload:", err)
		os.Exit(1)
	}
}

// client builds a clientset without client-side throttling: the load is
// limited by the server only, as the benchmarks intend.
func client(kubeconfig string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	rc.QPS, rc.Burst = 1e6, 1e6
	rc.UserAgent = "benchload"
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	return kubernetes.NewForConfig(rest.CopyConfig(rc))
}

const (
	kwokAnnotation = "kwok.x-k8s.io/node"
	namespace      = "bench"
	perDeployment  = 1000
)

func scale(args []string) error {
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	nodes := fs.Int("nodes", 50, "fake nodes to register")
	pods := fs.Int("pods", 1000, "fake pods, in Deployments of at most 1000")
	churn := fs.Bool("churn", false, "then scale the first Deployment to 0 and back")
	pidList := fs.String("pids", "", "comma-separated pids whose summed RSS is sampled")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	cs, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	pids, err := parsePids(*pidList)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	peak := sampleRSS(ctx, pids)
	cpu0 := cpuSeconds(pids)

	t0 := time.Now()
	if err := registerNodes(ctx, cs, *nodes); err != nil {
		return err
	}
	nodesReady := time.Since(t0)

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace))
	podInf := factory.Core().V1().Pods().Informer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInf.HasSynced) {
		return errors.New("pod informer did not sync; is the apiserver up?")
	}
	// scheduled counts pods bound to a node: with created and running it
	// tells which stage (controller-manager, scheduler, kwok) the time goes
	// to.
	count3 := func(dep string) (total, scheduled, running int) {
		for _, o := range podInf.GetStore().List() {
			p := o.(*corev1.Pod)
			if dep != "" && p.Labels["app"] != dep {
				continue
			}
			total++
			if p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
				scheduled++
			}
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return
	}
	count := func(dep string) (total, running int) { t, _, r := count3(dep); return t, r }
	waitFor := func(what string, done func() bool) error {
		for !done() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: not done after %s: %w (see the stack's logs)", what, *timeout, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		return nil
	}

	var deps []string
	t1 := time.Now()
	for left, i := *pods, 0; left > 0; i++ {
		n := min(left, perDeployment)
		left -= n
		name := fmt.Sprintf("fake-%d", i)
		deps = append(deps, name)
		if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, deployment(name, int32(n)), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment %s: %w", name, err)
		}
	}
	var created, scheduled time.Duration
	if err := waitFor("all pods Running", func() bool {
		t, s, r := count3("")
		if created == 0 && t >= *pods {
			created = time.Since(t1)
		}
		if scheduled == 0 && s >= *pods {
			scheduled = time.Since(t1)
		}
		return r == *pods
	}); err != nil {
		return err
	}
	running := time.Since(t1)
	out := fmt.Sprintf("nodes_ready_s=%.2f created_s=%.2f scheduled_s=%.2f running_s=%.2f", nodesReady.Seconds(), created.Seconds(), scheduled.Seconds(), running.Seconds())

	if *churn {
		dep := deps[0]
		n, _ := count(dep)
		t2 := time.Now()
		if err := scaleTo(ctx, cs, dep, 0); err != nil {
			return err
		}
		if err := waitFor("pods of "+dep+" gone", func() bool { t, _ := count(dep); return t == 0 }); err != nil {
			return err
		}
		down := time.Since(t2)
		t3 := time.Now()
		if err := scaleTo(ctx, cs, dep, int32(n)); err != nil {
			return err
		}
		if err := waitFor("pods of "+dep+" Running again", func() bool { _, r := count(dep); return r == n }); err != nil {
			return err
		}
		up := time.Since(t3)
		out += fmt.Sprintf(" churn_down_s=%.2f churn_up_s=%.2f churn_s=%.2f", down.Seconds(), up.Seconds(), (down + up).Seconds())
	}
	cancel()
	fmt.Printf("%s peak_rss_mb=%d cpu_s=%.1f\n", out, <-peak/1024, cpuSeconds(pids)-cpu0)
	return nil
}

// registerNodes creates n Nodes for kwok to manage and waits until kwok has
// made them all Ready.
func registerNodes(ctx context.Context, cs *kubernetes.Clientset, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := cs.CoreV1().Nodes().Create(ctx, fakeNode(fmt.Sprintf("kwok-node-%d", i)), metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				errs <- fmt.Errorf("create node kwok-node-%d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	for {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		ready := 0
		for _, nd := range list.Items {
			for _, c := range nd.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d fake nodes Ready: %w (is kwok running with --manage-nodes-with-annotation-selector=%s=fake?)", ready, n, ctx.Err(), kwokAnnotation)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func fakeNode(name string) *corev1.Node {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokAnnotation: "fake"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": name},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: kwokAnnotation, Value: "fake", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res,
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "fake", OperatingSystem: "linux", Architecture: "amd64"},
		},
	}
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"type": "kwok"},
					Tolerations:  []corev1.Toleration{{Key: kwokAnnotation, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Containers: []corev1.Container{{
						Name:  "fake",
						Image: "fake",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("10m"),
							corev1.ResourceMemory: resource.MustParse("16Mi"),
						}},
					}},
				},
			},
		},
	}
}

// scaleTo sets the Deployment's replicas with a merge patch: the
// deployment controller writes the object all the time, so a read and an
// update of the scale would often conflict.
func scaleTo(ctx context.Context, cs *kubernetes.Clientset, name string, n int32) error {
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
	if _, err := cs.AppsV1().Deployments(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("scale %s to %d: %w", name, n, err)
	}
	return nil
}

func parsePids(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-pids: %q is not a pid: %w", f, err)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// sampleRSS sums VmRSS (kB) of pids every 100 ms until ctx ends and then
// sends the largest sum seen.
func sampleRSS(ctx context.Context, pids []int) <-chan int {
	out := make(chan int, 1)
	go func() {
		peak := 0
		for {
			sum := 0
			for _, p := range pids {
				sum += vmRSS(p)
			}
			peak = max(peak, sum)
			select {
			case <-ctx.Done():
				out <- peak
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return out
}

// cpuSeconds is the user and system CPU time the pids have used so far:
// with the wall time it shows whether a stack was bound by the CPU it got
// (on a shared machine the kernel shares CPU by runnable thread, so four
// processes get more of it than one).
func cpuSeconds(pids []int) float64 {
	ticks := 0
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis; utime and stime
		// are the 14th and 15th of the whole line.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.Atoi(f[11])
			s, _ := strconv.Atoi(f[12])
			ticks += u + s
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

func vmRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func api(args []string) error {
	fs := flag.NewFlagSet("api", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	workers := fs.Int("workers", 8, "concurrent workers")
	duration := fs.Duration("duration", 20*time.Second, "how long to run")
	ns := fs.String("namespace", "bench-api", "namespace of the ConfigMaps (created if missing)")
	_ = fs.Parse(args)
	cs, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: *ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", *ns, err)
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  atomic.Int64
		wg        sync.WaitGroup
	)
	end := time.Now().Add(*duration)
	start := time.Now()
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			cms := cs.CoreV1().ConfigMaps(*ns)
			sel := labels.SelectorFromSet(labels.Set{"worker": strconv.Itoa(w)}).String()
			timed := func(f func() error) bool {
				t := time.Now()
				err := f()
				mine = append(mine, time.Since(t))
				if err != nil {
					failures.Add(1)
					return false
				}
				return true
			}
			for i := 0; time.Now().Before(end); i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				var cm *corev1.ConfigMap
				ok := timed(func() (err error) {
					cm, err = cms.Create(ctx, &corev1.ConfigMap{
						ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"worker": strconv.Itoa(w)}},
						Data:       map[string]string{"v": "0"},
					}, metav1.CreateOptions{})
					return err
				})
				if !ok {
					continue
				}
				timed(func() (err error) { cm, err = cms.Get(ctx, name, metav1.GetOptions{}); return err })
				timed(func() error { _, err := cms.List(ctx, metav1.ListOptions{LabelSelector: sel}); return err })
				timed(func() (err error) {
					if cm == nil {
						return errors.New("no object to update")
					}
					cm.Data["v"] = "1"
					_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
					return err
				})
				timed(func() error { return cms.Delete(ctx, name, metav1.DeleteOptions{}) })
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(latencies) == 0 {
		return errors.New("no request completed")
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	fmt.Printf("workers=%d ops=%d ops_s=%.0f p50_ms=%.2f p99_ms=%.2f failures=%d\n",
		*workers, len(latencies), float64(len(latencies))/elapsed.Seconds(), pct(0.50), pct(0.99), failures.Load())
	return nil
}
