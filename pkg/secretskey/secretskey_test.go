package secretskey

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/value"
)

func mustKey(t *testing.T, existing ...string) Key {
	t.Helper()
	k, err := NewKey(existing)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewKeyNames(t *testing.T) {
	for _, c := range []struct {
		existing []string
		want     string
	}{
		{nil, "key1"},
		{[]string{"key1"}, "key2"},
		{[]string{"key9", "key3"}, "key10"},
		{[]string{"mykey", "key2x"}, "key1"},
	} {
		if got := mustKey(t, c.existing...).Name; got != c.want {
			t.Errorf("NewKey(%v) = %s, want %s", c.existing, got, c.want)
		}
	}
}

// The init file (pkg/apiserverconfig) and Render's output both parse back
// to their keys; Render is deterministic, so hashes compare configurations.
func TestRenderParse(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t, "key1")
	doc := Render([]Key{k2, k1})
	got, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(Names(got), []string{"key2", "key1"}) || !bytes.Equal(got[0].Secret, k2.Secret) || !bytes.Equal(got[1].Secret, k1.Secret) {
		t.Fatalf("parsed %v", Names(got))
	}
	if Hash(Render(got)) != Hash(doc) {
		t.Fatal("the same keys render differently")
	}
	if Hash(Render([]Key{k1, k2})) == Hash(doc) {
		t.Fatal("order must change the configuration: the first key is the primary")
	}
	for _, bad := range []string{
		"kind: Other\n",
		"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n",
		"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: []\n",
		"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse accepted %q", bad)
		}
	}
}

func TestSeal(t *testing.T) {
	s, err := NewSealer([]byte("sa key bytes"))
	if err != nil {
		t.Fatal(err)
	}
	k := mustKey(t)
	sk, err := s.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sk.Sealed, k.Secret) {
		t.Fatal("the sealed form contains the secret")
	}
	got, err := s.Open(sk)
	if err != nil || !bytes.Equal(got.Secret, k.Secret) {
		t.Fatalf("open: %v", err)
	}
	renamed := sk
	renamed.Name = "key7"
	if _, err := s.Open(renamed); err == nil {
		t.Fatal("a sealed key opened under another name")
	}
	other, _ := NewSealer([]byte("another cluster's sa key"))
	if _, err := other.Open(sk); err == nil || !strings.Contains(err.Error(), "sa.key") {
		t.Fatalf("another sa.key opened the key, or the error does not say what to do: %v", err)
	}
}

// runPhases drives a rotation from d to its end with Advance, checking the
// rule that makes a lagging master safe: between two consecutive recorded
// configurations, each one's primary key is in the other one's keys (a
// master one step behind reads what the others write, and the others read
// what it writes), and keys leave only after the rewrite.
func runPhases(t *testing.T, d Desired) []Desired {
	t.Helper()
	states := []Desired{d}
	// A run resumed after the rewrite was recorded.
	rewritten := d.Rotation.Phase == PhaseRewritten || d.Rotation.Phase == PhaseRemoving
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("the rotation does not end")
		}
		tr, err := Advance(d, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(tr.Needs, Rewrite) {
			if !slices.Contains(tr.Needs, WaitLoaded) || slices.Index(tr.Needs, WaitLoaded) > slices.Index(tr.Needs, Rewrite) {
				t.Fatalf("phase %s rewrites before every master runs the new primary", d.Rotation.Phase)
			}
			if d.Primary() != d.Rotation.To {
				t.Fatalf("phase %s rewrites while %s is primary", d.Rotation.Phase, d.Primary())
			}
			rewritten = true
		}
		next := tr.Next
		if !slices.Contains(next.KeyNames(), d.Primary()) || !slices.Contains(d.KeyNames(), next.Primary()) {
			t.Fatalf("%v -> %v: a master one step behind could not read the other's writes", d.KeyNames(), next.KeyNames())
		}
		for _, k := range d.KeyNames() {
			if !slices.Contains(next.KeyNames(), k) && !rewritten {
				t.Fatalf("key %s removed before the rewrite", k)
			}
		}
		if next.Primary() != d.Primary() && !slices.Contains(tr.Needs, WaitLoaded) && d.Rotation.Phase != PhaseAdding {
			t.Fatalf("primary changed without waiting")
		}
		states = append(states, next)
		d = next
		if tr.Done {
			if d.Rotation != nil || d.LastRotated.IsZero() {
				t.Fatal("the last state still records a rotation")
			}
			return states
		}
	}
}

