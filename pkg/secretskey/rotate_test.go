package secretskey

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/k8s-master/k8s-master/internal/testkit"
	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// TestRotateOnEtcd runs the whole rotation against a real etcd: one master
// (an Applier whose "apiserver" takes up the file at once), Secrets stored
// under key1 and in the clear, a run stopped after each of the first two
// phases, an object an apiserver rewrote meanwhile, and the rerun that
// finishes. Every value ends under key2 with its plaintext unchanged, and
// the file holds key2 alone.
func TestRotateOnEtcd(t *testing.T) {
	endpoint := testkit.StartEtcd(t)
	connect := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	cli, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l := layout.Layout{Root: t.TempDir()}
	if err := os.MkdirAll(l.PKIDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	sa := make([]byte, 64)
	rand.Read(sa)
	if err := os.WriteFile(filepath.Join(l.PKIDir(), pki.SAKey), sa, 0o600); err != nil {
		t.Fatal(err)
	}
	k1 := mustKey(t)
	if err := os.WriteFile(l.EncryptionConfig(), Render([]Key{k1}), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := transformerFor(ctx, t.TempDir(), []Key{k1}, "secrets")
	if err != nil {
		t.Fatal(err)
	}
	plain := map[string][]byte{}
	for i := range 250 {
		key := fmt.Sprintf("/registry/secrets/ns%d/s%03d", i%3, i)
		plain[key] = []byte("object " + key)
		v := plain[key]
		if i%50 != 0 { // a few stay in the clear (written before encryption)
			if v, err = old.TransformToStorage(ctx, plain[key], value.DefaultContext(key)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cli.Put(ctx, key, string(v)); err != nil {
			t.Fatal(err)
		}
	}

	// The member of testkit's etcd is called "default".
	a := NewApplier("default", l, connect, t.Logf)
	a.loadedHash = func() (string, bool) {
		h, err := encryptionconfig.GetEncryptionConfigHash(l.EncryptionConfig())
		return h, err == nil
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	if err := a.Synced(ctx); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	run := func(stop Phase) (*Result, error) {
		r := &Rotator{Client: cli, Layout: l, Out: &out, StopAfter: stop, WaitTimeout: 20 * time.Second}
		return r.Run(ctx)
	}
	fileKeys := func() []string {
		b, err := os.ReadFile(l.EncryptionConfig())
		if err != nil {
			t.Fatal(err)
		}
		keys, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return Names(keys)
	}

	// While another run holds the lock, a run is refused and records
	// nothing.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	held := concurrency.NewMutex(sess, lockPrefix)
	if err := held.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := run(""); err == nil || !strings.Contains(err.Error(), "another k8s-master secrets rotate-key is running") {
		t.Fatalf("a run beside another: %v", err)
	}
	if d, _, _, _ := readDesired(ctx, cli); d != nil {
		t.Fatalf("a refused run recorded %+v", d)
	}
	held.Unlock(ctx)
	sess.Close()

	if _, err := run(PhaseAdding); !errors.Is(err, ErrStopped) {
		t.Fatalf("first run: %v\n%s", err, out.String())
	}
	st, err := ReadStatus(ctx, cli, l)
	if err != nil || st.Rotation == nil || st.Rotation.Phase != PhaseAdding || !slices.Equal(st.Keys, []string{"key1", "key2"}) {
		t.Fatalf("after phase 1: %+v %v", st, err)
	}
	eventually(t, func() bool { return slices.Equal(fileKeys(), []string{"key1", "key2"}) })

	if _, err := run(PhasePrimary); !errors.Is(err, ErrStopped) {
		t.Fatalf("second run: %v\n%s", err, out.String())
	}
	eventually(t, func() bool { return slices.Equal(fileKeys(), []string{"key2", "key1"}) })

	// An apiserver writes one object under the new primary meanwhile.
	d, _, _, err := readDesired(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	sealer, _ := NewSealer(sa)
	keys, err := sealer.OpenAll(d.Keys)
	if err != nil {
		t.Fatal(err)
	}
	both, err := transformerFor(ctx, t.TempDir(), keys, "secrets")
	if err != nil {
		t.Fatal(err)
	}
	changed := "/registry/secrets/ns1/s001"
	plain[changed] = []byte("changed by an apiserver")
	v, err := both.TransformToStorage(ctx, plain[changed], value.DefaultContext(changed))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, changed, string(v)); err != nil {
		t.Fatal(err)
	}

	res, err := run("")
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out.String())
	}
	t.Logf("rewrite: %+v", *res)
	if res.Key != "key2" || res.Rewritten != len(plain)-1 || res.Verified != len(plain) {
		t.Fatalf("result %+v, want %d rewritten and %d verified\n%s", res, len(plain)-1, len(plain), out.String())
	}
	if !strings.Contains(out.String(), "resuming the rotation from key1 to key2") {
		t.Errorf("the rerun does not say it resumes:\n%s", out.String())
	}
	eventually(t, func() bool { return slices.Equal(fileKeys(), []string{"key2"}) })
	only, err := transformerFor(ctx, t.TempDir(), keys[:1], "secrets")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/registry/secrets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if !bytes.HasPrefix(kv.Value, []byte(Provider("key2"))) {
			t.Errorf("%s is stored as %q", kv.Key, kv.Value[:min(len(kv.Value), 30)])
			continue
		}
		got, _, err := only.TransformFromStorage(ctx, kv.Value, value.DefaultContext(kv.Key))
		if err != nil || !bytes.Equal(got, plain[string(kv.Key)]) {
			t.Errorf("%s reads %q (%v), want %q", kv.Key, got, err, plain[string(kv.Key)])
		}
	}
	st, err = ReadStatus(ctx, cli, l)
	if err != nil || st.Rotation != nil || st.Primary != "key2" || st.LastRotated == "" || len(st.Masters) != 1 || !st.Masters[0].Current {
		t.Fatalf("status at the end: %+v %v", st, err)
	}

	// A second rotation goes from key2 to key3; the sealed keys in etcd
	// never hold a key in the clear.
	if _, err := run(""); err != nil {
		t.Fatalf("second rotation: %v\n%s", err, out.String())
	}
	raw, err := cli.Get(ctx, desiredKey)
	if err != nil {
		t.Fatal(err)
	}
	d, _, _, _ = readDesired(ctx, cli)
	k3, _ := sealer.Open(d.Keys[0])
	if d.Primary() != "key3" || len(d.Keys) != 1 || bytes.Contains(raw.Kvs[0].Value, k3.Secret) || strings.Contains(string(raw.Kvs[0].Value), base64.StdEncoding.EncodeToString(k3.Secret)) {
		t.Fatalf("after the second rotation: %s", raw.Kvs[0].Value)
	}

	// A master that starts with an older file (it joined with a lagging
	// master's file, was down, or was restored from a snapshot) has the
	// desired configuration in its file once Synced returns, before its
	// apiserver is built.
	l2 := layout.Layout{Root: t.TempDir()}
	if err := os.MkdirAll(l2.PKIDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l2.PKIDir(), pki.SAKey), sa, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l2.EncryptionConfig(), Render([]Key{k1}), 0o600); err != nil {
		t.Fatal(err)
	}
	a2 := NewApplier("m2", l2, connect, t.Logf)
	a2.loadedHash = func() (string, bool) { return "", false }
	if err := a2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a2.Stop(context.Background())
	if err := a2.Synced(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(l2.EncryptionConfig()); !bytes.Equal(b, Render([]Key{k3})) {
		t.Fatalf("after the first sync the file is\n%s", b)
	}

	// With another cluster's sa.key the keys do not open: Synced fails,
	// so the apiserver is not built on a file that may lack the key in
	// use, and the file is left alone.
	if err := os.WriteFile(filepath.Join(l2.PKIDir(), pki.SAKey), []byte("another sa key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l2.EncryptionConfig(), Render([]Key{k1}), 0o600); err != nil {
		t.Fatal(err)
	}
	a3 := NewApplier("m3", l2, connect, t.Logf)
	if err := a3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a3.Stop(context.Background())
	if err := a3.Synced(ctx); err == nil || !strings.Contains(err.Error(), "sa.key") {
		t.Fatalf("Synced with a foreign sa.key: %v", err)
	}
	if b, _ := os.ReadFile(l2.EncryptionConfig()); !bytes.Equal(b, Render([]Key{k1})) {
		t.Fatalf("the file was changed:\n%s", b)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("not true after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
