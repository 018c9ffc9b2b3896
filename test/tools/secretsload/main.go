// Command secretsload drives and checks Secrets for the secrets-key
// rotation test (test/secretskey_test.go):
//
//	secretsload seed -kubeconfig K -n 5000     create secretsload-00000.. (data v = own name)
//	secretsload run -kubeconfig K -n 5000 [-servers URL,URL]
//	                                           until SIGTERM: read seeded Secrets (checking
//	                                           their data), patch them, create and delete
//	                                           others, spread over the servers given (default:
//	                                           the kubeconfig's); then print a JSON summary
//	secretsload raw -data-dir D                count the raw etcd values under
//	                                           /registry/secrets/ by envelope prefix (JSON)
//
// The client is unthrottled; every request that fails is counted with its
// error (a 409 would count too: the load uses patches, which the apiserver
// retries itself, so no conflict is expected).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/etcd"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

const namespace = "default"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: secretsload seed|run|raw ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "seed":
		err = seed(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	case "raw":
		err = raw(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "secretsload:", err)
		os.Exit(1)
	}
}

func client(kubeconfig string) (*kubernetes.Clientset, error) {
	return clientFor(kubeconfig, "")
}

// clientFor is an unthrottled client of kubeconfig, talking to server
// ("": the kubeconfig's).
func clientFor(kubeconfig, server string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags(server, kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = -1, 0
	rc.Timeout = 15 * time.Second
	return kubernetes.NewForConfig(rc)
}

func name(i int) string { return fmt.Sprintf("secretsload-%05d", i) }

func seed(args []string) error {
	fs := flag.NewFlagSet("seed", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	n := fs.Int("n", 5000, "Secrets")
	workers := fs.Int("workers", 32, "parallel creates")
	fs.Parse(args)
	cs, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *workers)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name(i)}, Data: map[string][]byte{"v": []byte(name(i))}}
				if _, err := cs.CoreV1().Secrets(namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create %s: %w", name(i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Printf("created %d Secrets in %.1f s\n", *n, time.Since(start).Seconds())
	return nil
}

// Summary is what run prints.
type Summary struct {
	OK     int64    `json:"ok"`
	Failed int64    `json:"failed"`
	Errors []string `json:"errors"`
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	n := fs.Int("n", 5000, "seeded Secrets")
	workers := fs.Int("workers", 4, "parallel clients")
	servers := fs.String("servers", "", "comma-separated apiserver URLs the workers take turns on (default: the kubeconfig's server)")
	fs.Parse(args)
	var clients []*kubernetes.Clientset
	for _, s := range strings.Split(*servers, ",") {
		cs, err := clientFor(*kubeconfig, s)
		if err != nil {
			return err
		}
		clients = append(clients, cs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var sum Summary
	var mu sync.Mutex
	count := func(err error) {
		if err == nil {
			atomic.AddInt64(&sum.OK, 1)
			return
		}
		if ctx.Err() != nil {
			return // cut short by the end of the run
		}
		atomic.AddInt64(&sum.Failed, 1)
		mu.Lock()
		if len(sum.Errors) < 20 {
			sum.Errors = append(sum.Errors, time.Now().Format("15:04:05.000")+" "+err.Error())
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range *workers {
		secrets := clients[w%len(clients)].CoreV1().Secrets(namespace)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ctx.Err() == nil; j++ {
				rctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				i := rand.IntN(*n)
				switch j % 4 {
				case 0, 1:
					s, err := secrets.Get(rctx, name(i), metav1.GetOptions{})
					if err == nil && !bytes.Equal(s.Data["v"], []byte(name(i))) {
						err = fmt.Errorf("%s reads %q", name(i), s.Data["v"])
					}
					count(err)
				case 2:
					patch := fmt.Sprintf(`{"metadata":{"annotations":{"secretsload":"%d"}}}`, j)
					_, err := secrets.Patch(rctx, name(i), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
					count(err)
				case 3:
					tmp := fmt.Sprintf("secretsload-tmp-%d-%d-%d", os.Getpid(), w, j)
					_, err := secrets.Create(rctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tmp}, Data: map[string][]byte{"v": []byte(tmp)}}, metav1.CreateOptions{})
					count(err)
					if err == nil {
						count(secrets.Delete(rctx, tmp, metav1.DeleteOptions{}))
					}
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(sum)
}

func raw(args []string) error {
	fs := flag.NewFlagSet("raw", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "a master's data directory")
	fs.Parse(args)
	st, err := config.ReadState(layout.Layout{Root: *dataDir}.State())
	if err != nil {
		return err
	}
	c := st.Config
	c.DataDir = *dataDir
	cli, err := etcd.NewClient(&c)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	counts := map[string]int{}
	from, end := "/registry/secrets/", clientv3.GetPrefixRangeEnd("/registry/secrets/")
	for {
		resp, err := cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(1000))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			counts[envelope(kv.Value)]++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return json.NewEncoder(os.Stdout).Encode(counts)
}

// envelope is a value's "k8s:enc:PROVIDER:v1:KEY:" prefix, or "plain".
func envelope(v []byte) string {
	if !bytes.HasPrefix(v, []byte("k8s:enc:")) {
		return "plain"
	}
	colons := 0
	for i, b := range v {
		if b == ':' {
			colons++
			if colons == 5 {
				return string(v[:i+1])
			}
		}
	}
	return "malformed"
}
