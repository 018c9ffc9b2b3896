package secretskey

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// The rewrite works on etcd directly rather than through the apiserver.
//
// Through the apiserver a no-op update does rewrite an object read with a
// non-primary key (etcd3 store's GuaranteedUpdate skips the write only
// when the data is equal and the read was not stale), but each object then
// costs a decode, admission, an encode and a raft round trip of its own on
// masters that serve the cluster at the same time. Here each object is
// decrypted and encrypted again by the apiserver's own transformers, built
// from the same configuration file the masters run (the bytes inside the
// envelope are left exactly as the apiserver wrote them), and 120
// objects go to etcd in one transaction in which each put carries its own
// compare on the object's mod revision: an object someone changed or
// deleted meanwhile is left alone (its writer used the new key already,
// since every master made it primary before the rewrite began), never
// overwritten with stale content. The apiservers see each put through their
// etcd watch like any other update (a MODIFIED event with the same object
// and a new resourceVersion), so their watch caches stay coherent, and
// nothing is skipped that an update through the API would run: the object
// is the same, so admission has nothing to judge.

const (
	pageSize = 500
	// batchOps stays under etcd's --max-txn-ops (128), which a
	// transaction's nested ones share with it (each of ours needs one of
	// what its parent leaves); batchBytes stays well under etcd's request
	// size limit (1.5 MiB).
	batchOps   = 120
	batchBytes = 512 << 10
)

type rewriter struct {
	cli     *clientv3.Client
	keys    []Key // provider order; keys[0] is the new primary
	workers int
	dir     string // where the transformers' configuration file is made
	printf  func(string, ...any)

	all, only value.Transformer // every key, and the primary alone
	done      atomic.Int64
	// skipped counts objects whose compare failed: changed or deleted by
	// an apiserver meanwhile, which wrote them with the new key.
	skipped atomic.Int64
}

// transformerFor builds the apiserver's transformer for resource from a
// configuration with keys.
func transformerFor(ctx context.Context, dir string, keys []Key, resource string) (value.Transformer, error) {
	f, err := os.CreateTemp(dir, ".rotate-encryption-*.yaml")
	if err != nil {
		return nil, fmt.Errorf("write a temporary encryption configuration: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(Render(keys))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	ec, err := encryptionconfig.LoadEncryptionConfig(ctx, f.Name(), false, "k8s-master-rotate-key")
	if err != nil {
		return nil, fmt.Errorf("load the encryption configuration: %w", err)
	}
	t, ok := ec.Transformers[schema.GroupResource{Resource: resource}]
	if !ok {
		return nil, fmt.Errorf("the encryption configuration has no transformer for %s", resource)
	}
	return t, nil
}

// run rewrites every object of Resources not yet under the primary key,
// then verifies every object under the primary key alone, and goes again
// until a verification pass finds nothing to rewrite.
func (rw *rewriter) run(ctx context.Context, res *Result) error {
	if rw.workers <= 0 {
		rw.workers = 16
	}
	primary := Provider(rw.keys[0].Name)
	start := time.Now()
	for _, r := range Resources {
		var err error
		if rw.all, err = transformerFor(ctx, rw.dir, rw.keys, r.Name); err != nil {
			return err
		}
		if rw.only, err = transformerFor(ctx, rw.dir, rw.keys[:1], r.Name); err != nil {
			return err
		}
		cnt, err := rw.cli.Get(ctx, r.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("count %s in etcd: %w", r.Name, err)
		}
		rw.printf("phase 3/4: rewriting %d %s under %s", cnt.Count, r.Name, rw.keys[0].Name)
		stopProgress := rw.progress(r.Name, cnt.Count, start)
		for pass := 1; ; pass++ {
			if err := rw.pass(ctx, r, primary); err != nil {
				stopProgress()
				return err
			}
			verified, stale, err := rw.verify(ctx, r, primary)
			if err != nil {
				stopProgress()
				return err
			}
			if stale == 0 {
				res.Verified += verified
				break
			}
			if pass >= 5 {
				stopProgress()
				return fmt.Errorf("%d %s are still not under %s after %d passes (written with another key meanwhile?); rerun k8s-master secrets rotate-key to go on", stale, r.Name, rw.keys[0].Name, pass)
			}
			rw.printf("  %d %s changed meanwhile; another pass", stale, r.Name)
		}
		stopProgress()
	}
	res.Rewritten = int(rw.done.Load())
	res.Skipped = int(rw.skipped.Load())
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.PerSecond = float64(res.Rewritten) / res.Seconds
	}
	rw.printf("  rewrote %d objects in %.2f s (%.0f/s); verified %d under %s (%d changed by their own writers meanwhile)", res.Rewritten, res.Seconds, res.PerSecond, res.Verified, rw.keys[0].Name, res.Skipped)
	return nil
}

// progress prints n/total and the rate every second until stopped.
func (rw *rewriter) progress(what string, total int64, start time.Time) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n := rw.done.Load()
				rw.printf("  rewritten %d/%d %s (%.0f/s)", n, total, what, float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// scan pages through the prefix and hands each page's keys and values to fn.
func (rw *rewriter) scan(ctx context.Context, prefix string, fn func(kvs []kv) error) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := rw.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(pageSize))
		if err != nil {
			return fmt.Errorf("read %s from etcd: %w", prefix, err)
		}
		page := make([]kv, len(resp.Kvs))
		for i, x := range resp.Kvs {
			page[i] = kv{key: string(x.Key), value: x.Value, modRev: x.ModRevision}
		}
		if err := fn(page); err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

type kv struct {
	key    string
	value  []byte
	modRev int64
}

// pass rewrites every object not under primary, with rw.workers
// transactions in flight.
func (rw *rewriter) pass(ctx context.Context, r Resource, primary string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []kv, rw.workers)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) { errOnce.Do(func() { firstErr = err; cancel() }) }
	for range rw.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := rw.commit(ctx, b); err != nil {
					fail(err)
				}
			}
		}()
	}
	var batch []kv
	size := 0
	flush := func() {
		if len(batch) > 0 {
			select {
			case batches <- batch:
			case <-ctx.Done():
			}
			batch, size = nil, 0
		}
	}
	err := rw.scan(ctx, r.Prefix, func(page []kv) error {
		for _, x := range page {
			if bytes.HasPrefix(x.value, []byte(primary)) {
				continue
			}
			batch = append(batch, x)
			size += len(x.value)
			if len(batch) >= batchOps || size >= batchBytes {
				flush()
			}
		}
		return ctx.Err()
	})
	flush()
	close(batches)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return err
}

