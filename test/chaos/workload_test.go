package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

var configMaps = corev1.SchemeGroupVersion.WithResource("configmaps")

// fakeAPI is a fake clientset whose ConfigMaps behave like the apiserver's
// for this workload (resourceVersion preconditions on update) and that
// injects errors in a fixed rotation, counting what it injected. The fake
// runs reactors under one lock, so it is linearizable.
type fakeAPI struct {
	*fake.Clientset
	rv                          int
	gets, updates, creates      int
	failed, unknown             int // injected
	conflicts, written, applied int // applied counts unknown writes that took effect
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{Clientset: fake.NewSimpleClientset()}
	tracker := f.Tracker()
	gr := schema.GroupResource{Resource: "configmaps"}
	store := func(cm *corev1.ConfigMap, ns string, update bool) error {
		f.rv++
		cm.ResourceVersion = strconv.Itoa(f.rv)
		if update {
			return tracker.Update(configMaps, cm, ns)
		}
		return tracker.Create(configMaps, cm, ns)
	}
	f.PrependReactor("get", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.gets++
		switch f.gets % 7 {
		case 3:
			f.failed++
			return true, nil, errors.New("dial tcp 10.99.0.10:6443: connect: connection refused")
		case 5:
			f.unknown++
			return true, nil, apierrors.NewServiceUnavailable("etcd is unavailable")
		}
		return false, nil, nil
	})
	f.PrependReactor("create", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cm := a.(k8stesting.CreateAction).GetObject().(*corev1.ConfigMap).DeepCopy()
		if strings.HasPrefix(cm.Name, "new-") {
			f.creates++
			switch f.creates % 5 {
			case 1:
				f.failed++
				return true, nil, apierrors.NewTooManyRequests("slow down", 1)
			case 2:
				f.unknown++
				return true, nil, apierrors.NewTimeoutError("request did not complete within requested timeout", 1)
			}
		}
		if err := store(cm, a.GetNamespace(), false); err != nil {
			return true, nil, err
		}
		f.written++
		return true, cm, nil
	})
	f.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cm := a.(k8stesting.UpdateAction).GetObject().(*corev1.ConfigMap).DeepCopy()
		cur, err := tracker.Get(configMaps, a.GetNamespace(), cm.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*corev1.ConfigMap).ResourceVersion != cm.ResourceVersion {
			f.conflicts++
			return true, nil, apierrors.NewConflict(gr, cm.Name, errors.New("the object has been modified"))
		}
		f.updates++
		switch f.updates % 6 {
		case 1:
			f.failed++
			return true, nil, errors.New("dial tcp 10.99.0.10:6443: i/o timeout")
		case 2:
			f.unknown++
			return true, nil, apierrors.NewTimeoutError("request did not complete within requested timeout", 1)
		}
		if err := store(cm, a.GetNamespace(), true); err != nil {
			return true, nil, err
		}
		if f.updates%6 == 3 {
			// Committed, but the answer never made it back.
			f.unknown++
			f.applied++
			return true, nil, apierrors.NewServerTimeout(gr, "update", 1)
		}
		f.written++
		return true, cm, nil
	})
	return f
}

func (f *fakeAPI) set(t *testing.T, ns, name, value string) {
	t.Helper()
	f.Lock()
	defer f.Unlock()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: "999999"}, Data: map[string]string{ValueKey: value}}
	if err := f.Tracker().Update(configMaps, cm, ns); err != nil {
		t.Fatal(err)
	}
}

// yieldingClient makes each ConfigMap read give the other clients time to
// run before its CAS follows, as a network round trip would: without it
// the in-memory fake may run the clients one after another, and no CAS
// would ever conflict.
type yieldingClient struct{ kubernetes.Interface }

func (c yieldingClient) CoreV1() typedcorev1.CoreV1Interface {
	return yieldingCoreV1{c.Interface.CoreV1()}
}

type yieldingCoreV1 struct{ typedcorev1.CoreV1Interface }

func (c yieldingCoreV1) ConfigMaps(ns string) typedcorev1.ConfigMapInterface {
	return yieldingConfigMaps{c.CoreV1Interface.ConfigMaps(ns)}
}

type yieldingConfigMaps struct{ typedcorev1.ConfigMapInterface }

func (c yieldingConfigMaps) Get(ctx context.Context, name string, o metav1.GetOptions) (*corev1.ConfigMap, error) {
	cm, err := c.ConfigMapInterface.Get(ctx, name, o)
	time.Sleep(200 * time.Microsecond)
	return cm, err
}

