package secretskey

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Applier is the component of a master that keeps its encryption
// configuration file equal to the desired configuration in etcd and
// reports, once its apiserver has reloaded the file, which one it runs.
//
// Its first sync happens before the apiserver is built (the apiserver waits
// on Synced): a master that was down during a rotation, or joins with the
// file of a master that lagged, never serves with an older configuration
// than the one in etcd when it started; from there it watches from the
// revision it read, so it misses no change.
type Applier struct {
	name    string
	l       layout.Layout
	connect func() (*clientv3.Client, error)
	logf    func(string, ...any)
	// loadedHash is the hash of the configuration the local apiserver
	// runs (false: it does not run yet).
	loadedHash func() (string, bool)

	sealer *Sealer
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	syncOnce sync.Once
	synced   chan struct{}
	syncErr  error
}

// NewApplier makes the applier of master name on data directory l;
// connect opens an etcd client to the local member.
func NewApplier(name string, l layout.Layout, connect func() (*clientv3.Client, error), logf func(string, ...any)) *Applier {
	return &Applier{name: name, l: l, connect: connect, logf: logf, loadedHash: apiserverLoadedHash, synced: make(chan struct{})}
}

// Name implements component.Component.
func (a *Applier) Name() string { return "secrets encryption configuration" }

// Start opens the etcd client and syncs and watches in the background.
func (a *Applier) Start(context.Context) error {
	sa, err := os.ReadFile(filepath.Join(a.l.PKIDir(), pki.SAKey))
	if err != nil {
		return fmt.Errorf("read the service-account key that seals the encryption keys: %w", err)
	}
	if a.sealer, err = NewSealer(sa); err != nil {
		return err
	}
	if a.cli, err = a.connect(); err != nil {
		return fmt.Errorf("etcd client for the encryption configuration: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		a.run(ctx)
	}()
	return nil
}

// Stop ends the watch.
func (a *Applier) Stop(ctx context.Context) error {
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	select {
	case <-a.done:
	case <-ctx.Done():
		return fmt.Errorf("the encryption configuration watch is still running: %w", ctx.Err())
	}
	return a.cli.Close()
}

// Synced waits until the file matches the desired configuration as etcd
// had it after Start (or there is none).
func (a *Applier) Synced(ctx context.Context) error {
	select {
	case <-a.synced:
		return a.syncErr
	case <-ctx.Done():
		return fmt.Errorf("waiting for the encryption configuration from etcd: %w", ctx.Err())
	}
}

func (a *Applier) markSynced(err error) {
	a.syncOnce.Do(func() { a.syncErr = err; close(a.synced) })
}

func (a *Applier) run(ctx context.Context) {
	var want string // hash of the desired configuration applied ("": none recorded)
	reported := ""
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		// (Re)sync: read, apply, then watch from right after the read.
		d, _, rev, err := readDesired(ctx, a.cli)
		if err == nil {
			want, err = a.apply(d)
		}
		if err != nil {
			if d != nil {
				// A desired configuration we cannot apply (bad sa.key):
				// starting the apiserver with the old file could miss the
				// key new objects are written with.
				a.markSynced(err)
			}
			a.logf("warning: secrets encryption configuration: %v; retrying", err)
			if sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		a.markSynced(nil)
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := a.cli.Watch(wctx, desiredKey, clientv3.WithRev(rev+1))
	watch:
		for {
			select {
			case <-ctx.Done():
				wcancel()
				return
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil {
					break watch // re-read and watch again
				}
				for _, ev := range wr.Events {
					if ev.Type != clientv3.EventTypePut {
						continue
					}
					if d, err := decodeDesired(ev.Kv.Value); err != nil {
						a.logf("warning: %v", err)
					} else if h, err := a.apply(d); err != nil {
						a.logf("warning: secrets encryption configuration: %v", err)
					} else {
						want = h
					}
				}
			case <-tick.C:
				if want == "" || want == reported {
					continue
				}
				if a.apiserverRuns(want) {
					keys, _ := a.fileKeys()
					if err := writeLoaded(ctx, a.cli, a.name, Loaded{Hash: want, Keys: keys, At: time.Now().UTC()}); err != nil {
						a.logf("warning: %v; retrying", err)
						continue
					}
					reported = want
				}
			}
		}
		wcancel()
		if sleep(ctx, 200*time.Millisecond) != nil {
			return
		}
	}
}

// apply writes the rendering of d (nil: nothing desired) to the file when
// it differs, and returns its hash.
func (a *Applier) apply(d *Desired) (string, error) {
	if d == nil {
		return "", nil
	}
	keys, err := a.sealer.OpenAll(d.Keys)
	if err != nil {
		return "", err
	}
	doc := Render(keys)
	path := a.l.EncryptionConfig()
	if cur, err := os.ReadFile(path); err != nil || !bytes.Equal(cur, doc) {
		if err := fsutil.WriteFileAtomic(path, doc, 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", path, err)
		}
		a.logf("secrets encryption: configuration written with keys %v (primary %s)", Names(keys), keys[0].Name)
	}
	return Hash(doc), nil
}

// apiserverRuns tells whether the local apiserver has loaded the file and
// the file still is the one of hash want.
func (a *Applier) apiserverRuns(want string) bool {
	path := a.l.EncryptionConfig()
	cur, err := os.ReadFile(path)
	if err != nil || Hash(cur) != want {
		return false
	}
	fileHash, err := encryptionconfig.GetEncryptionConfigHash(path)
	if err != nil {
		return false
	}
	got, ok := a.loadedHash()
	return ok && got == fileHash
}

func (a *Applier) fileKeys() ([]string, error) {
	b, err := os.ReadFile(a.l.EncryptionConfig())
	if err != nil {
		return nil, err
	}
	keys, err := Parse(b)
	return Names(keys), err
}

// lastConfigInfo is the apiserver's gauge naming, in its hash label, the
// hash of the encryption configuration it runs (set at start and on every
// successful automatic reload). It lives in the process-wide registry, and
// one process runs one apiserver.
const lastConfigInfo = "apiserver_encryption_config_controller_last_config_info"

func apiserverLoadedHash() (string, bool) {
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return "", false
	}
	for _, mf := range mfs {
		if mf.GetName() != lastConfigInfo {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "hash" {
					return l.GetValue(), true
				}
			}
		}
	}
	return "", false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
