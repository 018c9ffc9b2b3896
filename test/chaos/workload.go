package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ValueKey is the ConfigMap data key that holds a register's value.
const ValueKey = "v"

// InitialValue is the value each register is created with.
const InitialValue = "init"

// WorkloadConfig shapes a Workload; zero fields take the defaults noted.
type WorkloadConfig struct {
	// Namespace to create; default "chaos-" and a random suffix.
	Namespace string
	// Clients is the number of concurrent clients; default 4.
	Clients int
	// Keys is the number of register ConfigMaps; default 3.
	Keys int
	// ReadRatio and CreateRatio are the shares of plain reads and of
	// creates; the rest are CAS updates. Both zero means 0.3 and 0.1.
	ReadRatio, CreateRatio float64
	// RequestTimeout bounds each request; default 2s.
	RequestTimeout time.Duration
	// Pause is each client's wait between ops; default 10ms, negative for none.
	Pause time.Duration
	// OpsPerClient stops a client after that many ops; 0 means run until
	// the context ends.
	OpsPerClient int
	// Seed makes the choice of ops reproducible.
	Seed uint64
}

func (c *WorkloadConfig) defaults() {
	if c.Namespace == "" {
		b := make([]byte, 4)
		rand.Read(b)
		c.Namespace = "chaos-" + hex.EncodeToString(b)
	}
	if c.Clients <= 0 {
		c.Clients = 4
	}
	if c.Keys <= 0 {
		c.Keys = 3
	}
	if c.ReadRatio == 0 && c.CreateRatio == 0 {
		c.ReadRatio, c.CreateRatio = 0.3, 0.1
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 2 * time.Second
	}
	if c.Pause == 0 {
		c.Pause = 10 * time.Millisecond
	}
}

// Workload runs clients against ConfigMaps and records every request in a
// History. Register keys are written only by CAS with unique values, so a
// value identifies the write that produced it.
type Workload struct {
	cfg    WorkloadConfig
	client kubernetes.Interface
	hist   *History
	keys   []string
}

// NewWorkload prepares a workload on client that records into hist.
func NewWorkload(client kubernetes.Interface, cfg WorkloadConfig, hist *History) *Workload {
	cfg.defaults()
	w := &Workload{cfg: cfg, client: client, hist: hist}
	for i := 0; i < cfg.Keys; i++ {
		w.keys = append(w.keys, fmt.Sprintf("reg-%d", i))
	}
	return w
}

// NewWorkloadForConfig is NewWorkload on a clientset from NewClientset.
func NewWorkloadForConfig(rc *rest.Config, cfg WorkloadConfig, hist *History) (*Workload, error) {
	cfg.defaults()
	client, err := NewClientset(rc, cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	return NewWorkload(client, cfg, hist), nil
}

// NewClientset builds a clientset for measuring availability through a VIP:
//   - a new TCP+TLS connection per request (no keep-alive, HTTP/1.1 only),
//     so no request rides a connection to a holder that has died or lost
//     the VIP; with HTTP/2 every request would share one such connection
//     until its health check gives up;
//   - dial and TLS handshake bounded by half the timeout, so an unreachable
//     VIP fails before the request is sent and counts as Failed, not Unknown;
//   - no client-side rate limit, the workload paces itself;
//   - Retry-After stripped from responses, so client-go never resends a
//     write on its own: a resent CAS or create that had already taken effect
//     would come back as a conflict and hide the first attempt's write.
func NewClientset(rc *rest.Config, timeout time.Duration) (kubernetes.Interface, error) {
	c := rest.CopyConfig(rc)
	c.Timeout = timeout
	c.QPS = -1
	tlsConf, err := rest.TLSConfigFor(c)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tlsConf.NextProtos = []string{"http/1.1"}
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: timeout / 2}).DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: timeout / 2,
		DisableKeepAlives:   true,
	}
	rt, err := rest.HTTPWrappersForConfig(c, tr)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: noRetryAfter{rt}, Timeout: timeout}
	return kubernetes.NewForConfigAndClient(c, hc)
}

type noRetryAfter struct{ http.RoundTripper }

func (n noRetryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := n.RoundTripper.RoundTrip(req)
	if resp != nil {
		resp.Header.Del("Retry-After")
	}
	return resp, err
}

// Namespace is where the workload's ConfigMaps live.
func (w *Workload) Namespace() string { return w.cfg.Namespace }

// Keys are the register ConfigMaps' names.
func (w *Workload) Keys() []string { return append([]string(nil), w.keys...) }

// Client is the clientset the workload uses.
func (w *Workload) Client() kubernetes.Interface { return w.client }

