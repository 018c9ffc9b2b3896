// Command steadyload is an open-loop API client for benchmarks: it starts
// requests at a fixed rate whatever the answers take (so a slow server
// cannot slow the load down and hide its own latency), alternating a
// quorum GET and an UPDATE of a few ConfigMaps, and logs each one; stats
// splits a log into requests that started inside given time windows and
// the others and prints their latency percentiles side by side.
//
//	steadyload run -kubeconfig K [-rate 100] [-duration 60s] [-keys 10] [-fresh] > log
//	steadyload stats -log log -windows W
//
// A log line is "<unix nanoseconds of the start> ok|fail <ms> [error]"; a windows
// line is "<start unix nanoseconds> <end unix nanoseconds>".
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: steadyload run|stats ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "stats":
		err = stats(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "steadyload:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	rate := fs.Int("rate", 100, "requests started per second")
	duration := fs.Duration("duration", time.Minute, "how long to run")
	keys := fs.Int("keys", 10, "ConfigMaps the load reads and updates")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout")
	fresh := fs.Bool("fresh", false, "a new connection (TLS handshake) for every request")
	fs.Parse(args)
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	if *fresh {
		// Certificate tests: every request verifies the server's chain and
		// presents the client certificate again, instead of riding one
		// connection made before a rotation.
		rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			if t, ok := rt.(*http.Transport); ok {
				t = t.Clone()
				t.DisableKeepAlives = true
				return t
			}
			return rt
		}
	}
	// The load is the point: no client-side throttling.
	rc.QPS, rc.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps("default")
	ctx := context.Background()
	for i := range *keys {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("steadyload-%d", i)}, Data: map[string]string{"n": "0"}}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	end := time.Now().Add(*duration)
	// SIGTERM ends the run early with every answer logged (tests stop a
	// client at a moment they pick).
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
loop:
	for n := 0; time.Now().Before(end); n++ {
		select {
		case <-tick.C:
		case <-stop:
			break loop
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			name := fmt.Sprintf("steadyload-%d", n%*keys)
			start := time.Now()
			var err error
			if n%2 == 0 {
				_, err = cms.Get(rctx, name, metav1.GetOptions{})
			} else {
				var cm *corev1.ConfigMap
				if cm, err = cms.Get(rctx, name, metav1.GetOptions{ResourceVersion: "0"}); err == nil {
					cm.Data = map[string]string{"n": strconv.Itoa(n)}
					_, err = cms.Update(rctx, cm, metav1.UpdateOptions{})
					if apierrors.IsConflict(err) {
						// Another request updated it first: the server
						// answered, which is what is measured.
						err = nil
					}
				}
			}
			ms := float64(time.Since(start).Microseconds()) / 1000
			res := "ok"
			if err != nil {
				// The cause after the fields stats reads, on one line.
				res = "fail " + fmt.Sprintf("%.2f", ms) + " " + strings.ReplaceAll(err.Error(), "\n", " ")
			} else {
				res = "ok " + fmt.Sprintf("%.2f", ms)
			}
			mu.Lock()
			fmt.Fprintf(out, "%d %s\n", start.UnixNano(), res)
			mu.Unlock()
		}(n)
	}
	wg.Wait()
	return nil
}

type sample struct {
	start int64
	ok    bool
	ms    float64
}

func stats(args []string) error {
	fs := flag.NewFlagSet("stats", flag.ExitOnError)
	logPath := fs.String("log", "", "log written by run")
	windowsPath := fs.String("windows", "", "windows file")
	fs.Parse(args)
	samples, err := readSamples(*logPath)
	if err != nil {
		return err
	}
	windows, err := readWindows(*windowsPath)
	if err != nil {
		return err
	}
	var in, out []sample
	for _, s := range samples {
		inside := false
		for _, w := range windows {
			if s.start >= w[0] && s.start <= w[1] {
				inside = true
				break
			}
		}
		if inside {
			in = append(in, s)
		} else {
			out = append(out, s)
		}
	}
	pin, pout := summary(in), summary(out)
	fmt.Printf("during   %s\nwithout  %s\n", pin, pout)
	if p99(out) > 0 && len(in) > 0 {
		fmt.Printf("p99 ratio %.2f\n", p99(in)/p99(out))
	}
	return nil
}

func readSamples(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		start, err1 := strconv.ParseInt(fs[0], 10, 64)
		ms, err2 := strconv.ParseFloat(fs[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad log line %q", sc.Text())
		}
		out = append(out, sample{start, fs[1] == "ok", ms})
	}
	return out, sc.Err()
}

func readWindows(path string) ([][2]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][2]int64
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		fs := strings.Fields(line)
		if len(fs) != 2 {
			continue
		}
		a, err1 := strconv.ParseInt(fs[0], 10, 64)
		b, err2 := strconv.ParseInt(fs[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad window %q", line)
		}
		out = append(out, [2]int64{a, b})
	}
	return out, nil
}

func percentile(ss []sample, p float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	ms := make([]float64, len(ss))
	for i, s := range ss {
		ms[i] = s.ms
	}
	sort.Float64s(ms)
	return ms[min(len(ms)-1, int(p*float64(len(ms))))]
}

func p99(ss []sample) float64 { return percentile(ss, 0.99) }

func summary(ss []sample) string {
	failed := 0
	for _, s := range ss {
		if !s.ok {
			failed++
		}
	}
	return fmt.Sprintf("requests %6d  failed %d  p50 %7.2f ms  p99 %7.2f ms", len(ss), failed, percentile(ss, 0.5), p99(ss))
}