// commit re-encrypts a batch and writes it in one transaction, each put
// guarded by the object's mod revision.
func (rw *rewriter) commit(ctx context.Context, b []kv) error {
	ops := make([]clientv3.Op, 0, len(b))
	for _, x := range b {
		dataCtx := value.DefaultContext(x.key)
		plain, _, err := rw.all.TransformFromStorage(ctx, x.value, dataCtx)
		if err != nil {
			return fmt.Errorf("%s cannot be decrypted with any key of the configuration (%w); nothing was removed: find out how it was written, then rerun k8s-master secrets rotate-key", x.key, err)
		}
		enc, err := rw.all.TransformToStorage(ctx, plain, dataCtx)
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", x.key, err)
		}
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(x.key), "=", x.modRev)},
			[]clientv3.Op{clientv3.OpPut(x.key, string(enc), clientv3.WithIgnoreLease())},
			nil))
	}
	resp, err := rw.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("write re-encrypted objects to etcd: %w; rerun k8s-master secrets rotate-key to go on", err)
	}
	n := 0
	for _, r := range resp.Responses {
		if t := r.GetResponseTxn(); t != nil && t.Succeeded {
			n++
		}
	}
	rw.done.Add(int64(n))
	rw.skipped.Add(int64(len(b) - n))
	return nil
}

// verify reads every object and decrypts it with the primary key alone;
// it counts the verified ones and those not (yet) under primary. An object
// under primary that does not decrypt is an error: it must not lose the
// other keys.
func (rw *rewriter) verify(ctx context.Context, r Resource, primary string) (verified, stale int, err error) {
	err = rw.scan(ctx, r.Prefix, func(page []kv) error {
		for _, x := range page {
			if !bytes.HasPrefix(x.value, []byte(primary)) {
				stale++
				continue
			}
			if _, _, err := rw.only.TransformFromStorage(ctx, x.value, value.DefaultContext(x.key)); err != nil {
				return fmt.Errorf("%s carries the new key's prefix but does not decrypt with it (%w); the old keys are kept: rerun k8s-master secrets rotate-key", x.key, err)
			}
			verified++
		}
		return nil
	})
	return verified, stale, err
}