func TestWorkloadBookkeeping(t *testing.T) {
	api := newFakeAPI()
	h := NewHistory(nil)
	w := NewWorkload(yieldingClient{api}, WorkloadConfig{Namespace: "chaos-test", Clients: 4, Keys: 3, OpsPerClient: 150, Pause: -1, Seed: 7}, h)
	ctx := context.Background()
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	ops := h.Ops()

	counts := map[Outcome]int{}
	conflicts, acked, casOps := 0, 0, 0
	last := map[int]Op{}
	for _, op := range ops {
		counts[op.Outcome]++
		if op.Output == OutConflict {
			conflicts++
		}
		if op.Acknowledged() {
			acked++
		}
		if op.Complete.Before(op.Invoke) {
			t.Fatalf("completes before invoked: %+v", op)
		}
		if (op.Outcome == OK) != (op.Err == "") {
			t.Fatalf("error text does not match outcome: %+v", op)
		}
		prev, seen := last[op.Client]
		if seen && op.Invoke.Before(prev.Complete) {
			t.Fatalf("client %d overlaps itself: %+v after %+v", op.Client, op, prev)
		}
		if op.Kind == KindCAS {
			casOps++
			// A CAS carries what its client's read just before returned.
			if prev.Kind != KindRead || prev.Key != op.Key || prev.Outcome != OK || prev.Output != op.Expected || prev.Version != op.ExpectedVersion || op.ExpectedVersion == "" {
				t.Fatalf("CAS %+v after %+v", op, prev)
			}
		}
		last[op.Client] = op
	}
	if casOps == 0 || counts[Failed] != api.failed || counts[Unknown] != api.unknown || conflicts != api.conflicts || acked != api.written {
		t.Fatalf("history: %v, %d conflicts, %d acknowledged, %d CAS; injected %d failed, %d unknown; server %d conflicts, %d written",
			counts, conflicts, acked, casOps, api.failed, api.unknown, api.conflicts, api.written)
	}
	if conflicts == 0 || api.applied == 0 {
		t.Fatalf("the run exercised no conflicts (%d) or no applied unknown writes (%d)", conflicts, api.applied)
	}

	t.Logf("%d ops: %v, %d conflicts, %d acknowledged, %d CAS, %d applied unknown", len(ops), counts, conflicts, acked, casOps, api.applied)
	if r := Check(ops, 30*time.Second); r.Verdict != VerdictOK || len(r.Keys) != 3 {
		t.Fatalf("check %+v", r)
	}
	v, err := w.VerifyAcknowledged(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Lost) != 0 || v.Registers != 3 || v.Creates == 0 || len(v.Reads) != 3 {
		t.Fatalf("verification %+v", v)
	}
	if r := Check(h.Ops(), 30*time.Second); r.Verdict != VerdictOK {
		t.Fatalf("check with final reads %+v", r)
	}

	// Losses: a register back at its first value, another with a value
	// nobody wrote, an acknowledged create gone.
	ackedOn := map[string]int{}
	var created Op
	for _, op := range ops {
		if op.Acknowledged() && op.Client != 0 {
			ackedOn[op.Key]++
			if op.Kind == KindCreate {
				created = op
			}
		}
	}
	api.set(t, w.Namespace(), "reg-0", InitialValue)
	api.set(t, w.Namespace(), "reg-1", "bogus")
	if err := api.Tracker().Delete(configMaps, w.Namespace(), created.Key); err != nil {
		t.Fatal(err)
	}
	v, err = VerifyAcknowledged(ctx, api, w.Namespace(), ops)
	if err != nil {
		t.Fatal(err)
	}
	// reg-1's setup create counts too: its value is gone as well.
	if want := ackedOn["reg-0"] + ackedOn["reg-1"] + 1 + 1; len(v.Lost) != want {
		t.Fatalf("%d lost, want %d: %v", len(v.Lost), want, v.Examples(100))
	}
	ex := strings.Join(v.Examples(100), "\n")
	for _, s := range []string{"reg-0", `"bogus" was written by no one`, created.Key + `="` + created.Input + `"`, "missing at the end"} {
		if !strings.Contains(ex, s) {
			t.Fatalf("examples lack %q:\n%s", s, ex)
		}
	}
	if r := Check(append(ops, v.Reads...), 30*time.Second); r.Verdict != VerdictIllegal || len(r.Illegal()) != 2 {
		t.Fatalf("check with tampered final reads: %+v", r)
	}
}

