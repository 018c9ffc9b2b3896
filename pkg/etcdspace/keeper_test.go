package etcdspace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/component-base/metrics/testutil"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/etcd"
)

func quota(n int64) func(*embed.Config) {
	return func(c *embed.Config) { c.QuotaBackendBytes = n }
}

func client(t *testing.T, urls ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// fill writes ~1 MiB values until etcd refuses them with NOSPACE; it
// returns the keys written.
func fill(t *testing.T, ctx context.Context, cli *clientv3.Client) []string {
	t.Helper()
	value := strings.Repeat("x", 1<<20)
	var keys []string
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatal("no NOSPACE after 200 MiB")
		}
		k := fmt.Sprintf("/fill/%03d", i)
		_, err := cli.Put(ctx, k, value)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			return keys
		}
		if err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		keys = append(keys, k)
	}
}

// runKeeper runs k until the test ends.
func runKeeper(t *testing.T, k *Keeper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A one-member etcd with a 16 MiB quota: filled until NOSPACE, reads still
// work, and after deletes the keeper compacts, defragments and disarms, so
// that writes work again with nobody doing anything else.
func TestNoSpaceRecovers(t *testing.T) {
	url := testkit.StartEtcd(t, quota(16<<20))
	cli := client(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	keys := fill(t, ctx, cli)
	t.Logf("NOSPACE after %d values of 1 MiB", len(keys))
	if full, err := NoSpace(ctx, cli); err != nil || !full {
		t.Fatalf("NoSpace = %v, %v after the quota was hit", full, err)
	}
	if r, err := cli.Get(ctx, keys[0]); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("read under NOSPACE: %v", err)
	}
	before := counter(t, "default")
	runKeeper(t, New(cli, url, Options{Poll: 100 * time.Millisecond, Settle: 10 * time.Millisecond}))

	// Deleting is allowed under NOSPACE; the apiserver's deletes are the
	// same transactions without puts.
	if _, err := cli.Delete(ctx, "/fill/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
	deleted := time.Now()
	for {
		_, err := cli.Put(ctx, "/after", "v")
		if err == nil {
			break
		}
		if !errors.Is(err, rpctypes.ErrNoSpace) {
			t.Fatalf("put after deletes: %v", err)
		}
		if time.Since(deleted) > 20*time.Second {
			t.Fatalf("writes still refused 20 s after the deletes: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("writes back %.1f s after the deletes", time.Since(deleted).Seconds())
	if full, err := NoSpace(ctx, cli); err != nil || full {
		t.Errorf("NoSpace = %v, %v after recovery", full, err)
	}
	if got := counter(t, "default") - before; got < 1 {
		t.Errorf("defrag_total went up by %v, want at least 1", got)
	}
	st, err := cli.Status(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if st.DbSize > 8<<20 {
		t.Errorf("db still %d bytes after compaction and defragmentation", st.DbSize)
	}
}

// A keeper on each of three members: the members whose database is mostly
// free are defragmented one at a time, followers first, the leader last
// after it handed its leadership over.
func TestOneAtATimeLeaderLast(t *testing.T) {
	urls := testkit.StartEtcdCluster(t, 3, quota(256<<20))
	cli := client(t, urls...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	value := strings.Repeat("y", 512<<10)
	for i := range 40 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cli.Delete(ctx, "/k/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	ms, err := etcd.Members(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	leader := ""
	for _, m := range ms {
		if m.Leader {
			leader = m.Name
		}
		t.Logf("%s: %d bytes, %d in use, leader %v", m.Name, m.DBSize, m.DBSizeInUse, m.Leader)
	}

	// The apiserver writes all the time (leases); bbolt counts freed pages
	// as free only after a later commit, which these writes make.
	go func() {
		for ctx.Err() == nil {
			_, _ = cli.Put(ctx, "/tick", time.Now().String())
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var mu sync.Mutex
	var events []string
	running := 0
	overlap := false
	hook := func(member string, started bool) {
		mu.Lock()
		defer mu.Unlock()
		if started {
			running++
			overlap = overlap || running > 1
			events = append(events, member)
		} else {
			running--
		}
	}
	for _, u := range urls {
		k := New(client(t, u), u, Options{Interval: 200 * time.Millisecond, Poll: 100 * time.Millisecond, Settle: 200 * time.Millisecond, MinSize: 1 << 20})
		k.onDefrag = hook
		runKeeper(t, k)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("defragmented %v in a minute, want all 3 members", events)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing more to do: no member is defragmented twice.
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("order %v, leader at first %s", events, leader)
	if overlap {
		t.Error("two defragmentations ran at once")
	}
	if len(events) != 3 || events[2] != leader {
		t.Errorf("defragmented %v; want each member once and the leader %s last", events, leader)
	}
	seen := map[string]bool{}
	for _, e := range events {
		seen[e] = true
	}
	if len(seen) != 3 {
		t.Errorf("defragmented %v; want each member once", events)
	}
	ms, err = etcd.Members(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.DBSize > 8<<20 {
			t.Errorf("%s still %d bytes", m.Name, m.DBSize)
		}
		if m.Leader && m.Name == leader {
			t.Errorf("%s still leads; it should have handed its leadership over", m.Name)
		}
	}
}

func counter(t *testing.T, member string) float64 {
	v, err := testutil.GetCounterMetricValue(defragTotal.WithLabelValues(member, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}