func TestPhases(t *testing.T) {
	k1 := SealedKey{Name: "key1"}
	k2 := SealedKey{Name: "key2"}
	d, err := Start(Desired{Keys: []SealedKey{k1}}, k2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.KeyNames(), []string{"key1", "key2"}) {
		t.Fatalf("the new key must come after the one in use, got %v", d.KeyNames())
	}
	states := runPhases(t, d)
	var got []string
	for _, s := range states {
		p := "done"
		if s.Rotation != nil {
			p = string(s.Rotation.Phase)
		}
		got = append(got, p+"="+strings.Join(s.KeyNames(), ","))
	}
	want := []string{
		"new-key-added=key1,key2",
		"new-key-primary=key2,key1",
		"objects-rewritten=key2,key1",
		"old-key-removed=key2",
		"done=key2",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("phases:\n got %v\nwant %v", got, want)
	}
	// A rerun resumes from any recorded phase to the same end.
	for _, s := range states[:len(states)-1] {
		end := runPhases(t, s)
		if last := end[len(end)-1]; !slices.Equal(last.KeyNames(), []string{"key2"}) {
			t.Fatalf("resumed from %s, ended with %v", s.Rotation.Phase, last.KeyNames())
		}
	}
	if _, err := Start(d, SealedKey{Name: "key3"}, time.Now()); err == nil {
		t.Fatal("a second rotation started over the first")
	}
	if _, err := Start(Desired{Keys: []SealedKey{k1}}, k1, time.Now()); err == nil {
		t.Fatal("a rotation to a key in use started")
	}
	bad := d
	bad.Rotation = &Rotation{To: "key2", Phase: "later-phase"}
	if _, err := Advance(bad, time.Now()); err == nil {
		t.Fatal("an unknown phase was advanced")
	}
	bad.Keys = []SealedKey{k1}
	bad.Rotation = &Rotation{To: "key2", Phase: PhasePrimary}
	if _, err := Advance(bad, time.Now()); err == nil {
		t.Fatal("a rotation whose new key is gone was advanced")
	}
}

// The rewrite uses the apiserver's own transformers: a value it writes
// carries the new key's envelope and decrypts with the new key alone,
// and values written under the old key or in the clear decrypt with the
// configuration of both.
func TestTransformers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k1, k2 := mustKey(t), mustKey(t, "key1")
	old, err := transformerFor(ctx, dir, []Key{k1}, "secrets")
	if err != nil {
		t.Fatal(err)
	}
	both, err := transformerFor(ctx, dir, []Key{k2, k1}, "secrets")
	if err != nil {
		t.Fatal(err)
	}
	only, err := transformerFor(ctx, dir, []Key{k2}, "secrets")
	if err != nil {
		t.Fatal(err)
	}
	key := value.DefaultContext("/registry/secrets/default/s1")
	plain := []byte("k8s\x00 protobuf object")
	stored, err := old.TransformToStorage(ctx, plain, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(stored, []byte(Provider("key1"))) {
		t.Fatalf("stored %q", stored[:30])
	}
	for _, in := range [][]byte{stored, plain} {
		got, stale, err := both.TransformFromStorage(ctx, in, key)
		if err != nil || !bytes.Equal(got, plain) || !stale {
			t.Fatalf("read under both keys: %q stale=%v %v", got, stale, err)
		}
	}
	again, err := both.TransformToStorage(ctx, plain, key)
	if err != nil || !bytes.HasPrefix(again, []byte(Provider("key2"))) {
		t.Fatalf("rewritten %q %v", again[:30], err)
	}
	if got, _, err := only.TransformFromStorage(ctx, again, key); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the new key alone does not read the rewrite: %v", err)
	}
	if _, _, err := only.TransformFromStorage(ctx, stored, key); err == nil {
		t.Fatal("the new key alone read a value of the old key: verification would pass objects it must not")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("temporary configuration files left: %v", ents)
	}
}