func TestLostWritesUnknownExplainsFinalValue(t *testing.T) {
	ops := []Op{
		create(0, "k", 0, 1, "init", OK, OutWritten),
		cas(1, "k", 2, 3, "init", "a", OK, OutWritten),
		cas(2, "k", 4, 5, "a", "b", Unknown, ""),
		cas(1, "k", 6, 7, "a", "c", OK, OutWritten), // so "b" did not happen before this...
	}
	// ...but an unknown write may land late: "b" at the end is no loss.
	if lost := lostWrites(ops, "b", true); len(lost) != 0 {
		t.Fatalf("lost %v", lost)
	}
	if lost := lostWrites(ops, "c", true); len(lost) != 0 {
		t.Fatalf("lost %v", lost)
	}
	// "a" was overwritten by an acknowledged write that began after it.
	if lost := lostWrites(ops, "a", true); len(lost) != 1 || lost[0].Op.Input != "c" {
		t.Fatalf("lost %v", lost)
	}
	if lost := lostWrites(ops, "", false); len(lost) != 3 {
		t.Fatalf("lost %v", lost)
	}
}

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	cases := []struct {
		err  error
		sent bool
		want Outcome
	}{
		{nil, true, OK},
		{errors.New("dial tcp: connection refused"), false, Failed},
		{errors.New("context deadline exceeded"), true, Unknown},
		{apierrors.NewTooManyRequests("later", 1), true, Failed},
		{apierrors.NewForbidden(gr, "x", errors.New("no")), true, Failed},
		{apierrors.NewTimeoutError("slow", 1), true, Unknown},
		{apierrors.NewInternalError(errors.New("etcdserver: leader changed")), true, Unknown},
		{apierrors.NewServiceUnavailable("down"), true, Unknown},
	}
	for _, c := range cases {
		if got := classify(c.err, c.sent); got != c.want {
			t.Errorf("classify(%v, %v) = %s, want %s", c.err, c.sent, got, c.want)
		}
	}
}

// TestClientsetOverHTTP runs the CAS path through NewClientset against a
// stub server: every request on a fresh connection, no resend of a write
// answered with Retry-After, a hung write is Unknown, a conflict is OK and
// an unreachable server is Failed.
func TestClientsetOverHTTP(t *testing.T) {
	var mu sync.Mutex
	var puts int
	remotes := map[string]bool{}
	mode := ""
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		mu.Lock()
		remotes[req.RemoteAddr] = true
		m := mode
		if req.Method == http.MethodPut {
			puts++
		}
		mu.Unlock()
		rw.Header().Set("Content-Type", "application/json")
		status := func(code int, reason metav1.StatusReason, retry bool) {
			st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason}
			if retry {
				st.Details = &metav1.StatusDetails{RetryAfterSeconds: 1}
				rw.Header().Set("Retry-After", "1")
			}
			rw.WriteHeader(code)
			json.NewEncoder(rw).Encode(st)
		}
		switch {
		case req.Method == http.MethodGet:
			json.NewEncoder(rw).Encode(&corev1.ConfigMap{
				TypeMeta:   metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Name: "reg-0", Namespace: "ns", ResourceVersion: "5"},
				Data:       map[string]string{ValueKey: "init"},
			})
		case m == "retry-after":
			status(http.StatusGatewayTimeout, metav1.StatusReasonTimeout, true)
		case m == "hang":
			<-release
		case m == "conflict":
			status(http.StatusConflict, metav1.StatusReasonConflict, false)
		}
	}))
	defer srv.Close()
	defer close(release)

	run := func(host, m string, timeout time.Duration) []Op {
		mu.Lock()
		mode = m
		mu.Unlock()
		cs, err := NewClientset(&rest.Config{Host: host}, timeout)
		if err != nil {
			t.Fatal(err)
		}
		h := NewHistory(nil)
		w := NewWorkload(cs, WorkloadConfig{Namespace: "ns", Keys: 1, RequestTimeout: timeout}, h)
		w.cas(context.Background(), 1, "reg-0", "x")
		return h.Ops()
	}

	// Time enough for client-go to resend after the 1s Retry-After.
	ops := run(srv.URL, "retry-after", 3*time.Second)
	if len(ops) != 2 || ops[0].Outcome != OK || ops[0].Output != "init" || ops[1].Outcome != Unknown || puts != 1 {
		t.Fatalf("retry-after: %d PUTs, %+v", puts, ops)
	}
	ops = run(srv.URL, "conflict", time.Second)
	if ops[1].Outcome != OK || ops[1].Output != OutConflict || ops[1].ExpectedVersion != "5" {
		t.Fatalf("conflict: %+v", ops[1])
	}
	start := time.Now()
	ops = run(srv.URL, "hang", 500*time.Millisecond)
	if ops[1].Outcome != Unknown || time.Since(start) > 3*time.Second {
		t.Fatalf("hang: %+v after %s", ops[1], time.Since(start))
	}
	if len(remotes) != 6 {
		t.Fatalf("6 requests came on %d connections", len(remotes))
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	ops = run(dead.URL, "", time.Second)
	if len(ops) != 1 || ops[0].Kind != KindRead || ops[0].Outcome != Failed {
		t.Fatalf("unreachable: %+v", ops)
	}
}