// Setup creates the namespace and the registers (with InitialValue), the
// creates recorded as client 0's ops so that the checker knows each
// register's first value. Run it before any fault.
func (w *Workload) Setup(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.cfg.Namespace}}
	rctx, cancel := context.WithTimeout(ctx, 4*w.cfg.RequestTimeout)
	_, err := w.client.CoreV1().Namespaces().Create(rctx, ns, metav1.CreateOptions{})
	cancel()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", w.cfg.Namespace, err)
	}
	for _, key := range w.keys {
		op := w.create(ctx, 0, key, InitialValue)
		if op.Outcome != OK || op.Output != OutWritten {
			return fmt.Errorf("create register %s/%s: %s %s %s", w.cfg.Namespace, key, op.Outcome, op.Output, op.Err)
		}
	}
	return nil
}

// Run drives the clients until ctx ends (or each has done OpsPerClient
// ops). An op in flight when ctx ends runs to its own deadline, so the end
// of a run adds no spurious unknown outcomes.
func (w *Workload) Run(ctx context.Context) error {
	if len(w.keys) == 0 {
		return errors.New("workload has no keys")
	}
	var wg sync.WaitGroup
	for c := 1; c <= w.cfg.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runClient(ctx, c)
		}()
	}
	wg.Wait()
	return nil
}

func (w *Workload) runClient(ctx context.Context, c int) {
	rng := mrand.New(mrand.NewPCG(w.cfg.Seed, uint64(c)))
	for n := 0; ctx.Err() == nil && (w.cfg.OpsPerClient == 0 || n < w.cfg.OpsPerClient); n++ {
		key := w.keys[rng.IntN(len(w.keys))]
		value := fmt.Sprintf("c%d-%d", c, n)
		switch p := rng.Float64(); {
		case p < w.cfg.ReadRatio:
			w.read(ctx, c, key)
		case p < w.cfg.ReadRatio+w.cfg.CreateRatio:
			w.create(ctx, c, "new-"+value, value)
		default:
			w.cas(ctx, c, key, value)
		}
		if w.cfg.Pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(w.cfg.Pause):
			}
		}
	}
}

// do times one request under its own deadline, detached from ctx's
// cancellation, and classifies its error. Whether the request reached the
// wire comes from an httptrace hook, which client-go's HTTP requests carry
// from the context.
func (w *Workload) do(ctx context.Context, op *Op, f func(context.Context) error) error {
	var sent atomic.Bool
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.RequestTimeout)
	defer cancel()
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	op.Invoke = time.Now()
	err := f(rctx)
	op.Complete = time.Now()
	op.Outcome = classify(err, sent.Load())
	if err != nil {
		op.Err = err.Error()
	}
	return err
}

// classify says what a request's error means for its effect. A status
// from the server below 500 (other than 408) is a refusal before any
// effect; 5xx may come after etcd committed (a timeout waiting for the
// commit, a leader change), so it is unknown. Without a status, the
// request had no effect only if it was never sent.
func classify(err error, sent bool) Outcome {
	if err == nil {
		return OK
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		if code >= 400 && code < 500 && code != http.StatusRequestTimeout {
			return Failed
		}
		return Unknown
	}
	if !sent {
		return Failed
	}
	return Unknown
}

func (w *Workload) read(ctx context.Context, c int, key string) (*corev1.ConfigMap, bool) {
	op := Op{Client: c, Kind: KindRead, Key: key}
	var cm *corev1.ConfigMap
	err := w.do(ctx, &op, func(ctx context.Context) (err error) {
		cm, err = w.client.CoreV1().ConfigMaps(w.cfg.Namespace).Get(ctx, key, metav1.GetOptions{})
		return err
	})
	switch {
	case err == nil:
		op.Output, op.Version = cm.Data[ValueKey], cm.ResourceVersion
	case apierrors.IsNotFound(err):
		op.Outcome, op.Err = OK, ""
	}
	w.hist.Add(op)
	return cm, err == nil
}

func (w *Workload) cas(ctx context.Context, c int, key, value string) {
	cm, ok := w.read(ctx, c, key)
	if !ok {
		return
	}
	upd := cm.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string]string{}
	}
	upd.Data[ValueKey] = value
	op := Op{Client: c, Kind: KindCAS, Key: key, Input: value, Expected: cm.Data[ValueKey], ExpectedVersion: cm.ResourceVersion}
	w.write(ctx, op, func(ctx context.Context) (*corev1.ConfigMap, error) {
		return w.client.CoreV1().ConfigMaps(w.cfg.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	}, apierrors.IsConflict, OutConflict)
}

func (w *Workload) create(ctx context.Context, c int, key, value string) Op {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: key, Namespace: w.cfg.Namespace},
		Data:       map[string]string{ValueKey: value},
	}
	return w.write(ctx, Op{Client: c, Kind: KindCreate, Key: key, Input: value}, func(ctx context.Context) (*corev1.ConfigMap, error) {
		return w.client.CoreV1().ConfigMaps(w.cfg.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}, apierrors.IsAlreadyExists, OutExists)
}

// write runs a CAS or create and records it; refused tells the error by
// which the server answered "not written" (a clean failure, recorded as OK
// with output refusedOut).
func (w *Workload) write(ctx context.Context, op Op, send func(context.Context) (*corev1.ConfigMap, error), refused func(error) bool, refusedOut string) Op {
	err := w.do(ctx, &op, func(ctx context.Context) error {
		res, err := send(ctx)
		if err == nil {
			op.Version = res.ResourceVersion
		}
		return err
	})
	switch {
	case err == nil:
		op.Output = OutWritten
	case refused(err):
		op.Outcome, op.Output, op.Err = OK, refusedOut, ""
	}
	w.hist.Add(op)
	return op
}

// Cleanup deletes the namespace.
func (w *Workload) Cleanup(ctx context.Context) error {
	return w.client.CoreV1().Namespaces().Delete(ctx, w.cfg.Namespace, metav1.DeleteOptions{})
}

// Lost is an acknowledged write that the final state contradicts.
type Lost struct {
	Op     Op
	Reason string
}

// Verification is what VerifyAcknowledged found.
type Verification struct {
	// Creates is the number of acknowledged creates of fresh names, and
	// Registers the number of keys read and CAS-updated.
	Creates, Registers int
	// Lost lists the acknowledged writes the final state contradicts.
	Lost []Lost
	// Reads are the final reads as client 0's ops (one List gives every
	// key's value at one instant), for adding to the history so that the
	// linearizability check covers the final state too.
	Reads []Op
}

// Examples describes up to n lost writes.
func (v Verification) Examples(n int) []string {
	var out []string
	for i, l := range v.Lost {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("client %d %s %s=%q acknowledged at %s: %s",
			l.Op.Client, l.Op.Kind, l.Op.Key, l.Op.Input, l.Op.Complete.Format(time.RFC3339Nano), l.Reason))
	}
	return out
}

// VerifyAcknowledged runs VerifyAcknowledged on the workload's history and
// adds the final reads to it.
func (w *Workload) VerifyAcknowledged(ctx context.Context) (Verification, error) {
	v, err := VerifyAcknowledged(ctx, w.client, w.cfg.Namespace, w.hist.Ops())
	for _, op := range v.Reads {
		w.hist.Add(op)
	}
	return v, err
}

// VerifyAcknowledged reads every ConfigMap of namespace once (retrying
// until the cluster answers or ctx ends) and checks it against ops:
//   - every acknowledged create of a fresh name exists with its value;
//   - every register's final value was written by some acknowledged or
//     unknown-outcome write W, and no acknowledged write began after W
//     completed (it would have replaced W's value, so it was lost). If the
//     value is nobody's write or the register is gone, all its
//     acknowledged writes count as lost.
//
// This is the minimum; the linearizability check of the history plus
// Reads decides the rest.
func VerifyAcknowledged(ctx context.Context, client kubernetes.Interface, namespace string, ops []Op) (Verification, error) {
	var v Verification
	var list *corev1.ConfigMapList
	var invoke, complete time.Time
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		invoke = time.Now()
		var err error
		list, err = client.CoreV1().ConfigMaps(namespace).List(rctx, metav1.ListOptions{})
		complete = time.Now()
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("final read of %s: %w", namespace, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	final := map[string]string{}
	for _, cm := range list.Items {
		final[cm.Name] = cm.Data[ValueKey]
	}

	byKey := map[string][]Op{}
	registers := map[string]bool{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], op)
		if op.Kind != KindCreate {
			registers[op.Key] = true
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	for _, key := range keys {
		kops := byKey[key]
		got, present := final[key]
		if !registers[key] {
			for _, op := range kops {
				if !op.Acknowledged() {
					continue
				}
				v.Creates++
				switch {
				case !present:
					v.Lost = append(v.Lost, Lost{op, "missing at the end"})
				case got != op.Input:
					v.Lost = append(v.Lost, Lost{op, fmt.Sprintf("holds %q at the end", got)})
				}
			}
			continue
		}
		v.Registers++
		v.Reads = append(v.Reads, Op{Client: 0, Kind: KindRead, Key: key, Output: got, Outcome: OK, Invoke: invoke, Complete: complete})
		v.Lost = append(v.Lost, lostWrites(kops, got, present)...)
	}
	return v, nil
}

// lostWrites applies VerifyAcknowledged's register rule to one key.
func lostWrites(ops []Op, final string, present bool) []Lost {
	var writer *Op
	for i := range ops {
		if present && ops[i].MayHaveWritten() && ops[i].Input == final {
			writer = &ops[i]
			break
		}
	}
	var lost []Lost
	for _, op := range ops {
		if !op.Acknowledged() {
			continue
		}
		switch {
		case !present:
			lost = append(lost, Lost{op, "register missing at the end"})
		case writer == nil:
			lost = append(lost, Lost{op, fmt.Sprintf("final value %q was written by no one", final)})
		case writer.Acknowledged() && op.Invoke.After(writer.Complete):
			lost = append(lost, Lost{op, fmt.Sprintf("final value %q is from a write that completed before this one began", final)})
		}
	}
	return lost
}
